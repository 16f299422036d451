//! Where a partition worker's records come from: its partition's own feed,
//! plus the rare record the consumer thread hands over because it arrived
//! on the shared queue. Every record taken is held against the stage's
//! in-flight share of the memory budget until the worker finishes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::consumer_errors::ConsumerErrors;
use super::in_flight_bytes::{HeldBytes, InFlightBytes};
use crate::kafka::{ConsumedRecord, PartitionFeed};
use crate::observe::LogThrottle;

/// How long a worker waits for an arrival signal (or for room in the
/// in-flight share) before looking again anyway. The signal is the fast
/// path; this only bounds the damage should one ever go missing.
const LOOK_AGAIN_AFTER: Duration = Duration::from_millis(100);

/// How often a partition's recurring fetch error may reach the log.
const FETCH_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The consumer thread's end of a worker's hand-over. It counts the bytes
/// handed over and not yet taken, so that the consumer thread can pause a
/// partition whose records pile up there (see `ConsumerLoop`).
#[derive(Debug)]
pub(crate) struct HandOver {
    sender: mpsc::UnboundedSender<ConsumedRecord>,
    waiting: Arc<AtomicU64>,
}

impl HandOver {
    /// `Err` gives the record back: the worker is gone.
    pub(crate) fn send(&self, record: ConsumedRecord) -> Result<(), ConsumedRecord> {
        let size = record.size_in_memory();
        self.waiting.fetch_add(size, Ordering::Relaxed);
        self.sender.send(record).map_err(|returned| {
            self.waiting.fetch_sub(size, Ordering::Relaxed);
            returned.0
        })
    }

    /// Bytes handed over that the worker has not taken yet.
    pub(crate) fn waiting_bytes(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }
}

pub(crate) struct RecordIntake {
    feed: PartitionFeed,
    handed_over: mpsc::UnboundedReceiver<ConsumedRecord>,
    handed_over_waiting: Arc<AtomicU64>,
    arrivals: Arc<Notify>,
    /// Fetch errors count towards recreating the consumer; records
    /// arriving show it works.
    consumer_errors: Arc<ConsumerErrors>,
    fetch_warnings: LogThrottle,
    held: HeldBytes,
    /// A record off the queue that did not fit the in-flight share yet:
    /// first in line when there is room.
    next_in_line: Option<ConsumedRecord>,
}

