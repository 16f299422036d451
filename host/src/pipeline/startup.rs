//! Starting a stage one step at a time: each step logged with its outcome,
//! transient failures retried with backoff, fatal ones ending the start at
//! once with what to fix.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::retry_policy::RetryPolicy;
use super::stage::StageError;
use crate::config::StartupSection;
use crate::kafka::ProbeError;
use crate::observe::Health;

/// How a step failed.
pub(crate) enum StepError {
    /// Worth another try: a broker not up yet, a timeout.
    Transient(String),
    /// No retry can fix it: missing certificate, refused credentials.
    Fatal(String),
}

impl From<ProbeError> for StepError {
    fn from(error: ProbeError) -> Self {
        match error {
            ProbeError::Transient(reason) => StepError::Transient(reason),
            ProbeError::Fatal(reason) => StepError::Fatal(reason),
        }
    }
}

/// The schedule between attempts of a step: doubling from
/// `initial_backoff_ms` up to `max_backoff_ms`, ±20% so that many stages
/// restarted together do not knock on the brokers in lockstep. All its
/// arithmetic is [`RetryPolicy`]'s, which saturates at `max_backoff_ms`.
fn backoff(config: &StartupSection) -> RetryPolicy {
    RetryPolicy {
        max_attempts: config.max_attempts,
        initial_backoff: Duration::from_millis(config.initial_backoff_ms),
        max_backoff: Duration::from_millis(config.max_backoff_ms),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

/// Runs the steps, counting every attempt in [`Health`].
pub(crate) struct Startup {
    retry: RetryPolicy,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
}

impl Startup {
    pub(crate) fn new(config: &StartupSection, health: Arc<Health>, shutdown: Arc<AtomicBool>) -> Self {
        Startup {
            retry: backoff(config),
            health,
            shutdown,
        }
    }

    /// Run `attempt` until it succeeds, fails fatally, runs out of
    /// attempts, or the stage is told to stop.
    pub(crate) async fn step<T, F, Fut>(&self, step: &'static str, mut attempt: F) -> Result<T, StageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let started = Instant::now();
        let mut attempts: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            self.health.init_attempt();
            let failure = match attempt().await {
                Ok(value) => {
                    let elapsed_ms = started.elapsed().as_millis() as u64;
                    tracing::info!(step, attempts, elapsed_ms, "startup step done");
                    self.health.startup_step(step, attempts, "done");
                    return Ok(value);
                }
                Err(StepError::Fatal(reason)) => {
                    tracing::error!(step, attempts, %reason, "startup step failed; not retrying");
                    self.health.startup_step(step, attempts, "failed");
                    return Err(StageError::Startup { step, reason });
                }
                Err(StepError::Transient(reason)) => reason,
            };
            if !self.retry.allows_another_attempt(attempts) {
                tracing::error!(step, attempts, reason = %failure, "startup step failed; giving up");
                self.health.startup_step(step, attempts, "gave up");
                return Err(StageError::Startup {
                    step,
                    reason: format!("gave up after {attempts} attempts: {failure}"),
                });
            }
            let delay = self.retry.delay_after(attempts, None);
            tracing::warn!(step, attempts, reason = %failure, retry_in_ms = delay.as_millis() as u64, "startup step failed; retrying");
            let waited = Instant::now();
            while waited.elapsed() < delay {
                if self.shutdown.load(Ordering::Relaxed) {
                    return Err(StageError::Startup {
                        step,
                        reason: "stopped by a signal before the step succeeded".to_owned(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(50).min(delay)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::backoff;
    use crate::config::StartupSection;

    #[test]
    fn the_startup_schedule_doubles_up_to_its_cap() {
        let policy = backoff(&StartupSection {
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            ..StartupSection::default()
        });
        let delay = |attempt| policy.delay_after(attempt, None);
        assert!((80..=120).contains(&delay(1).as_millis()), "{:?}", delay(1));
        assert!((160..=240).contains(&delay(2).as_millis()), "{:?}", delay(2));
        assert!((800..=1000).contains(&delay(5).as_millis()), "{:?}", delay(5));
    }

    #[test]
    fn extreme_startup_settings_never_overflow_the_backoff() {
        for (initial_backoff_ms, max_backoff_ms) in [(u64::MAX, u64::MAX), (1, u64::MAX), (u64::MAX, 0), (0, 0)] {
            let policy = backoff(&StartupSection {
                max_attempts: u32::MAX,
                initial_backoff_ms,
                max_backoff_ms,
                certificate_warning_days: u32::MAX,
            });
            for attempt in [1, 2, 63, 64, 65, 1000, u32::MAX - 1, u32::MAX] {
                let delay = policy.delay_after(attempt, None);
                assert!(delay <= Duration::from_millis(max_backoff_ms), "{attempt}: {delay:?}");
            }
            assert!(policy.allows_another_attempt(u32::MAX - 1));
            assert!(!policy.allows_another_attempt(u32::MAX));
        }
    }
}
