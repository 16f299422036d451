//! The failure-flood breaker (`[breaker]`): when most attempts fail, a
//! dependency of the handler is most likely down, and every message would
//! be retried until it is dead-lettered. The breaker stops plugin calls on
//! every partition instead, lets one probe through at a time on a growing
//! backoff, and closes when a probe succeeds.
//!
//! [`BreakerState`] decides, given the time; [`Breaker`] shares it across
//! partitions, parks calls while it is open, and reports transitions.

use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::second_buckets::SecondBuckets;
use crate::config::{AttemptFailure, BreakerSection};
use crate::plugin::{FailureKind, PluginFailure, Verdict};

/// Whether one attempt failed in the sense of `[breaker] failures`.
pub(crate) fn counts_as_failed(failures: &[AttemptFailure], result: &Result<Verdict, PluginFailure>) -> bool {
    let outcome = match result {
        Ok(Verdict::Retry(_)) => AttemptFailure::Retry,
        Ok(_) => return false,
        Err(failure) => match failure.kind {
            FailureKind::Trap => AttemptFailure::Trap,
            FailureKind::Deadline => AttemptFailure::Deadline,
            FailureKind::MemoryLimit => AttemptFailure::MemoryLimit,
            FailureKind::ContractViolation => AttemptFailure::ContractViolation,
            FailureKind::HostPanic => AttemptFailure::HostPanic,
        },
    };
    failures.contains(&outcome)
}

#[derive(Debug, Default, Clone, Copy)]
struct Attempts {
    all: u64,
    failed: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Closed,
    /// No calls until `probe_at`; then one probe.
    Open {
        probe_at: Instant,
        backoff: Duration,
    },
    /// One probe is out; everything else waits for its outcome.
    Probing {
        backoff: Duration,
    },
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Call,
    /// Call with one message, as the probe.
    Probe,
    /// Wait until this instant, or a change.
    WaitUntil(Instant),
    /// Wait for the probe's outcome.
    WaitForProbe,
}

/// A change worth a log line, a metric and a health update.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Transition {
    Opened { reason: String },
    ProbeFailed { next_probe_in: Duration },
    Closed,
}

/// The breaker's rules, with time passed in.
#[derive(Debug)]
pub(crate) struct BreakerState {
    settings: BreakerSection,
    /// When second 0 of the window was.
    origin: Instant,
    window: SecondBuckets<Attempts>,
    phase: Phase,
    reason: Option<String>,
    opened: u64,
}

impl BreakerState {
    pub(crate) fn new(settings: BreakerSection, now: Instant) -> Self {
        BreakerState {
            window: SecondBuckets::new(settings.window_seconds),
            settings,
            origin: now,
            phase: Phase::Closed,
            reason: None,
            opened: 0,
        }
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        match self.phase {
            Phase::Closed => Admit::Call,
            Phase::Open { probe_at, backoff } if now >= probe_at => {
                self.phase = Phase::Probing { backoff };
                Admit::Probe
            }
            Phase::Open { probe_at, .. } => Admit::WaitUntil(probe_at),
            Phase::Probing { .. } => Admit::WaitForProbe,
        }
    }

    /// Attempts of a call admitted while closed. Attempts that come back
    /// after the breaker opened (calls already running) change nothing.
    pub(crate) fn record(&mut self, now: Instant, attempts: u64, failed: u64) -> Option<Transition> {
        if self.phase != Phase::Closed || attempts == 0 {
            return None;
        }
        let second = self.second(now);
        let bucket = self.window.at(second);
        bucket.all += attempts;
        bucket.failed += failed;
        let (all, failed) = self.window.within(second).fold((0, 0), |(all, failed), bucket| {
            (all + bucket.all, failed + bucket.failed)
        });
        if all < u64::from(self.settings.min_attempts) || (failed as f64) < self.settings.failure_share * all as f64 {
            return None;
        }
        let reason = format!(
            "{failed} of {all} attempts failed in the last {} s (the breaker opens at {}%)",
            self.settings.window_seconds,
            self.settings.failure_share * 100.0
        );
        let backoff = Duration::from_millis(self.settings.probe_backoff_ms);
        self.phase = Phase::Open {
            probe_at: now + backoff,
            backoff,
        };
        self.reason = Some(reason.clone());
        self.opened += 1;
        Some(Transition::Opened { reason })
    }

    /// How the probe went: a success closes the breaker with a fresh
    /// window; a failure opens it again for twice as long.
    pub(crate) fn probed(&mut self, now: Instant, succeeded: bool) -> Transition {
        let backoff = match self.phase {
            Phase::Probing { backoff } => backoff,
            _ => Duration::from_millis(self.settings.probe_backoff_ms),
        };
        if succeeded {
            self.phase = Phase::Closed;
            self.reason = None;
            self.window.clear();
            return Transition::Closed;
        }
        let next = (backoff * 2).min(Duration::from_millis(self.settings.max_probe_backoff_ms));
        self.phase = Phase::Open {
            probe_at: now + next,
            backoff: next,
        };
        Transition::ProbeFailed { next_probe_in: next }
    }

