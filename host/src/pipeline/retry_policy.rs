//! How long to wait before trying a message again, and when to stop.

use std::time::Duration;

use rand::Rng;

use crate::config::RetrySection;

/// Exponential backoff with jitter, capped, with a plugin's own requested
/// delay taking precedence (still capped, so a plugin cannot stall a
/// partition longer than the operator allows).
///
/// Written here rather than taken from a backoff crate: the delay depends
/// only on the attempt number (the message carries it across instance
/// restarts), and the plugin's request must override the schedule; the
/// iterator-style crates fit neither.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub multiplier: f64,
    pub jitter: f64,
}

impl RetryPolicy {
    pub fn from_config(retry: &RetrySection) -> Self {
        RetryPolicy {
            max_attempts: retry.max_attempts,
            initial_backoff: Duration::from_millis(retry.initial_backoff_ms),
            max_backoff: Duration::from_millis(retry.max_backoff_ms),
            multiplier: retry.multiplier,
            jitter: retry.jitter,
        }
    }

    /// Whether a message whose `attempt` just failed may be tried again.
    pub fn allows_another_attempt(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The wait after `attempt` (1-based) failed.
    pub fn delay_after(&self, attempt: u32, requested: Option<Duration>) -> Duration {
        if let Some(requested) = requested {
            return requested.min(self.max_backoff);
        }
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.powi(exponent);
        let spread = if self.jitter > 0.0 {
            rand::rng().random_range(-self.jitter..=self.jitter)
        } else {
            0.0
        };
        let seconds = (base * (1.0 + spread)).clamp(0.0, self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            multiplier: 2.0,
            jitter,
        }
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let policy = policy(0.0);
        let delays: Vec<u128> = (1..=6)
            .map(|attempt| policy.delay_after(attempt, None).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let policy = policy(0.2);
        for _ in 0..1000 {
            let delay = policy.delay_after(2, None).as_secs_f64();
            assert!((0.16..=0.24).contains(&delay), "{delay}");
        }
    }

    #[test]
    fn a_requested_delay_wins_but_is_capped() {
        let policy = policy(0.2);
        assert_eq!(
            policy.delay_after(1, Some(Duration::from_millis(250))),
            Duration::from_millis(250)
        );
        assert_eq!(
            policy.delay_after(1, Some(Duration::from_secs(60))),
            Duration::from_millis(1000)
        );
    }

    #[test]
    fn max_attempts_counts_the_first_attempt() {
        let policy = policy(0.0);
        assert!(policy.allows_another_attempt(3));
        assert!(!policy.allows_another_attempt(4));
    }
}
