//! The probation of a newly loaded version: its first calls decide whether
//! it stays.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a trial concluded after the calls just recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TrialOutcome {
    /// Still judging.
    Undecided,
    /// Enough calls went well: the version stays and the trial ends.
    Passed { calls: u64, failures: u64 },
    /// Too many calls failed: the version must go.
    Failed {
        calls: u64,
        failures: u64,
        last_failure: String,
    },
}

/// Counts a version's first `length` calls and their failures.
///
/// Decided as early as the numbers allow: failing needs only more than
/// `tolerated` failures, so a version that traps on everything is rolled
/// back after a handful of calls, not after the whole trial.
#[derive(Debug)]
pub(crate) struct Trial {
    length: u64,
    tolerated: u64,
    over: AtomicBool,
    tally: Mutex<Tally>,
}

#[derive(Debug, Default)]
struct Tally {
    calls: u64,
    failures: u64,
    last_failure: Option<String>,
}

impl Trial {
    pub(crate) fn new(length: u64, tolerated: u64) -> Self {
        Trial {
            length,
            tolerated,
            over: AtomicBool::new(length == 0),
            tally: Mutex::default(),
        }
    }

    /// Whether the trial has concluded (or never ran: length 0).
    pub(crate) fn is_over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// Add `calls` calls of which `failures` failed, the last of them with
    /// `last_failure`. The outcome is reported once; later calls see
    /// `Undecided`.
    pub(crate) fn record(&self, calls: u64, failures: u64, last_failure: Option<&str>) -> TrialOutcome {
        if calls == 0 || self.is_over() {
            return TrialOutcome::Undecided;
        }
        let mut tally = self.tally.lock().expect("trial tally lock");
        if self.is_over() {
            return TrialOutcome::Undecided;
        }
        // Calls past the trial's length (a batch straddling its end) do
        // not count; their failures do only while there is room.
        let room = self.length - tally.calls;
        let counted_calls = calls.min(room);
        let counted_failures = failures.min(counted_calls);
        tally.calls += counted_calls;
        tally.failures += counted_failures;
        if let Some(reason) = last_failure.filter(|_| counted_failures > 0) {
            tally.last_failure = Some(reason.to_owned());
        }
        let outcome = if tally.failures > self.tolerated {
            TrialOutcome::Failed {
                calls: tally.calls,
                failures: tally.failures,
                last_failure: tally.last_failure.clone().unwrap_or_default(),
            }
        } else if tally.calls >= self.length {
            TrialOutcome::Passed {
                calls: tally.calls,
                failures: tally.failures,
            }
        } else {
            return TrialOutcome::Undecided;
        };
        self.over.store(true, Ordering::Release);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::{Trial, TrialOutcome};

    #[test]
    fn a_version_that_fails_everything_is_failed_as_soon_as_the_numbers_allow() {
        let trial = Trial::new(100, 50);
        for _ in 0..50 {
            assert_eq!(trial.record(1, 1, Some("plugin trapped")), TrialOutcome::Undecided);
        }
        assert_eq!(
            trial.record(1, 1, Some("plugin trapped: boom")),
            TrialOutcome::Failed {
                calls: 51,
                failures: 51,
                last_failure: "plugin trapped: boom".to_owned()
            }
        );
        assert!(trial.is_over());
        assert_eq!(trial.record(1, 1, Some("again")), TrialOutcome::Undecided);
    }

    #[test]
    fn a_version_within_the_tolerated_failures_passes_at_the_end_of_its_trial() {
        let trial = Trial::new(100, 50);
        assert_eq!(trial.record(60, 0, None), TrialOutcome::Undecided);
        assert_eq!(trial.record(30, 30, Some("x")), TrialOutcome::Undecided);
        assert_eq!(
            trial.record(100, 5, Some("x")),
            TrialOutcome::Passed {
                calls: 100,
                failures: 35
            }
        );
    }

    #[test]
    fn failures_past_the_end_of_the_trial_do_not_count() {
        let trial = Trial::new(10, 2);
        assert_eq!(trial.record(8, 2, Some("x")), TrialOutcome::Undecided);
        // A batch of 5 straddles the end: only 2 calls fit, so at most 2
        // of its failures count.
        assert_eq!(
            trial.record(5, 1, Some("x")),
            TrialOutcome::Failed {
                calls: 10,
                failures: 3,
                last_failure: "x".to_owned()
            }
        );
    }

    #[test]
    fn a_trial_of_length_zero_is_over_from_the_start() {
        let trial = Trial::new(0, 0);
        assert!(trial.is_over());
        assert_eq!(trial.record(5, 5, Some("x")), TrialOutcome::Undecided);
    }
}
