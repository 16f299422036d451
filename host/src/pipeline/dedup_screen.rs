//! A partition worker's use of the dedup store: screen messages before the
//! plugin, mark them done once their effects are durable, and wait out a
//! store that cannot be reached.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::counters::StageCounters;
use crate::config::{DedupSection, OnStoreError};
use crate::dedup::{DedupKey, DedupStore, Identifiable, KeyMaker};
use crate::plugin::Message;

/// Waits between attempts while the store is unreachable: from the first
/// to the last, doubling.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(100);
const STORE_RETRY_LAST: Duration = Duration::from_secs(5);

/// What every worker of a stage shares for deduplication.
pub(crate) struct Dedup {
    store: Arc<dyn DedupStore>,
    keys: KeyMaker,
    on_store_error: OnStoreError,
}

impl Dedup {
    pub(crate) fn new(stage: &str, config: &DedupSection, store: Arc<dyn DedupStore>) -> Self {
        Dedup {
            store,
            keys: KeyMaker::new(stage, config.key, config.header.as_deref()),
            on_store_error: config.on_store_error,
        }
    }
}

/// The outcome of screening a batch.
pub(crate) struct Screened {
    /// For the plugin, in order.
    pub(crate) to_handle: Vec<Message>,
    /// Already done: finish these now, with no outputs. Offsets with
    /// their records' timestamps.
    pub(crate) already_done: Vec<(i64, Option<i64>)>,
}

/// One worker's dedup state. A key is "in progress" from the moment its
/// first message passes the screen until its done-mark is written; another
/// message with that key arriving meanwhile waits for the mark instead of
/// reaching the plugin, and is finished with it.
pub(crate) struct DedupScreen {
    dedup: Arc<Dedup>,
    /// Waiting duplicates per key: offsets with their records' timestamps.
    in_progress: HashMap<DedupKey, Vec<(i64, Option<i64>)>>,
    counters: Arc<StageCounters>,
    partition: String,
}

impl DedupScreen {
    pub(crate) fn new(dedup: Arc<Dedup>, counters: Arc<StageCounters>, partition: String) -> Self {
        DedupScreen {
            dedup,
            in_progress: HashMap::new(),
            counters,
            partition,
        }
    }

    /// Split `messages` into those to handle and those already done, with
    /// one store round trip. `None` if told to stop while the store was
    /// unreachable.
    pub(crate) async fn screen(&mut self, messages: Vec<Message>, stop: &CancellationToken) -> Option<Screened> {
        let keys: Vec<Option<DedupKey>> = messages
            .iter()
            .map(|message| self.dedup.keys.key_for(message))
            .collect();
        let to_ask: Vec<DedupKey> = keys
            .iter()
            .flatten()
            .filter(|key| !self.in_progress.contains_key(*key))
            .cloned()
            .collect();
        let answers = self.ask(&to_ask, stop).await?;
        let done: HashMap<&DedupKey, bool> = to_ask.iter().zip(answers).collect();

        let mut screened = Screened {
            to_handle: Vec::with_capacity(messages.len()),
            already_done: Vec::new(),
        };
        for (message, key) in messages.into_iter().zip(keys) {
            let Some(key) = key else {
                screened.to_handle.push(message);
                continue;
            };
            if let Some(waiting) = self.in_progress.get_mut(&key) {
                waiting.push((message.offset, message.timestamp_ms));
            } else if done.get(&key).copied().unwrap_or(false) {
                self.counters.deduplicated(1);
                screened.already_done.push((message.offset, message.timestamp_ms));
            } else {
                self.in_progress.insert(key, Vec::new());
                screened.to_handle.push(message);
            }
        }
        Some(screened)
    }

    /// Write the done-marks of these finished messages, with one store
    /// round trip, and return the messages that waited on them (duplicates,
    /// now finished too) as offsets with timestamps. `None` if told to stop
    /// before the marks were written: the messages then stay unfinished.
    pub(crate) async fn mark_done(
        &mut self,
        finished: &[&Message],
        stop: &CancellationToken,
    ) -> Option<Vec<(i64, Option<i64>)>> {
        let keys: Vec<DedupKey> = finished
            .iter()
            .filter_map(|message| self.dedup.keys.key_for(*message))
            .collect();
        self.write_marks(&keys, stop).await?;
        let mut duplicates = Vec::new();
        for key in &keys {
            if let Some(waiting) = self.in_progress.remove(key) {
                self.counters.deduplicated(waiting.len() as u64);
                duplicates.extend(waiting);
            }
        }
        Some(duplicates)
    }

    async fn ask(&self, keys: &[DedupKey], stop: &CancellationToken) -> Option<Vec<bool>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let store = &self.dedup.store;
        let answer = self.until_reachable("check", stop, || store.done(keys)).await?;
        Some(answer.unwrap_or_else(|| vec![false; keys.len()]))
    }

    async fn write_marks(&self, keys: &[DedupKey], stop: &CancellationToken) -> Option<()> {
        if keys.is_empty() {
            return Some(());
        }
        let store = &self.dedup.store;
        self.until_reachable("mark", stop, || store.mark_done(keys)).await?;
        Some(())
    }

    /// Run `operation` until it succeeds, waiting with backoff between
    /// failures, or, with `on_store_error = "process"`, give up at once
    /// (`Some(None)`). `None` if told to stop first.
    async fn until_reachable<T, F>(
        &self,
        what: &str,
        stop: &CancellationToken,
        mut operation: impl FnMut() -> F,
    ) -> Option<Option<T>>
    where
        F: Future<Output = Result<T, crate::dedup::StoreError>>,
    {
        let mut wait = STORE_RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            match operation().await {
                Ok(answer) => {
                    if failures > 0 {
                        tracing::info!(partition = %self.partition, store = %self.dedup.store.describe(), failures, "dedup store reachable again; resuming");
                    }
                    return Some(Some(answer));
                }
                Err(error) => {
                    self.counters.store_error();
                    if self.dedup.on_store_error == OnStoreError::Process {
                        tracing::warn!(partition = %self.partition, %error, "dedup store failed; handling without deduplication (on_store_error = \"process\")");
                        return Some(None);
                    }
                    if failures == 0 {
                        tracing::warn!(partition = %self.partition, store = %self.dedup.store.describe(), %error, "dedup store failed; the partition waits and retries until it answers (to {what} done-marks)");
                    } else {
                        tracing::debug!(partition = %self.partition, %error, failures, "dedup store still failing");
                    }
                    failures += 1;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return None,
            }
            wait = (wait * 2).min(STORE_RETRY_LAST);
        }
    }
}

impl Identifiable for Message {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn partition(&self) -> i32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|header| header.name == name)
            .map(|header| header.value.as_slice())
    }
}
