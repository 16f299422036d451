//! Latency percentiles for `/stats`, where a scrape-free reader wants
//! p50/p95/p99 as numbers rather than Prometheus buckets.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram of durations from 1 µs to 1 hour at 3 significant digits,
/// shared by every worker (one short lock per recorded call).
#[derive(Debug)]
pub struct LatencyHistogram {
    micros: Mutex<Histogram<u64>>,
}

/// What `/stats` shows of a [`LatencyHistogram`], in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub average_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            micros: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, duration: Duration) {
        let micros = (duration.as_micros() as u64).clamp(1, 3_600_000_000);
        self.micros
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .saturating_record(micros);
    }

    pub fn summary(&self) -> LatencySummary {
        let histogram = self.micros.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: histogram.len(),
            average_ms: if histogram.is_empty() {
                0.0
            } else {
                histogram.mean() / 1000.0
            },
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p95_ms: ms(histogram.value_at_quantile(0.95)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::LatencyHistogram;

    #[test]
    fn percentiles_come_from_the_recorded_durations() {
        let histogram = LatencyHistogram::default();
        for ms in 1..=100 {
            histogram.record(Duration::from_millis(ms));
        }
        let summary = histogram.summary();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p95_ms - 95.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.average_ms - 50.5).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        let summary = LatencyHistogram::default().summary();
        assert_eq!(summary.count, 0);
        assert_eq!(summary.average_ms, 0.0);
    }
}
