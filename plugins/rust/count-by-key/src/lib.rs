//! Keeps a running count per message key in the stage's key-value store
//! and outputs it: the shape of a deduplicating counter, a rate tracker or
//! a cache writer.
//!
//! The stage must grant a bucket (`[plugin.capabilities.keyvalue]` in the
//! stage file); without that grant sluice refuses to load this plugin,
//! since it imports `wasi:keyvalue`.
//!
//! Plugin config:
//! - `bucket`: the bucket to count in (default `default`).
//!
//! Each message with a key `k` outputs one record: key `k`, value the
//! count of messages with that key so far, as decimal text. The entry
//! under `count:k` (`count-hex:` and the key in hex when it is not UTF-8)
//! holds `<count> <partition> <offset>`: the count and the message that
//! last raised it. That makes the count exact under redelivery, which
//! at-least-once delivery does after a crash: a message whose partition
//! matches and whose offset is not past the stored one was counted already,
//! and outputs the stored count instead of counting again. (The same key is
//! always on the same partition, handled in order, so the read and the
//! write of one key never race.)
//!
//! - A message without a key is dead-lettered: there is nothing to count
//!   it under.
//! - A store failure (its Redis down, a timeout) is retried: the stage's
//!   backoff applies, and the count is still exact once the store is back.
//! - A bucket the stage does not grant is dead-lettered, naming it.

use sluice_plugin::keyvalue::{self, Bucket, Error};
use sluice_plugin::{Handler, Message, Output, Verdict, config};

struct CountByKey;

impl Handler for CountByKey {
    fn handle(message: &Message) -> Verdict {
        let Some(key) = &message.key else {
            return Verdict::dead_letter("count-by-key: the message has no key to count it under");
        };
        let bucket_name = config::get("bucket").unwrap_or_else(|| "default".to_owned());
        match count(&bucket_name, key, message) {
            Ok(count) => Verdict::success([Output::replacing_value(message, count.to_string())]),
            Err(Error::AccessDenied | Error::NoSuchStore) => {
                Verdict::dead_letter(format!("count-by-key: the stage does not grant bucket `{bucket_name}`"))
            }
            Err(Error::Other(reason)) => Verdict::retry(format!("count-by-key: the store failed: {reason}")),
        }
    }
}

/// The key's count with this message counted, once.
fn count(bucket_name: &str, key: &[u8], message: &Message) -> Result<u64, Error> {
    let bucket: Bucket = keyvalue::open(bucket_name)?;
    let entry_key = match std::str::from_utf8(key) {
        Ok(text) => format!("count:{text}"),
        Err(_) => format!("count-hex:{}", hex(key)),
    };
    let stored = bucket.get(&entry_key)?.as_deref().and_then(Entry::parse);
    if let Some(entry) = stored
        && entry.partition == message.partition
        && entry.offset >= message.offset
    {
        return Ok(entry.count);
    }
    let count = stored.map_or(0, |entry| entry.count) + 1;
    let entry = Entry {
        count,
        partition: message.partition,
        offset: message.offset,
    };
    bucket.set(&entry_key, entry.to_string().as_bytes())?;
    Ok(count)
}

/// What is stored per key: `<count> <partition> <offset>`.
#[derive(Clone, Copy)]
struct Entry {
    count: u64,
    partition: i32,
    offset: i64,
}

impl Entry {
    fn parse(bytes: &[u8]) -> Option<Entry> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut fields = text.split(' ');
        let entry = Entry {
            count: fields.next()?.parse().ok()?,
            partition: fields.next()?.parse().ok()?,
            offset: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(entry)
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {} {}", self.count, self.partition, self.offset)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

sluice_plugin::export_handler!(CountByKey);
