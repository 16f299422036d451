//! Running totals of what a stage did, shared by its workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::counter;

use super::recent_activity::RecentActivity;
use crate::observe::metrics::{
    DEDUP_CLAIM_TAKEOVERS, DEDUP_CLAIM_WAITS, DEDUP_CLAIMS_LOST, DEDUP_STORE_ERRORS, DELIVERY_FAILURES,
    END_TO_END_SECONDS, FAILED_ATTEMPTS, MESSAGES_FINISHED, MESSAGES_RECEIVED, OUTPUT_RECORDS, PLUGIN_CALL_SECONDS,
    RETRIES,
};
use crate::observe::{LatencyHistogram, LatencySummary};
use crate::plugin::{FailureKind, PluginFailure, Verdict};

/// Counted as things become durable, so the totals can be trusted: an
/// output counts once the broker acknowledged it. Each count also goes to
/// the Prometheus metrics of the same meaning.
#[derive(Debug, Default)]
pub struct StageCounters {
    plugin_latency: LatencyHistogram,
    /// The same, second by second, for the `[health]` checks.
    recent: std::sync::Arc<RecentActivity>,
    received: AtomicU64,
    finished: AtomicU64,
    outputs: AtomicU64,
    filtered: AtomicU64,
    retries: AtomicU64,
    failed_attempts: AtomicU64,
    delivery_failures: AtomicU64,
    dead_lettered: AtomicU64,
    deduplicated: AtomicU64,
    store_errors: AtomicU64,
    claim_waits: AtomicU64,
    claim_takeovers: AtomicU64,
    claims_lost: AtomicU64,
}

/// How a lot of acknowledged messages ended, for [`StageCounters::completed`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcomes {
    /// Messages whose outputs were acknowledged.
    pub(crate) with_outputs: u64,
    /// Their output records.
    pub(crate) outputs: u64,
    /// Messages handled with no outputs.
    pub(crate) filtered: u64,
    pub(crate) dead_lettered: u64,
}

/// A snapshot of [`StageCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageSummary {
    /// Messages consumed from the input topics.
    pub received: u64,
    /// Messages whose verdict is carried out and durable (committable).
    pub finished: u64,
    /// Output records acknowledged by the broker.
    pub outputs: u64,
    /// Messages handled with no outputs.
    pub filtered: u64,
    /// Times a message was tried again.
    pub retries: u64,
    /// Plugin calls that trapped, ran out of time or memory.
    pub failed_attempts: u64,
    /// Records the broker refused after librdkafka's own retries.
    pub delivery_failures: u64,
    /// Messages acknowledged on the dead-letter topic.
    pub dead_lettered: u64,
    /// Messages skipped because their dedup key was already done.
    pub deduplicated: u64,
    /// Dedup store calls that failed (each retried or, if so configured,
    /// passed over).
    pub store_errors: u64,
    /// Messages that waited because another worker had claimed their
    /// dedup key.
    pub claim_waits: u64,
    /// Waiting messages handled here once the other worker's claim ran out.
    pub claim_takeovers: u64,
    /// Claims found expired or taken over when renewed.
    pub claims_lost: u64,
}

impl StageCounters {
    pub(crate) fn received(&self, count: u64) {
        self.received.fetch_add(count, Ordering::Relaxed);
        counter!(MESSAGES_RECEIVED).increment(count);
    }

    /// Messages are finished, each with its input record's timestamp (in
    /// ms since the epoch) when it has one, for the end-to-end latency.
    /// Counted once per lot: the clock is read once for all of them.
    pub(crate) fn finished(&self, timestamps_ms: impl ExactSizeIterator<Item = Option<i64>>) {
        self.finished.fetch_add(timestamps_ms.len() as u64, Ordering::Relaxed);
        let now = SystemTime::now();
        let end_to_end = metrics::histogram!(END_TO_END_SECONDS);
        for timestamp_ms in timestamps_ms {
            if let Some(latency) = since_timestamp(now, timestamp_ms) {
                end_to_end.record(latency.as_secs_f64());
            }
        }
    }