impl RecordIntake {
    /// Returns the intake and the consumer thread's end of its hand-over.
    pub(crate) fn new(
        mut feed: PartitionFeed,
        consumer_errors: Arc<ConsumerErrors>,
        in_flight: Arc<InFlightBytes>,
    ) -> (Self, HandOver) {
        let arrivals = Arc::new(Notify::new());
        let wake = arrivals.clone();
        feed.wake_on_arrival(move || wake.notify_one());
        let (sender, handed_over) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicU64::new(0));
        let intake = RecordIntake {
            feed,
            handed_over,
            handed_over_waiting: waiting.clone(),
            arrivals,
            consumer_errors,
            fetch_warnings: LogThrottle::new(FETCH_WARNING_INTERVAL),
            held: HeldBytes::new(in_flight),
            next_in_line: None,
        };
        (intake, HandOver { sender, waiting })
    }

    /// Put up to `max` records into `records`, as many as the in-flight
    /// share has room for, waiting until there is at least one.
    /// Cancel-safe: a record taken is in `records` or first in line, never
    /// lost in a dropped future.
    pub(crate) async fn take(&mut self, records: &mut Vec<ConsumedRecord>, max: usize) {
        loop {
            let pool = self.held.pool().clone();
            let released = pool.released();
            tokio::pin!(released);
            released.as_mut().enable();
            self.take_waiting(records, max);
            if !records.is_empty() {
                self.consumer_errors.healthy();
                return;
            }
            if self.next_in_line.is_some() {
                // Over budget: wait for another partition to finish some.
                tokio::select! {
                    _ = released => {}
                    _ = tokio::time::sleep(LOOK_AGAIN_AFTER) => {}
                }
                continue;
            }
            tokio::select! {
                _ = self.arrivals.notified() => {}
                Some(record) = self.handed_over.recv() => {
                    self.handed_over_waiting.fetch_sub(record.size_in_memory(), Ordering::Relaxed);
                    self.next_in_line = Some(record);
                }
                _ = tokio::time::sleep(LOOK_AGAIN_AFTER) => {}
            }
        }
    }

    /// The worker is done with these offsets: their bytes go back to the
    /// share.
    pub(crate) fn finished(&mut self, offsets: impl IntoIterator<Item = i64>) {
        self.held.release(offsets);
    }

    fn take_waiting(&mut self, records: &mut Vec<ConsumedRecord>, max: usize) {
        while records.len() < max {
            let Some(record) = self.next_in_line.take().or_else(|| self.next_arrival()) else {
                return;
            };
            if !self.held.try_hold(record.offset, record.size_in_memory()) {
                self.next_in_line = Some(record);
                return;
            }
            records.push(record);
        }
    }

    fn next_arrival(&mut self) -> Option<ConsumedRecord> {
        if let Ok(record) = self.handed_over.try_recv() {
            self.handed_over_waiting
                .fetch_sub(record.size_in_memory(), Ordering::Relaxed);
            return Some(record);
        }
        loop {
            match self.feed.next_record()? {
                Ok(record) => return Some(record),
                Err(error) => {
                    if let Some(held_back) = self.fetch_warnings.allow() {
                        tracing::warn!(partition = %self.feed.partition(), %error, held_back, "fetch error; librdkafka keeps retrying");
                    }
                    self.consumer_errors.record(&error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConsumerRecoverySection;
    use crate::kafka::TopicPartition;

    fn intake(pool: &Arc<InFlightBytes>) -> (RecordIntake, HandOver) {
        RecordIntake::new(
            PartitionFeed::shared(TopicPartition::new("in", 0)),
            Arc::new(ConsumerErrors::new(&ConsumerRecoverySection::default())),
            pool.clone(),
        )
    }

    fn record(offset: i64, bytes: usize) -> ConsumedRecord {
        ConsumedRecord {
            partition: TopicPartition::new("in", 0),
            offset,
            timestamp_ms: None,
            key: None,
            value: Some(vec![b'x'; bytes]),
            headers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn handed_over_records_count_until_taken_and_hold_until_finished() {
        let pool = Arc::new(InFlightBytes::new(1 << 20));
        let (mut intake, hand_over) = intake(&pool);
        let size = record(5, 1000).size_in_memory();
        hand_over.send(record(5, 1000)).expect("the intake is alive");
        assert_eq!(hand_over.waiting_bytes(), size);

        let mut records = Vec::new();
        intake.take(&mut records, 10).await;
        assert_eq!(records.len(), 1);
        assert_eq!(hand_over.waiting_bytes(), 0);
        assert_eq!(pool.used(), size);
        intake.finished([5]);
        assert_eq!(pool.used(), 0);
    }

    #[tokio::test]
    async fn a_record_over_the_share_waits_until_another_partition_finishes() {
        let one = record(0, 1000).size_in_memory();
        let pool = Arc::new(InFlightBytes::new(one * 2));
        let (mut busy, busy_hand_over) = intake(&pool);
        let (mut waiting, waiting_hand_over) = intake(&pool);
        busy_hand_over.send(record(1, 1000)).unwrap();
        busy_hand_over.send(record(2, 1000)).unwrap();
        let mut taken = Vec::new();
        busy.take(&mut taken, 10).await;
        assert_eq!(taken.len(), 2, "the share holds two");

        waiting_hand_over.send(record(7, 1000)).unwrap();
        waiting_hand_over.send(record(8, 1000)).unwrap();
        let mut first = Vec::new();
        waiting.take(&mut first, 10).await;
        assert_eq!(first.len(), 1, "a partition holding nothing may take one");
        let mut second = Vec::new();
        let over = tokio::time::timeout(Duration::from_millis(300), waiting.take(&mut second, 10)).await;
        assert!(over.is_err() && second.is_empty(), "over the share: it waits");

        busy.finished([1]);
        busy.finished([2]);
        tokio::time::timeout(Duration::from_secs(1), waiting.take(&mut second, 10))
            .await
            .expect("room again");
        assert_eq!(second.iter().map(|record| record.offset).collect::<Vec<_>>(), [8]);
    }
}
