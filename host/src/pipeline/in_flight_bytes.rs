//! The in-flight share of the memory budget, counted in bytes: a record
//! holds its size from the moment a worker takes it off its partition's
//! queue until it is finished (acknowledged, dead-lettered, filtered, or
//! found done by the dedup store). Everything in between counts: a batch
//! being handled, the backlog behind a retry, a duplicate waiting for
//! another worker's claim, outputs awaiting acknowledgement.
//!
//! A worker that holds nothing may always take one record, however large:
//! otherwise a record bigger than the whole share would stall its
//! partition for good. The share can thus be exceeded by at most one
//! record per partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// The stage-wide allowance, shared by every partition worker.
#[derive(Debug)]
pub(crate) struct InFlightBytes {
    limit: u64,
    used: AtomicU64,
    released: Notify,
}

impl InFlightBytes {
    pub(crate) fn new(limit: u64) -> Self {
        InFlightBytes {
            limit,
            used: AtomicU64::new(0),
            released: Notify::new(),
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held now, across all partitions.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Take `bytes` if they fit (or `always`), atomically.
    fn try_take(&self, bytes: u64, always: bool) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.saturating_add(bytes);
                (always || after <= self.limit).then_some(after)
            })
            .is_ok()
    }

    /// Resolves when some worker gives bytes back. Create (and enable) it
    /// before a hold fails, so a release in between is not missed.
    pub(crate) fn released(&self) -> tokio::sync::futures::Notified<'_> {
        self.released.notified()
    }

    fn give_back(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            Some(used.saturating_sub(bytes))
        });
        self.released.notify_waiters();
    }
}

/// One worker's part of the allowance: what each of its unfinished
/// offsets holds. Dropping it (the worker ended, or was aborted) gives
/// everything back.
#[derive(Debug)]
pub(crate) struct HeldBytes {
    pool: Arc<InFlightBytes>,
    by_offset: HashMap<i64, u64>,
    total: u64,
}

impl HeldBytes {
    pub(crate) fn new(pool: Arc<InFlightBytes>) -> Self {
        HeldBytes {
            pool,
            by_offset: HashMap::new(),
            total: 0,
        }
    }

    /// Hold `bytes` for `offset` if the stage's share has room, or if this
    /// worker holds nothing yet.
    pub(crate) fn try_hold(&mut self, offset: i64, bytes: u64) -> bool {
        if !self.pool.try_take(bytes, self.total == 0) {
            return false;
        }
        self.total += bytes;
        *self.by_offset.entry(offset).or_default() += bytes;
        true
    }

    /// These offsets are finished: give back what they held, in one go
    /// (one update of the shared count, one wake-up of waiting workers).
    pub(crate) fn release(&mut self, offsets: impl IntoIterator<Item = i64>) {
        let mut bytes = 0;
        for offset in offsets {
            bytes += self.by_offset.remove(&offset).unwrap_or(0);
        }
        self.total -= bytes;
        self.pool.give_back(bytes);
    }

    #[cfg(test)]
    fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn pool(&self) -> &Arc<InFlightBytes> {
        &self.pool
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.pool.give_back(self.total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_held_until_finished() {
        let pool = Arc::new(InFlightBytes::new(100));
        let mut worker = HeldBytes::new(pool.clone());
        assert!(worker.try_hold(1, 60));
        assert!(worker.try_hold(2, 40));
        assert!(!worker.try_hold(3, 1), "the share is full");
        worker.release([1]);
        assert_eq!(pool.used(), 40);
        assert!(worker.try_hold(3, 60));
        assert_eq!(pool.used(), 100);
    }

    #[test]
    fn a_worker_holding_nothing_may_take_one_record_of_any_size() {
        let pool = Arc::new(InFlightBytes::new(100));
        let mut busy = HeldBytes::new(pool.clone());
        let mut idle = HeldBytes::new(pool.clone());
        assert!(busy.try_hold(1, 100));
        assert!(idle.try_hold(7, 500), "one record, or the partition would stall");
        assert!(!idle.try_hold(8, 1));
        assert!(!busy.try_hold(2, 1));
        assert_eq!(pool.used(), 600);
    }

    #[test]
    fn an_ended_worker_gives_everything_back() {
        let pool = Arc::new(InFlightBytes::new(100));
        let mut worker = HeldBytes::new(pool.clone());
        assert!(worker.try_hold(1, 30));
        assert!(worker.try_hold(2, 30));
        drop(worker);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn releasing_an_offset_twice_or_one_never_held_changes_nothing() {
        let pool = Arc::new(InFlightBytes::new(100));
        let mut worker = HeldBytes::new(pool.clone());
        assert!(worker.try_hold(1, 30));
        worker.release([1]);
        worker.release([1]);
        worker.release([9]);
        assert_eq!(pool.used(), 0);
        assert_eq!(worker.total(), 0);
    }

    #[tokio::test]
    async fn a_release_wakes_a_waiting_worker() {
        let pool = Arc::new(InFlightBytes::new(10));
        let mut holder = HeldBytes::new(pool.clone());
        let mut waiter = HeldBytes::new(pool.clone());
        assert!(holder.try_hold(1, 10));
        assert!(waiter.try_hold(5, 1), "holding nothing");
        let pool_for_wait = pool.clone();
        let released = pool_for_wait.released();
        tokio::pin!(released);
        released.as_mut().enable();
        assert!(!waiter.try_hold(6, 5));
        holder.release([1]);
        tokio::time::timeout(std::time::Duration::from_secs(1), released)
            .await
            .expect("woken by the release");
        assert!(waiter.try_hold(6, 5));
    }
}
