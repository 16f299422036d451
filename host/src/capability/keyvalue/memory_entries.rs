//! Buckets in this process's memory, for a stage without a Redis: kept
//! across plugin reloads, gone with the process, bounded by a byte budget.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::backend::{BackendError, KeyPage, PAGE_SIZE};

/// Entries by bucket, then key; sorted keys give `list-keys` a stable
/// cursor.
#[derive(Debug)]
pub struct MemoryEntries {
    state: Mutex<State>,
    max_bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    buckets: HashMap<String, BTreeMap<String, Entry>>,
    /// Keys and values held, in bytes.
    bytes: u64,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

fn size(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

impl MemoryEntries {
    /// One instance serves one stage, so keys need no namespace.
    pub fn new(max_bytes: u64) -> Self {
        MemoryEntries {
            state: Mutex::default(),
            max_bytes,
        }
    }

    /// No operation panics while holding the lock, but a poisoned lock
    /// would only mean a half-done insert of independent entries.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
        let now = Instant::now();
        let state = self.state();
        Ok(state
            .buckets
            .get(bucket)
            .and_then(|entries| entries.get(key))
            .filter(|entry| entry.is_live(now))
            .map(|entry| entry.value.clone()))
    }

    pub fn get_many(&self, bucket: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        keys.iter().map(|key| self.get(bucket, key)).collect()
    }

    pub fn exists(&self, bucket: &str, key: &str) -> Result<bool, BackendError> {
        Ok(self.get(bucket, key)?.is_some())
    }

    /// All or nothing: when the pairs do not fit the budget, even after
    /// expired entries are swept out, none is written.
    pub fn set_many(
        &self,
        bucket: &str,
        pairs: Vec<(String, Vec<u8>)>,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut state = self.state();
        if state.bytes_after(bucket, &pairs) > self.max_bytes {
            state.sweep_expired(now);
            if state.bytes_after(bucket, &pairs) > self.max_bytes {
                return Err(BackendError::Full(self.max_bytes));
            }
        }
        let expires_at = ttl.map(|ttl| now + ttl);
        for (key, value) in pairs {
            state.insert(bucket, key, value, expires_at);
        }
        Ok(())
    }

    pub fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), BackendError> {
        let mut state = self.state();
        for key in keys {
            state.remove(bucket, key);
        }
        Ok(())
    }

    /// Read, add and write under one lock, so concurrent instances never
    /// lose an increment.
    pub fn increment(&self, bucket: &str, key: &str, delta: u64, ttl: Option<Duration>) -> Result<u64, BackendError> {
        let now = Instant::now();
        let mut state = self.state();
        let entry = state.buckets.get(bucket).and_then(|entries| entries.get(key));
        let (current, old_size) = match entry {
            Some(entry) if entry.is_live(now) => (
                parse_counter(&entry.value).ok_or_else(|| BackendError::NotACounter(key.to_owned()))?,
                size(key, &entry.value),
            ),
            Some(entry) => (0, size(key, &entry.value)),
            None => (0, 0),
        };
        let next = current
            .checked_add(delta)
            .filter(|next| *next <= i64::MAX as u64)
            .ok_or_else(|| BackendError::Overflow(key.to_owned()))?;
        let value = next.to_string().into_bytes();
        if state.bytes - old_size + size(key, &value) > self.max_bytes {
            return Err(BackendError::Full(self.max_bytes));
        }
        state.insert(bucket, key.to_owned(), value, ttl.map(|ttl| now + ttl));
        Ok(next)
    }

    pub fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<KeyPage, BackendError> {
        let now = Instant::now();
        let state = self.state();
        let start = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let live: Vec<String> = state
            .buckets
            .get(bucket)
            .into_iter()
            .flat_map(|entries| entries.iter())
            .filter(|(_, entry)| entry.is_live(now))
            .skip(start)
            .take(PAGE_SIZE + 1)
            .map(|(key, _)| key.clone())
            .collect();
        let more = live.len() > PAGE_SIZE;
        let keys: Vec<String> = live.into_iter().take(PAGE_SIZE).collect();
        let cursor = more.then(|| (start + keys.len()) as u64);
        Ok(KeyPage { keys, cursor })
    }
}

