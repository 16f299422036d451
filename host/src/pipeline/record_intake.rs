//! Where a partition worker's records come from: its partition's own feed,
//! plus the rare record the consumer thread hands over because it arrived
//! on the shared queue.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use super::consumer_errors::ConsumerErrors;
use crate::kafka::{ConsumedRecord, PartitionFeed};
use crate::observe::LogThrottle;

/// How long a worker waits for an arrival signal before looking at its
/// feed anyway. The signal is the fast path; this only bounds the damage
/// should one ever go missing.
const LOOK_AGAIN_AFTER: Duration = Duration::from_millis(100);

/// How often a partition's recurring fetch error may reach the log.
const FETCH_WARNING_INTERVAL: Duration = Duration::from_secs(10);

pub(crate) struct RecordIntake {
    feed: PartitionFeed,
    handed_over: mpsc::UnboundedReceiver<ConsumedRecord>,
    arrivals: Arc<Notify>,
    /// Fetch errors count towards recreating the consumer; records
    /// arriving show it works.
    consumer_errors: Arc<ConsumerErrors>,
    fetch_warnings: LogThrottle,
}

impl RecordIntake {
    /// Returns the intake and the sender through which the consumer thread
    /// hands over records that reached it instead of the feed.
    pub(crate) fn new(
        mut feed: PartitionFeed,
        consumer_errors: Arc<ConsumerErrors>,
    ) -> (Self, mpsc::UnboundedSender<ConsumedRecord>) {
        let arrivals = Arc::new(Notify::new());
        let wake = arrivals.clone();
        feed.wake_on_arrival(move || wake.notify_one());
        let (sender, handed_over) = mpsc::unbounded_channel();
        let intake = RecordIntake {
            feed,
            handed_over,
            arrivals,
            consumer_errors,
            fetch_warnings: LogThrottle::new(FETCH_WARNING_INTERVAL),
        };
        (intake, sender)
    }

    /// Put up to `max` records into `records`, waiting until there is at
    /// least one. Cancel-safe: a record taken is in `records`, never lost in
    /// a dropped future.
    pub(crate) async fn take(&mut self, records: &mut Vec<ConsumedRecord>, max: usize) {
        loop {
            self.take_waiting(records, max);
            if !records.is_empty() {
                self.consumer_errors.healthy();
                return;
            }
            tokio::select! {
                _ = self.arrivals.notified() => {}
                Some(record) = self.handed_over.recv() => {
                    records.push(record);
                    return;
                }
                _ = tokio::time::sleep(LOOK_AGAIN_AFTER) => {}
            }
        }
    }

    fn take_waiting(&mut self, records: &mut Vec<ConsumedRecord>, max: usize) {
        while records.len() < max {
            if let Ok(record) = self.handed_over.try_recv() {
                records.push(record);
                continue;
            }
            match self.feed.next_record() {
                Some(Ok(record)) => records.push(record),
                Some(Err(error)) => {
                    if let Some(held_back) = self.fetch_warnings.allow() {
                        tracing::warn!(partition = %self.feed.partition(), %error, held_back, "fetch error; librdkafka keeps retrying");
                    }
                    self.consumer_errors.record(&error);
                }
                None => return,
            }
        }
    }
}