    /// The probe ended without an outcome (its partition stopped): the
    /// next caller probes instead.
    pub(crate) fn probe_abandoned(&mut self, now: Instant) {
        if let Phase::Probing { backoff } = self.phase {
            self.phase = Phase::Open { probe_at: now, backoff };
        }
    }

    pub(crate) fn report(&self, now: Instant) -> BreakerReport {
        let (state, next_probe_in_ms) = match self.phase {
            Phase::Closed => ("closed", None),
            Phase::Open { probe_at, .. } => ("open", Some(probe_at.saturating_duration_since(now).as_millis() as u64)),
            Phase::Probing { .. } => ("probing", None),
        };
        BreakerReport {
            state,
            reason: self.reason.clone(),
            next_probe_in_ms,
            times_opened: self.opened,
        }
    }

    fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }
}

/// What `/stats` shows under `"breaker"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct BreakerReport {
    /// `closed`, `open` or `probing`.
    pub(crate) state: &'static str,
    /// Why it opened, while it is not closed.
    pub(crate) reason: Option<String>,
    pub(crate) next_probe_in_ms: Option<u64>,
    pub(crate) times_opened: u64,
}

/// The stage's breaker, shared by every partition worker.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: Mutex<BreakerState>,
    failures: Vec<AttemptFailure>,
    changed: Notify,
}

/// How a call got through: the probe must report how it went.
#[derive(Debug)]
pub(crate) enum Admission {
    Call,
    Probe(ProbeTicket),
}

impl Admission {
    pub(crate) fn is_probe(&self) -> bool {
        matches!(self, Admission::Probe(_))
    }
}

/// The one probe out; dropped without [`Breaker::finish`] (its call was
/// abandoned), it lets the next caller probe.
#[derive(Debug)]
pub(crate) struct ProbeTicket {
    breaker: Option<Arc<Breaker>>,
}

impl Drop for ProbeTicket {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take() {
            breaker.lock().probe_abandoned(Instant::now());
            breaker.changed.notify_waiters();
        }
    }
}

impl Breaker {
    pub(crate) fn new(settings: BreakerSection) -> Self {
        Breaker {
            failures: settings.failures.clone(),
            state: Mutex::new(BreakerState::new(settings, Instant::now())),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wait until a call may go. Cancel-safe: dropping the future gives
    /// nothing up, and a probe ticket dropped unused passes the probe on.
    pub(crate) async fn admit(self: &Arc<Self>) -> Admission {
        loop {
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            let admit = self.lock().admit(Instant::now());
            match admit {
                Admit::Call => return Admission::Call,
                Admit::Probe => {
                    tracing::info!("breaker: probing with one message");
                    metrics::gauge!(crate::observe::metrics::BREAKER_OPEN).set(1.0);
                    return Admission::Probe(ProbeTicket {
                        breaker: Some(self.clone()),
                    });
                }
                Admit::WaitUntil(probe_at) => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep_until(probe_at) => {}
                    }
                }
                Admit::WaitForProbe => changed.await,
            }
        }
    }

    /// Count a call's attempts, and settle its probe if it was one. `true`
    /// when the call was a probe that failed: its message has not used up
    /// an attempt and goes back to wait.
    pub(crate) fn finish(&self, admission: Admission, results: &[Result<Verdict, PluginFailure>]) -> bool {
        let failed = results
            .iter()
            .filter(|result| counts_as_failed(&self.failures, result))
            .count() as u64;
        let now = Instant::now();
        let transition = match admission {
            Admission::Call => self.lock().record(now, results.len() as u64, failed),
            Admission::Probe(mut ticket) => {
                ticket.breaker = None;
                let succeeded = failed == 0 && !results.is_empty();
                Some(self.lock().probed(now, succeeded))
            }
        };
        let probe_failed = matches!(transition, Some(Transition::ProbeFailed { .. }));
        if let Some(transition) = transition {
            self.announce(transition);
        }
        probe_failed
    }

    fn announce(&self, transition: Transition) {
        use crate::observe::metrics::{BREAKER_OPEN, BREAKER_TRANSITIONS};
        match transition {
            Transition::Opened { reason } => {
                tracing::warn!(%reason, "breaker opened: no messages go to the plugin until a probe succeeds");
                metrics::gauge!(BREAKER_OPEN).set(1.0);
                metrics::counter!(BREAKER_TRANSITIONS, "to" => "open").increment(1);
            }
            Transition::ProbeFailed { next_probe_in } => {
                tracing::info!(?next_probe_in, "breaker: the probe failed; it stays open");
                metrics::counter!(BREAKER_TRANSITIONS, "to" => "open").increment(1);
            }
            Transition::Closed => {
                tracing::info!("breaker closed: the probe succeeded; messages flow again");
                metrics::gauge!(BREAKER_OPEN).set(0.0);
                metrics::counter!(BREAKER_TRANSITIONS, "to" => "closed").increment(1);
            }
        }
        self.changed.notify_waiters();
    }

