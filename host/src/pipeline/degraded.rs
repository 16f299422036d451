//! `[health]` thresholds: the stage still works, but worse than its
//! operator asked for. Crossing one marks the stage degraded in `/readyz`
//! and `/stats` (it stays ready), so trouble shows before the breaker
//! opens or the dead-letter topic fills.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::recent_activity::{ActivityTotals, RecentActivity};
use crate::config::HealthSection;

/// Which threshold is crossed, to tell a change from new figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threshold {
    FailureShare,
    CallLatency,
    DeadLetterShare,
}

/// Each threshold `totals` crosses, with a sentence. Shares are judged
/// only on at least one attempt (or finished message), so an idle stage is
/// never degraded.
pub(crate) fn degraded_reasons(settings: &HealthSection, totals: &ActivityTotals) -> Vec<(Threshold, String)> {
    let window = settings.window_seconds;
    let mut reasons = Vec::new();
    if let Some(limit) = settings.max_failure_share
        && totals.attempts > 0
        && totals.failed as f64 >= limit * totals.attempts as f64
    {
        reasons.push((
            Threshold::FailureShare,
            format!(
                "{} of {} attempts failed in the last {window} s (limit {}%)",
                totals.failed,
                totals.attempts,
                percent(limit)
            ),
        ));
    }
    if let Some(limit_ms) = settings.max_call_latency_ms
        && totals.calls > 0
        && totals.call_p99 >= Duration::from_millis(limit_ms)
    {
        reasons.push((
            Threshold::CallLatency,
            format!(
                "plugin calls took {} ms at the 99th percentile in the last {window} s (limit {limit_ms} ms)",
                totals.call_p99.as_millis()
            ),
        ));
    }
    if let Some(limit) = settings.max_dead_letter_share
        && totals.finished > 0
        && totals.dead_lettered as f64 >= limit * totals.finished as f64
    {
        reasons.push((
            Threshold::DeadLetterShare,
            format!(
                "{} of {} finished messages were dead-lettered in the last {window} s (limit {}%)",
                totals.dead_lettered,
                totals.finished,
                percent(limit)
            ),
        ));
    }
    reasons
}

fn percent(share: f64) -> f64 {
    (share * 1000.0).round() / 10.0
}

/// The thresholds against the stage's recent activity, and what was last
/// reported, so each change is logged once.
#[derive(Debug)]
pub(crate) struct DegradedCheck {
    settings: HealthSection,
    activity: Arc<RecentActivity>,
    last: Mutex<Vec<Threshold>>,
}

impl DegradedCheck {
    pub(crate) fn new(settings: HealthSection, activity: Arc<RecentActivity>) -> Self {
        DegradedCheck {
            settings,
            activity,
            last: Mutex::default(),
        }
    }

    fn enabled(&self) -> bool {
        let HealthSection {
            max_failure_share,
            max_call_latency_ms,
            max_dead_letter_share,
            ..
        } = &self.settings;
        max_failure_share.is_some() || max_call_latency_ms.is_some() || max_dead_letter_share.is_some()
    }

    /// Set `sluice_degraded` to the state last reported, once the metrics
    /// recorder is installed (a gauge set before it is lost).
    pub(crate) fn export_state(&self) {
        if self.enabled() {
            let degraded = !self
                .last
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .is_empty();
            metrics::gauge!(crate::observe::metrics::DEGRADED).set(if degraded { 1.0 } else { 0.0 });
        }
    }

    /// The thresholds crossed now, none when no check is set.
    fn crossed(&self) -> Vec<(Threshold, String)> {
        if !self.enabled() {
            return Vec::new();
        }
        let totals = self.activity.over(Duration::from_secs(self.settings.window_seconds));
        degraded_reasons(&self.settings, &totals)
    }

    /// Why the stage is degraded now.
    pub(crate) fn reasons(&self) -> Vec<String> {
        self.crossed().into_iter().map(|(_, reason)| reason).collect()
    }

    /// Look again and report a change: one log line when the stage
    /// becomes degraded (or its reasons change) and one when it recovers.
    pub(crate) fn watch(&self) {
        if !self.enabled() {
            return;
        }
        let crossed = self.crossed();
        let thresholds: Vec<Threshold> = crossed.iter().map(|(threshold, _)| *threshold).collect();
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if thresholds == *last {
            return;
        }
        if crossed.is_empty() {
            tracing::info!("the stage is no longer degraded");
        } else {
            let reasons: Vec<&str> = crossed.iter().map(|(_, reason)| reason.as_str()).collect();
            tracing::warn!(reasons = %reasons.join("; "), "the stage is degraded");
        }
        metrics::gauge!(crate::observe::metrics::DEGRADED).set(if crossed.is_empty() { 0.0 } else { 1.0 });
        *last = thresholds;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> HealthSection {
        HealthSection {
            window_seconds: 60,
            max_failure_share: Some(0.1),
            max_call_latency_ms: Some(500),
            max_dead_letter_share: Some(0.01),
        }
    }

    #[test]
    fn a_healthy_window_is_not_degraded() {
        let totals = ActivityTotals {
            attempts: 1000,
            failed: 99,
            finished: 1000,
            dead_lettered: 9,
            calls: 100,
            call_p99: Duration::from_millis(499),
        };
        assert!(degraded_reasons(&settings(), &totals).is_empty());
        assert!(
            degraded_reasons(&settings(), &ActivityTotals::default()).is_empty(),
            "idle"
        );
    }

    #[test]
    fn each_crossed_threshold_is_named() {
        let totals = ActivityTotals {
            attempts: 1000,
            failed: 100,
            finished: 900,
            dead_lettered: 9,
            calls: 100,
            call_p99: Duration::from_millis(750),
        };
        let reasons: Vec<String> = degraded_reasons(&settings(), &totals)
            .into_iter()
            .map(|(_, reason)| reason)
            .collect();
        assert_eq!(
            reasons,
            [
                "100 of 1000 attempts failed in the last 60 s (limit 10%)",
                "plugin calls took 750 ms at the 99th percentile in the last 60 s (limit 500 ms)",
                "9 of 900 finished messages were dead-lettered in the last 60 s (limit 1%)",
            ]
        );
    }

    #[test]
    fn unset_thresholds_are_not_checked() {
        let totals = ActivityTotals {
            attempts: 10,
            failed: 10,
            finished: 10,
            dead_lettered: 10,
            calls: 10,
            call_p99: Duration::from_secs(60),
        };
        let off = HealthSection::default();
        assert!(degraded_reasons(&off, &totals).is_empty());
    }
}