    /// What a lot of acknowledged messages came to, counted at once.
    pub(crate) fn completed(&self, outcomes: Outcomes) {
        let Outcomes {
            with_outputs,
            outputs,
            filtered,
            dead_lettered,
        } = outcomes;
        if with_outputs > 0 {
            self.outputs.fetch_add(outputs, Ordering::Relaxed);
            counter!(OUTPUT_RECORDS).increment(outputs);
            counter!(MESSAGES_FINISHED, "outcome" => "output").increment(with_outputs);
        }
        if filtered > 0 {
            self.filtered.fetch_add(filtered, Ordering::Relaxed);
            counter!(MESSAGES_FINISHED, "outcome" => "filtered").increment(filtered);
        }
        if dead_lettered > 0 {
            self.dead_lettered.fetch_add(dead_lettered, Ordering::Relaxed);
            counter!(MESSAGES_FINISHED, "outcome" => "dead_lettered").increment(dead_lettered);
        }
        self.recent
            .finished(with_outputs + filtered + dead_lettered, dead_lettered);
    }

    pub(crate) fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        counter!(RETRIES).increment(1);
    }

    pub(crate) fn failed_attempt(&self, kind: FailureKind) {
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
        counter!(FAILED_ATTEMPTS, "kind" => kind.label()).increment(1);
    }

    pub(crate) fn delivery_failure(&self) {
        self.delivery_failures.fetch_add(1, Ordering::Relaxed);
        counter!(DELIVERY_FAILURES).increment(1);
    }

    pub(crate) fn deduplicated(&self, count: u64) {
        self.deduplicated.fetch_add(count, Ordering::Relaxed);
        counter!(MESSAGES_FINISHED, "outcome" => "deduplicated").increment(count);
    }

    pub(crate) fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
        counter!(DEDUP_STORE_ERRORS).increment(1);
    }

    /// `count` messages found their key claimed by another worker.
    pub(crate) fn claim_waited(&self, count: u64) {
        self.claim_waits.fetch_add(count, Ordering::Relaxed);
        counter!(DEDUP_CLAIM_WAITS).increment(count);
    }

    /// A waiting message's key was free again (the holder's lease ran
    /// out) and is now claimed here.
    pub(crate) fn claim_taken_over(&self) {
        self.claim_takeovers.fetch_add(1, Ordering::Relaxed);
        counter!(DEDUP_CLAIM_TAKEOVERS).increment(1);
    }

    pub(crate) fn claims_lost(&self, count: u64) {
        self.claims_lost.fetch_add(count, Ordering::Relaxed);
        counter!(DEDUP_CLAIMS_LOST).increment(count);
    }

    /// One plugin call (of one message or a batch) took `duration`.
    /// One plugin call: its duration, and each message's attempt.
    pub(crate) fn plugin_call(&self, duration: Duration, results: &[Result<Verdict, PluginFailure>]) {
        self.recent.call(duration, results);
        self.plugin_latency.record(duration);
        metrics::histogram!(PLUGIN_CALL_SECONDS).record(duration.as_secs_f64());
    }

    /// The last hour, second by second.
    pub(crate) fn recent(&self) -> std::sync::Arc<RecentActivity> {
        self.recent.clone()
    }

    /// Percentiles of plugin call durations since the stage started.
    pub fn plugin_latency(&self) -> LatencySummary {
        self.plugin_latency.summary()
    }

    pub fn snapshot(&self) -> StageSummary {
        StageSummary {
            received: self.received.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            outputs: self.outputs.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            delivery_failures: self.delivery_failures.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            deduplicated: self.deduplicated.load(Ordering::Relaxed),
            store_errors: self.store_errors.load(Ordering::Relaxed),
            claim_waits: self.claim_waits.load(Ordering::Relaxed),
            claim_takeovers: self.claim_takeovers.load(Ordering::Relaxed),
            claims_lost: self.claims_lost.load(Ordering::Relaxed),
        }
    }
}

fn since_timestamp(now: SystemTime, timestamp_ms: Option<i64>) -> Option<Duration> {
    let timestamp = UNIX_EPOCH + Duration::from_millis(u64::try_from(timestamp_ms?).ok()?);
    now.duration_since(timestamp).ok()
}
