//! How often a stage may replace its consumer before it gives up.
//!
//! Recreating the consumer rescues it from states librdkafka cannot leave
//! by itself, and replaces failed workers. But a cause that outlives the
//! consumer (a duplicated `group.instance.id` fencing every new member, a
//! record that panics its worker every time) would recreate it forever:
//! so each recreation within the window waits longer than the one before,
//! and past the budget the stage exits non-zero with the cause, for the
//! operator (or the orchestrator's restart backoff) to see.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The wait before the first recreation in a window; each later one
/// doubles it, up to [`LONGEST_WAIT`].
const FIRST_WAIT: Duration = Duration::from_secs(1);
const LONGEST_WAIT: Duration = Duration::from_secs(60);

/// Whether, and after what wait, the consumer may be recreated now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recreation {
    After(Duration),
    /// Too many recreations within the window: stop the stage.
    GiveUp(String),
}

#[derive(Debug)]
pub(crate) struct RecreationBudget {
    max: u32,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RecreationBudget {
    /// At most `max` recreations within any `window`.
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        RecreationBudget {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Ask for a recreation now; a granted one counts against the budget.
    pub(crate) fn request(&mut self, cause: &str) -> Recreation {
        self.request_at(Instant::now(), cause)
    }

    fn request_at(&mut self, now: Instant, cause: &str) -> Recreation {
        while self
            .recent
            .front()
            .is_some_and(|earlier| now.duration_since(*earlier) > self.window)
        {
            self.recent.pop_front();
        }
        let within = self.recent.len() as u32;
        if within >= self.max {
            return Recreation::GiveUp(format!(
                "the consumer was recreated {within} times within {} s and the cause persists: {cause}",
                self.window.as_secs()
            ));
        }
        self.recent.push_back(now);
        let wait = FIRST_WAIT.saturating_mul(1u32 << within.min(16)).min(LONGEST_WAIT);
        Recreation::After(wait)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Recreation, RecreationBudget};

    #[test]
    fn each_recreation_in_a_window_waits_longer_until_the_budget_is_spent() {
        let mut budget = RecreationBudget::new(4, Duration::from_secs(600));
        let start = Instant::now();
        let waits: Vec<Recreation> = (0..4)
            .map(|n| budget.request_at(start + Duration::from_secs(n), "fenced"))
            .collect();
        let seconds = |s| Recreation::After(Duration::from_secs(s));
        assert_eq!(waits, [seconds(1), seconds(2), seconds(4), seconds(8)]);
        assert_eq!(
            budget.request_at(start + Duration::from_secs(5), "fenced"),
            Recreation::GiveUp("the consumer was recreated 4 times within 600 s and the cause persists: fenced".into())
        );
    }

    #[test]
    fn recreations_outside_the_window_no_longer_count() {
        let mut budget = RecreationBudget::new(2, Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(budget.request_at(start, "x"), Recreation::After(Duration::from_secs(1)));
        assert_eq!(budget.request_at(start, "x"), Recreation::After(Duration::from_secs(2)));
        assert_eq!(
            budget.request_at(start + Duration::from_secs(61), "x"),
            Recreation::After(Duration::from_secs(1))
        );
    }

    #[test]
    fn the_wait_is_capped() {
        let mut budget = RecreationBudget::new(u32::MAX, Duration::from_secs(3600));
        let start = Instant::now();
        let last = (0..40).map(|_| budget.request_at(start, "x")).last();
        assert_eq!(last, Some(Recreation::After(Duration::from_secs(60))));
    }
}
