//! Runs the `wasi:keyvalue` operation a message's value spells out and
//! outputs the store's answer as text, so the host's tests can drive every
//! operation through a real guest and compare answers exactly.
//!
//! The value is `<bucket> <operation> <arguments...>`, separated by
//! spaces:
//! - `get K`, `exists K`, `delete K`, `set K V`, `increment K DELTA`;
//! - `list` (every key over all pages, sorted);
//! - `get-many K...`, `set-many K=V...`, `delete-many K...`;
//! - `fill K BYTES` sets K to that many `x`s.
//!
//! The output is `ok <answer>` or `error <the WIT error>`; `none` stands
//! for an absent value. A malformed command is dead-lettered.

use sluice_plugin::keyvalue::{self, Bucket, Error};
use sluice_plugin::{Handler, Message, Output, Verdict};

struct KeyValueProbe;

impl Handler for KeyValueProbe {
    fn handle(message: &Message) -> Verdict {
        let Some(Ok(command)) = message.value_str() else {
            return Verdict::dead_letter("keyvalue-probe: the value must be a UTF-8 command");
        };
        let words: Vec<&str> = command.split(' ').collect();
        let [bucket, operation, arguments @ ..] = words.as_slice() else {
            return Verdict::dead_letter("keyvalue-probe: `<bucket> <operation> <arguments...>`");
        };
        let answer = match keyvalue::open(bucket) {
            Ok(bucket) => run(&bucket, operation, arguments),
            Err(error) => Err(error),
        };
        let text = match answer {
            Ok(Some(answer)) => format!("ok {answer}"),
            Ok(None) => return Verdict::dead_letter(format!("keyvalue-probe: cannot run `{command}`")),
            Err(Error::NoSuchStore) => "error no-such-store".to_owned(),
            Err(Error::AccessDenied) => "error access-denied".to_owned(),
            Err(Error::Other(reason)) => format!("error other: {reason}"),
        };
        Verdict::success([Output::replacing_value(message, text)])
    }
}

fn shown(value: Option<Vec<u8>>) -> String {
    value.map_or_else(
        || "none".to_owned(),
        |bytes| String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// The answer as text; `None` for a command it does not know.
fn run(bucket: &Bucket, operation: &str, arguments: &[&str]) -> Result<Option<String>, Error> {
    let answer = match (operation, arguments) {
        ("get", [key]) => shown(bucket.get(key)?),
        ("exists", [key]) => bucket.exists(key)?.to_string(),
        ("delete", [key]) => bucket.delete(key).map(|()| "deleted".to_owned())?,
        ("set", [key, value]) => bucket.set(key, value.as_bytes()).map(|()| "set".to_owned())?,
        ("fill", [key, size]) => {
            let Ok(size) = size.parse::<usize>() else {
                return Ok(None);
            };
            bucket.set(key, &vec![b'x'; size]).map(|()| "set".to_owned())?
        }
        ("increment", [key, delta]) => {
            let Ok(delta) = delta.parse::<u64>() else {
                return Ok(None);
            };
            keyvalue::increment(bucket, key, delta)?.to_string()
        }
        ("list", []) => {
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = bucket.list_keys(cursor)?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            keys.sort();
            keys.join(",")
        }
        ("get-many", keys) => {
            let keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
            keyvalue::get_many(bucket, &keys)?
                .into_iter()
                .map(|pair| {
                    pair.map_or_else(
                        || "none".to_owned(),
                        |(key, value)| format!("{key}={}", shown(Some(value))),
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        }
        ("set-many", pairs) => {
            let mut key_values = Vec::new();
            for pair in pairs {
                let Some((key, value)) = pair.split_once('=') else {
                    return Ok(None);
                };
                key_values.push((key.to_owned(), value.as_bytes().to_vec()));
            }
            keyvalue::set_many(bucket, &key_values).map(|()| "set".to_owned())?
        }
        ("delete-many", keys) => {
            let keys: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
            keyvalue::delete_many(bucket, &keys).map(|()| "deleted".to_owned())?
        }
        _ => return Ok(None),
    };
    Ok(Some(answer))
}

sluice_plugin::export_handler!(KeyValueProbe);