impl State {
    /// The bytes held once `pairs` replace what their keys hold now.
    fn bytes_after(&self, bucket: &str, pairs: &[(String, Vec<u8>)]) -> u64 {
        let entries = self.buckets.get(bucket);
        let replaced: u64 = pairs
            .iter()
            .filter_map(|(key, _)| entries?.get(key).map(|entry| size(key, &entry.value)))
            .sum();
        let added: u64 = pairs.iter().map(|(key, value)| size(key, value)).sum();
        self.bytes - replaced + added
    }

    fn insert(&mut self, bucket: &str, key: String, value: Vec<u8>, expires_at: Option<Instant>) {
        let added = size(&key, &value);
        let entries = self.buckets.entry(bucket.to_owned()).or_default();
        if let Some(old) = entries.insert(key.clone(), Entry { value, expires_at }) {
            self.bytes -= size(&key, &old.value);
        }
        self.bytes += added;
    }

    fn remove(&mut self, bucket: &str, key: &str) {
        if let Some(old) = self.buckets.get_mut(bucket).and_then(|entries| entries.remove(key)) {
            self.bytes -= size(key, &old.value);
        }
    }

    fn sweep_expired(&mut self, now: Instant) {
        let mut freed = 0;
        for entries in self.buckets.values_mut() {
            entries.retain(|key, entry| {
                let live = entry.is_live(now);
                if !live {
                    freed += size(key, &entry.value);
                }
                live
            });
        }
        self.bytes -= freed;
    }
}

/// A counter as `increment` writes it: decimal digits.
fn parse_counter(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()?
        .parse::<u64>()
        .ok()
        .filter(|count| *count <= i64::MAX as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(max_bytes: u64) -> MemoryEntries {
        MemoryEntries::new(max_bytes)
    }

    #[test]
    fn buckets_keep_apart_and_a_write_replaces() {
        let store = entries(1 << 20);
        store.set_many("a", vec![("k".into(), b"1".to_vec())], None).unwrap();
        store.set_many("a", vec![("k".into(), b"22".to_vec())], None).unwrap();
        assert_eq!(store.get("a", "k").unwrap(), Some(b"22".to_vec()));
        assert_eq!(store.get("b", "k").unwrap(), None);
        assert_eq!(store.state().bytes, 3);
        store.delete_many("a", &["k".into()]).unwrap();
        assert!(!store.exists("a", "k").unwrap());
        assert_eq!(store.state().bytes, 0);
    }

    #[test]
    fn counters_start_at_zero_are_text_and_refuse_other_values() {
        let store = entries(1 << 20);
        assert_eq!(store.increment("a", "n", 5, None).unwrap(), 5);
        assert_eq!(store.increment("a", "n", 2, None).unwrap(), 7);
        assert_eq!(store.get("a", "n").unwrap(), Some(b"7".to_vec()));
        store
            .set_many("a", vec![("s".into(), b"seven".to_vec())], None)
            .unwrap();
        assert!(matches!(
            store.increment("a", "s", 1, None),
            Err(BackendError::NotACounter(_))
        ));
        assert!(matches!(
            store.increment("a", "n", u64::MAX, None),
            Err(BackendError::Overflow(_))
        ));
    }

    #[test]
    fn a_write_past_the_budget_fails_whole_and_expired_entries_make_room() {
        let store = entries(10);
        let pairs = vec![("a".into(), b"1234".to_vec()), ("b".into(), b"1234".to_vec())];
        store.set_many("x", pairs, Some(Duration::from_millis(1))).unwrap();
        assert!(matches!(
            store.set_many("x", vec![("c".into(), b"1234".to_vec())], None),
            Err(BackendError::Full(10))
        ));
        assert_eq!(store.get("x", "c").unwrap(), None, "nothing written");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.get("x", "a").unwrap(), None, "expired");
        store.set_many("x", vec![("c".into(), b"1234".to_vec())], None).unwrap();
        assert_eq!(store.state().bytes, 5);
    }

    #[test]
    fn list_keys_pages_through_every_live_key_once() {
        let store = entries(1 << 20);
        let pairs = (0..2500).map(|n| (format!("k{n:05}"), Vec::new())).collect();
        store.set_many("x", pairs, None).unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.list_keys("x", cursor).unwrap();
            assert!(page.keys.len() <= PAGE_SIZE);
            seen.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 2500);
        assert_eq!(seen[0], "k00000");
        assert_eq!(seen[2499], "k02499");
    }
}
