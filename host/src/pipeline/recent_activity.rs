//! The stage's last few minutes, second by second: what `[health]` judges
//! the stage on. The totals in [`StageCounters`](super::StageCounters)
//! say how the stage has done since it started; this says how it is doing
//! now.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::second_buckets::SecondBuckets;
use crate::plugin::{PluginFailure, Verdict};

/// The longest window a `[health]` check may look at, in seconds.
const KEEP_SECONDS: u64 = 3600;

#[derive(Default)]
struct Second {
    attempts: u64,
    failed: u64,
    finished: u64,
    dead_lettered: u64,
    /// Plugin call durations in microseconds; made on the first call.
    call_micros: Option<Histogram<u64>>,
}

/// Totals over a window.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ActivityTotals {
    pub(crate) attempts: u64,
    /// Attempts that trapped, ran out of time or memory, broke the
    /// contract, or asked for a retry.
    pub(crate) failed: u64,
    pub(crate) finished: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) calls: u64,
    pub(crate) call_p99: Duration,
}

pub(crate) struct RecentActivity {
    origin: Instant,
    seconds: Mutex<SecondBuckets<Second>>,
}

impl Default for RecentActivity {
    fn default() -> Self {
        RecentActivity {
            origin: Instant::now(),
            seconds: Mutex::new(SecondBuckets::new(KEEP_SECONDS)),
        }
    }
}

impl std::fmt::Debug for RecentActivity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("RecentActivity").finish_non_exhaustive()
    }
}

impl RecentActivity {
    fn with_now(&self, change: impl FnOnce(&mut Second)) {
        let second = self.origin.elapsed().as_secs();
        let mut seconds = self.seconds.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        change(seconds.at(second));
    }

    /// One plugin call: how long it took and what each message's attempt
    /// came to.
    pub(crate) fn call(&self, duration: Duration, results: &[Result<Verdict, PluginFailure>]) {
        let failed = results
            .iter()
            .filter(|result| matches!(result, Err(_) | Ok(Verdict::Retry(_))))
            .count() as u64;
        let micros = (duration.as_micros() as u64).clamp(1, 3_600_000_000);
        self.with_now(|second| {
            second.attempts += results.len() as u64;
            second.failed += failed;
            let histogram = second.call_micros.get_or_insert_with(|| {
                Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
            });
            histogram.saturating_record(micros);
        });
    }

    pub(crate) fn finished(&self, finished: u64, dead_lettered: u64) {
        self.with_now(|second| {
            second.finished += finished;
            second.dead_lettered += dead_lettered;
        });
    }

    /// Totals over the last `window`.
    pub(crate) fn over(&self, window: Duration) -> ActivityTotals {
        let now = self.origin.elapsed().as_secs();
        let mut seconds = self.seconds.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut totals = ActivityTotals::default();
        let mut calls: Option<Histogram<u64>> = None;
        for second in seconds.last(now, window.as_secs()) {
            totals.attempts += second.attempts;
            totals.failed += second.failed;
            totals.finished += second.finished;
            totals.dead_lettered += second.dead_lettered;
            if let Some(histogram) = &second.call_micros {
                match &mut calls {
                    Some(merged) => merged.add(histogram).expect("histograms of the same bounds merge"),
                    None => calls = Some(histogram.clone()),
                }
            }
        }
        if let Some(calls) = calls {
            totals.calls = calls.len();
            totals.call_p99 = Duration::from_micros(calls.value_at_quantile(0.99));
        }
        totals
    }
}
