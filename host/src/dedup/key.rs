//! Turning a message into the key its done-mark is stored under.

use sha2::{Digest, Sha256};

use crate::config::DedupKeyKind;

/// A done-mark's key in the store: namespaced by stage, so stages sharing
/// one Redis never skip each other's messages, and by key kind, so changing
/// `dedup.key` starts afresh. Binary-safe (header values need not be text).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey(Vec<u8>);

impl DedupKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// What the key maker needs to see of a message.
pub trait Identifiable {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    fn value(&self) -> Option<&[u8]>;
    /// The first header with this name.
    fn header(&self, name: &str) -> Option<&[u8]>;
}

/// Makes keys the way the stage's `[dedup]` section says.
#[derive(Debug, Clone)]
pub struct KeyMaker {
    kind: DedupKeyKind,
    header: String,
    prefix: Vec<u8>,
}

impl KeyMaker {
    /// `header` is used only with [`DedupKeyKind::Header`].
    pub fn new(stage: &str, kind: DedupKeyKind, header: Option<&str>) -> Self {
        let tag = match kind {
            DedupKeyKind::Header => "header",
            DedupKeyKind::MessageKey => "key",
            DedupKeyKind::ContentHash => "content",
            DedupKeyKind::Coordinates => "source",
        };
        KeyMaker {
            kind,
            header: header.unwrap_or_default().to_owned(),
            prefix: format!("sluice:{stage}:done:{tag}:").into_bytes(),
        }
    }

    /// The message's key, or `None` when it has nothing to identify it by
    /// (no such header, or no message key): such a message is handled
    /// without deduplication.
    pub fn key_for(&self, message: &impl Identifiable) -> Option<DedupKey> {
        let mut key = self.prefix.clone();
        match self.kind {
            DedupKeyKind::Header => key.extend_from_slice(message.header(&self.header)?),
            DedupKeyKind::MessageKey => key.extend_from_slice(message.key()?),
            DedupKeyKind::ContentHash => {
                let mut hash = Sha256::new();
                // Length-prefixed, and absent distinct from empty, so no two
                // different (key, value) pairs hash alike.
                for part in [message.key(), message.value()] {
                    match part {
                        Some(bytes) => {
                            hash.update([1]);
                            hash.update((bytes.len() as u64).to_be_bytes());
                            hash.update(bytes);
                        }
                        None => hash.update([0]),
                    }
                }
                key.extend_from_slice(hex::encode(hash.finalize()).as_bytes());
            }
            DedupKeyKind::Coordinates => key.extend_from_slice(
                format!("{}/{}/{}", message.topic(), message.partition(), message.offset()).as_bytes(),
            ),
        }
        Some(DedupKey(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        key: Option<&'static [u8]>,
        value: Option<&'static [u8]>,
        headers: Vec<(&'static str, &'static [u8])>,
        offset: i64,
    }

    impl Identifiable for Fake {
        fn topic(&self) -> &str {
            "orders"
        }
        fn partition(&self) -> i32 {
            3
        }
        fn offset(&self) -> i64 {
            self.offset
        }
        fn key(&self) -> Option<&[u8]> {
            self.key
        }
        fn value(&self) -> Option<&[u8]> {
            self.value
        }
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers
                .iter()
                .find(|(header, _)| *header == name)
                .map(|(_, value)| *value)
        }
    }

    fn message(key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> Fake {
        Fake {
            key,
            value,
            headers: vec![("message-id", b"m-1".as_slice())],
            offset: 42,
        }
    }

    fn text(key: Option<DedupKey>) -> Option<String> {
        key.map(|key| String::from_utf8(key.as_bytes().to_vec()).unwrap())
    }

    #[test]
    fn header_keys_are_namespaced_by_stage() {
        let maker = KeyMaker::new("enrich", DedupKeyKind::Header, Some("message-id"));
        assert_eq!(
            text(maker.key_for(&message(None, None))).as_deref(),
            Some("sluice:enrich:done:header:m-1")
        );
        let other = KeyMaker::new("audit", DedupKeyKind::Header, Some("message-id"));
        assert_ne!(maker.key_for(&message(None, None)), other.key_for(&message(None, None)));
    }

    #[test]
    fn a_message_without_the_identifying_part_has_no_key() {
        let by_header = KeyMaker::new("s", DedupKeyKind::Header, Some("trace-id"));
        assert_eq!(by_header.key_for(&message(Some(b"k"), None)), None);
        let by_key = KeyMaker::new("s", DedupKeyKind::MessageKey, None);
        assert_eq!(by_key.key_for(&message(None, Some(b"v"))), None);
    }

    #[test]
    fn coordinates_name_topic_partition_and_offset() {
        let maker = KeyMaker::new("s", DedupKeyKind::Coordinates, None);
        assert_eq!(
            text(maker.key_for(&message(None, None))).as_deref(),
            Some("sluice:s:done:source:orders/3/42")
        );
    }

    #[test]
    fn content_hash_tells_key_and_value_apart() {
        let maker = KeyMaker::new("s", DedupKeyKind::ContentHash, None);
        let same_a = maker.key_for(&message(Some(b"ab"), Some(b"c")));
        let same_b = maker.key_for(&message(Some(b"ab"), Some(b"c")));
        let shifted = maker.key_for(&message(Some(b"a"), Some(b"bc")));
        let tombstone = maker.key_for(&message(Some(b"ab"), None));
        let empty = maker.key_for(&message(Some(b"ab"), Some(b"")));
        assert_eq!(same_a, same_b);
        assert_ne!(same_a, shifted);
        assert_ne!(tombstone, empty);
    }
}