    /// Why the stage is not taking messages, while the breaker is not
    /// closed.
    pub(crate) fn open_reason(&self) -> Option<String> {
        let state = self.lock();
        if state.is_closed() {
            return None;
        }
        Some(format!(
            "the breaker is {}: {}",
            state.report(Instant::now()).state,
            state.reason.as_deref().unwrap_or("too many attempts failed")
        ))
    }

    pub(crate) fn report(&self) -> BreakerReport {
        self.lock().report(Instant::now())
    }

    /// Set `sluice_breaker_open` to the state now, once the metrics
    /// recorder is installed (a gauge set before it is lost).
    pub(crate) fn export_state(&self) {
        let open = if self.lock().is_closed() { 0.0 } else { 1.0 };
        metrics::gauge!(crate::observe::metrics::BREAKER_OPEN).set(open);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSection {
        BreakerSection {
            failure_share: 0.5,
            window_seconds: 10,
            min_attempts: 4,
            failures: vec![AttemptFailure::Retry],
            probe_backoff_ms: 1000,
            max_probe_backoff_ms: 3000,
        }
    }

    #[test]
    fn opens_at_the_failure_share_once_enough_attempts_are_in() {
        let start = Instant::now();
        let mut state = BreakerState::new(settings(), start);
        assert_eq!(state.record(start, 2, 2), None, "too few attempts to judge");
        assert_eq!(state.record(start, 1, 0), None);
        let opened = state.record(start, 1, 0);
        assert_eq!(
            opened,
            Some(Transition::Opened {
                reason: "2 of 4 attempts failed in the last 10 s (the breaker opens at 50%)".to_owned()
            })
        );
        assert_eq!(state.admit(start), Admit::WaitUntil(start + Duration::from_secs(1)));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let start = Instant::now();
        let mut state = BreakerState::new(settings(), start);
        state.record(start, 3, 3);
        assert_eq!(state.record(start + Duration::from_secs(10), 5, 1), None);
        assert_eq!(state.admit(start + Duration::from_secs(10)), Admit::Call);
    }

    #[test]
    fn one_probe_at_a_time_on_a_doubling_capped_backoff() {
        let start = Instant::now();
        let mut state = BreakerState::new(settings(), start);
        state.record(start, 4, 4);
        let later = start + Duration::from_secs(1);
        assert_eq!(state.admit(later), Admit::Probe);
        assert_eq!(state.admit(later), Admit::WaitForProbe, "only one probe is out");
        assert_eq!(
            state.probed(later, false),
            Transition::ProbeFailed {
                next_probe_in: Duration::from_secs(2)
            }
        );
        let later = later + Duration::from_secs(2);
        assert_eq!(state.admit(later), Admit::Probe);
        state.probed(later, false);
        let later = later + Duration::from_secs(3);
        assert_eq!(state.admit(later), Admit::Probe);
        assert_eq!(
            state.probed(later, false),
            Transition::ProbeFailed {
                next_probe_in: Duration::from_secs(3)
            },
            "capped at max_probe_backoff_ms"
        );
    }

    #[test]
    fn a_successful_probe_closes_with_a_fresh_window() {
        let start = Instant::now();
        let mut state = BreakerState::new(settings(), start);
        state.record(start, 4, 4);
        let later = start + Duration::from_secs(1);
        assert_eq!(state.admit(later), Admit::Probe);
        assert_eq!(state.probed(later, true), Transition::Closed);
        assert_eq!(state.admit(later), Admit::Call);
        assert_eq!(state.record(later, 1, 1), None, "the failures before it are forgotten");
        assert_eq!(state.report(later).times_opened, 1);
    }

    #[test]
    fn an_abandoned_probe_is_passed_on_at_once() {
        let start = Instant::now();
        let mut state = BreakerState::new(settings(), start);
        state.record(start, 4, 4);
        let later = start + Duration::from_secs(1);
        assert_eq!(state.admit(later), Admit::Probe);
        state.probe_abandoned(later);
        assert_eq!(state.admit(later), Admit::Probe);
    }

    #[test]
    fn only_the_listed_outcomes_count() {
        let retry = Ok(Verdict::Retry(crate::plugin::RetryInfo {
            reason: "503".to_owned(),
            delay_ms: None,
        }));
        let trap = Err(PluginFailure {
            kind: FailureKind::Trap,
            reason: "boom".to_owned(),
        });
        assert!(counts_as_failed(&[AttemptFailure::Retry], &retry));
        assert!(!counts_as_failed(&[AttemptFailure::Retry], &trap));
        assert!(counts_as_failed(&[AttemptFailure::Trap], &trap));
        assert!(!counts_as_failed(
            &[AttemptFailure::Retry, AttemptFailure::Trap],
            &Ok(Verdict::DeadLetter("bad input".to_owned()))
        ));
    }
}
