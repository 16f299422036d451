//! Per-partition figures for `/stats` and the lag gauge.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// What `/stats` shows of one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// Failed plugin calls and deliveries of this partition's messages.
    pub errors: u64,
    /// The group's committed offset, as of the client's last statistics.
    pub committed: Option<i64>,
    pub high_watermark: Option<i64>,
    /// High watermark minus committed offset (minus the log start when
    /// nothing is committed).
    pub lag: Option<i64>,
}

/// Per-partition figures keyed `topic/partition`, updated rarely (errors,
/// statistics every few seconds), so one lock is plenty.
#[derive(Debug, Default)]
pub struct PartitionBoard {
    partitions: Mutex<BTreeMap<(String, i32), PartitionReport>>,
}

impl PartitionBoard {
    pub fn error(&self, topic: &str, partition: i32) {
        self.update(topic, partition, |report| report.errors += 1);
    }

    /// Record offsets from the client's statistics and publish the lag.
    pub fn offsets(&self, topic: &str, partition: i32, committed: Option<i64>, high_watermark: i64, log_start: i64) {
        let lag = (high_watermark - committed.unwrap_or(log_start)).max(0);
        self.update(topic, partition, |report| {
            report.committed = committed;
            report.high_watermark = Some(high_watermark);
            report.lag = Some(lag);
        });
        metrics::gauge!(super::metrics::CONSUMER_LAG, "topic" => topic.to_owned(), "partition" => partition.to_string())
            .set(lag as f64);
    }

    pub fn snapshot(&self) -> BTreeMap<String, PartitionReport> {
        self.lock()
            .iter()
            .map(|((topic, partition), report)| (format!("{topic}/{partition}"), *report))
            .collect()
    }

    fn update(&self, topic: &str, partition: i32, change: impl FnOnce(&mut PartitionReport)) {
        change(self.lock().entry((topic.to_owned(), partition)).or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, i32), PartitionReport>> {
        self.partitions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
