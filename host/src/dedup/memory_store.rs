//! Done-marks in this process's memory: for the embedded quickstart and
//! stages without Redis. They do not survive a restart and are not shared
//! with other hosts of the group.

use std::time::Duration;

use futures::future::BoxFuture;
use moka::sync::Cache;

use super::key::DedupKey;
use super::store::{DedupStore, StoreError};

/// Bounded (the least recently used keys go first) and expiring.
pub struct MemoryStore {
    marks: Cache<DedupKey, ()>,
    capacity: u64,
    ttl: Duration,
}

impl MemoryStore {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        MemoryStore {
            marks: Cache::builder().max_capacity(capacity).time_to_live(ttl).build(),
            capacity,
            ttl,
        }
    }
}

impl DedupStore for MemoryStore {
    fn done<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        let answers = keys.iter().map(|key| self.marks.contains_key(key)).collect();
        Box::pin(std::future::ready(Ok(answers)))
    }

    fn mark_done<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<(), StoreError>> {
        for key in keys {
            self.marks.insert(key.clone(), ());
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn forget<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<u64, StoreError>> {
        let forgotten = keys.iter().filter(|key| self.marks.remove(*key).is_some()).count();
        Box::pin(std::future::ready(Ok(forgotten as u64)))
    }

    fn describe(&self) -> String {
        format!(
            "memory (this process only; up to {} keys for {})",
            self.capacity,
            humantime::format_duration(self.ttl)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DedupKeyKind;
    use crate::dedup::{Identifiable, KeyMaker};

    struct Keyed(&'static [u8]);

    impl Identifiable for Keyed {
        fn topic(&self) -> &str {
            "t"
        }
        fn partition(&self) -> i32 {
            0
        }
        fn offset(&self) -> i64 {
            0
        }
        fn key(&self) -> Option<&[u8]> {
            Some(self.0)
        }
        fn value(&self) -> Option<&[u8]> {
            None
        }
        fn header(&self, _: &str) -> Option<&[u8]> {
            None
        }
    }

    fn keys(names: &[&'static [u8]]) -> Vec<DedupKey> {
        let maker = KeyMaker::new("s", DedupKeyKind::MessageKey, None);
        names.iter().map(|name| maker.key_for(&Keyed(name)).unwrap()).collect()
    }

    #[tokio::test]
    async fn marked_keys_are_done_and_others_are_not() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        store.mark_done(&keys(&[b"a", b"c"])).await.unwrap();
        let done = store.done(&keys(&[b"a", b"b", b"c"])).await.unwrap();
        assert_eq!(done, [true, false, true]);
    }

    #[tokio::test]
    async fn forgotten_keys_are_no_longer_done() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        store.mark_done(&keys(&[b"a", b"b"])).await.unwrap();
        assert_eq!(store.forget(&keys(&[b"a", b"c"])).await.unwrap(), 1);
        let done = store.done(&keys(&[b"a", b"b", b"c"])).await.unwrap();
        assert_eq!(done, [false, true, false]);
        assert_eq!(store.forget(&[]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn marks_expire_after_their_ttl() {
        let store = MemoryStore::new(100, Duration::from_millis(50));
        store.mark_done(&keys(&[b"a"])).await.unwrap();
        assert_eq!(store.done(&keys(&[b"a"])).await.unwrap(), [true]);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(store.done(&keys(&[b"a"])).await.unwrap(), [false]);
    }

    #[tokio::test]
    async fn the_store_stays_within_its_capacity() {
        let store = MemoryStore::new(10, Duration::from_secs(60));
        let many: Vec<DedupKey> = (0..1000)
            .map(|n| {
                KeyMaker::new("s", DedupKeyKind::Coordinates, None)
                    .key_for(&Numbered(n))
                    .unwrap()
            })
            .collect();
        store.mark_done(&many).await.unwrap();
        store.marks.run_pending_tasks();
        assert!(store.marks.entry_count() <= 10, "{} entries", store.marks.entry_count());
    }

    struct Numbered(i64);

    impl Identifiable for Numbered {
        fn topic(&self) -> &str {
            "t"
        }
        fn partition(&self) -> i32 {
            0
        }
        fn offset(&self) -> i64 {
            self.0
        }
        fn key(&self) -> Option<&[u8]> {
            None
        }
        fn value(&self) -> Option<&[u8]> {
            None
        }
        fn header(&self, _: &str) -> Option<&[u8]> {
            None
        }
    }
}
