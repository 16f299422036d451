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

    /// The wait after `attempt` (1-based) failed: never more than
    /// `max_backoff`, whatever the attempt number and settings.
    ///
    /// The arithmetic is done so that it cannot overflow or produce NaN
    /// (`Duration::from_secs_f64` panics on either): the exponential grows
    /// in `f64`, where overflow is infinity, and is capped before jitter is
    /// applied. Settings the loader would refuse (a NaN or negative
    /// multiplier, a jitter outside 0..=1) are read as the nearest sane
    /// value rather than trusted, since the fields are public.
    pub fn delay_after(&self, attempt: u32, requested: Option<Duration>) -> Duration {
        if let Some(requested) = requested {
            return requested.min(self.max_backoff);
        }
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let spread = if jitter > 0.0 {
            rand::rng().random_range(-jitter..=jitter)
        } else {
            0.0
        };
        let cap = self.max_backoff.as_secs_f64();
        let seconds = (self.scheduled_seconds(attempt) * (1.0 + spread)).clamp(0.0, cap);
        // `cap` is rounded to f64 and may exceed `Duration::MAX` itself.
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// `initial_backoff * multiplier^(attempt - 1)` in seconds, within
    /// `0..=max_backoff`, finite.
    fn scheduled_seconds(&self, attempt: u32) -> f64 {
        let cap = self.max_backoff.as_secs_f64();
        let initial = self.initial_backoff.as_secs_f64().min(cap);
        if initial == 0.0 {
            // Zero times anything, even an infinite growth, is no wait.
            return 0.0;
        }
        let multiplier = if self.multiplier >= 0.0 { self.multiplier } else { 1.0 };
        // `powi` saturates to infinity (or zero) rather than overflowing;
        // an exponent past `i32::MAX` is as good as `i32::MAX`.
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        (initial * multiplier.powi(exponent)).min(cap)
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
    fn extreme_attempts_and_multipliers_stay_within_the_cap() {
        let cap = Duration::from_millis(1000);
        for multiplier in [
            1.0,
            2.0,
            100.0,
            1e300,
            f64::MAX,
            f64::INFINITY,
            f64::NAN,
            0.0,
            0.5,
            -3.0,
        ] {
            for jitter in [0.0, 0.2, 1.0] {
                let policy = RetryPolicy {
                    multiplier,
                    jitter,
                    ..policy(0.0)
                };
                for attempt in [0, 1, 2, 64, 65, 1024, i32::MAX as u32, u32::MAX] {
                    let delay = policy.delay_after(attempt, None);
                    assert!(delay <= cap, "{multiplier} {jitter} {attempt}: {delay:?}");
                }
            }
        }
    }

    #[test]
    fn a_huge_multiplier_reaches_the_cap_at_once() {
        let policy = RetryPolicy {
            multiplier: 1e300,
            ..policy(0.0)
        };
        assert_eq!(policy.delay_after(1, None), Duration::from_millis(100));
        assert_eq!(policy.delay_after(2, None), Duration::from_millis(1000));
        assert_eq!(policy.delay_after(u32::MAX, None), Duration::from_millis(1000));
    }

    #[test]
    fn no_initial_backoff_means_no_wait_even_with_infinite_growth() {
        let policy = RetryPolicy {
            initial_backoff: Duration::ZERO,
            multiplier: f64::INFINITY,
            ..policy(0.5)
        };
        assert_eq!(policy.delay_after(u32::MAX, None), Duration::ZERO);
    }

    #[test]
    fn the_largest_durations_do_not_overflow() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            multiplier: 1e300,
            jitter: 1.0,
        };
        for attempt in [1, 2, u32::MAX] {
            assert!(policy.delay_after(attempt, None) <= Duration::MAX);
        }
        assert_eq!(policy.delay_after(1, Some(Duration::MAX)), Duration::MAX);
        let tight = RetryPolicy {
            max_backoff: Duration::ZERO,
            ..policy
        };
        assert_eq!(tight.delay_after(u32::MAX, None), Duration::ZERO);
    }

    #[test]
    fn jitter_outside_its_range_is_clamped() {
        for jitter in [f64::NAN, f64::INFINITY, -1.0, 7.0] {
            let policy = policy(jitter);
            for _ in 0..100 {
                let delay = policy.delay_after(2, None);
                assert!(delay <= Duration::from_millis(400), "{jitter}: {delay:?}");
            }
        }
        assert_eq!(policy(f64::NAN).delay_after(2, None), Duration::from_millis(200));
    }

    #[test]
    fn max_attempts_counts_the_first_attempt() {
        let policy = policy(0.0);
        assert!(policy.allows_another_attempt(3));
        assert!(!policy.allows_another_attempt(4));
    }
}
