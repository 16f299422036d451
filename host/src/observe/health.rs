//! What the process knows about its own health: written by startup and the
//! consumer thread, read by `/healthz`, `/readyz` and `/stats`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;
use std::time::{Duration, Instant};

/// Liveness and readiness signals, all lock-free.
///
/// Alive means the consumer loop is not stuck: it polled within
/// `stuck_after` (startup, which retries on its own schedule, counts as
/// alive). Ready means it can do its job now: plugin loaded, consuming,
/// brokers reachable, and partitions assigned.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    stuck_after: Duration,
    /// Milliseconds after `started` of the last poll; `u64::MAX` before one.
    last_poll_ms: AtomicU64,
    consuming: AtomicBool,
    plugin_loaded: AtomicBool,
    connected: AtomicBool,
    assigned_partitions: AtomicUsize,
    init_attempts: AtomicU64,
    connection_errors: AtomicU64,
    consumer_recreations: AtomicU64,
    startup: Mutex<Vec<StartupStep>>,
}

/// One startup step as `/stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StartupStep {
    pub step: &'static str,
    pub attempts: u32,
    /// `done`, `failed` or `gave up`.
    pub outcome: &'static str,
}

impl Health {
    /// `stuck_after`: how old the last poll may be before the process
    /// counts as stuck. Must exceed the longest legitimate pause of the
    /// loop (a rebalance waits out the drain timeout).
    pub fn new(stuck_after: Duration) -> Self {
        Health {
            started: Instant::now(),
            stuck_after,
            last_poll_ms: AtomicU64::new(u64::MAX),
            consuming: AtomicBool::new(false),
            plugin_loaded: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            assigned_partitions: AtomicUsize::new(0),
            init_attempts: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            consumer_recreations: AtomicU64::new(0),
            startup: Mutex::default(),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The consumer loop is alive and polling.
    pub fn polled(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_poll_ms.store(now, Ordering::Relaxed);
        self.consuming.store(true, Ordering::Relaxed);
    }

    /// The consumer loop has ended (stopping): not ready, but not stuck.
    pub fn stopped_consuming(&self) {
        self.consuming.store(false, Ordering::Relaxed);
        self.last_poll_ms.store(u64::MAX, Ordering::Relaxed);
    }

    pub fn set_plugin_loaded(&self) {
        self.plugin_loaded.store(true, Ordering::Relaxed);
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }

    pub fn set_assigned_partitions(&self, count: usize) {
        self.assigned_partitions.store(count, Ordering::Relaxed);
    }

    /// One more try at a startup step.
    pub fn init_attempt(&self) {
        self.init_attempts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(super::metrics::INIT_ATTEMPTS).increment(1);
    }

    /// How a startup step ended, after how many attempts.
    pub fn startup_step(&self, step: &'static str, attempts: u32, outcome: &'static str) {
        self.startup
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(StartupStep {
                step,
                attempts,
                outcome,
            });
    }

    pub fn startup_steps(&self) -> Vec<StartupStep> {
        self.startup
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn connection_error(&self) {
        self.connection_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(super::metrics::CONNECTION_ERRORS).increment(1);
    }

    /// The consumer was replaced after persistent errors.
    pub fn consumer_recreated(&self) {
        self.consumer_recreations.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(super::metrics::CONSUMER_RECREATIONS).increment(1);
    }

    pub fn consumer_recreations(&self) -> u64 {
        self.consumer_recreations.load(Ordering::Relaxed)
    }

    pub fn init_attempts(&self) -> u64 {
        self.init_attempts.load(Ordering::Relaxed)
    }

    pub fn connection_errors(&self) -> u64 {
        self.connection_errors.load(Ordering::Relaxed)
    }

    pub fn assigned_partitions(&self) -> usize {
        self.assigned_partitions.load(Ordering::Relaxed)
    }

    /// `Err` says why the process should be restarted.
    pub fn liveness(&self) -> Result<(), String> {
        let last = self.last_poll_ms.load(Ordering::Relaxed);
        if last == u64::MAX {
            return Ok(());
        }
        let since = Duration::from_millis((self.started.elapsed().as_millis() as u64).saturating_sub(last));
        if since > self.stuck_after {
            return Err(format!(
                "the consumer loop last polled {:.1} s ago (limit {} s)",
                since.as_secs_f64(),
                self.stuck_after.as_secs()
            ));
        }
        Ok(())
    }

    /// `Err` lists what is missing for the stage to process messages.
    pub fn readiness(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        if !self.plugin_loaded.load(Ordering::Relaxed) {
            missing.push("the plugin is not loaded");
        }
        if !self.consuming.load(Ordering::Relaxed) {
            missing.push("the consumer is not running");
        }
        if !self.connected.load(Ordering::Relaxed) {
            missing.push("no broker is reachable");
        }
        if self.assigned_partitions.load(Ordering::Relaxed) == 0 {
            missing.push("no partitions are assigned to this member");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Health;

    #[test]
    fn ready_only_with_plugin_consumer_brokers_and_partitions() {
        let health = Health::new(Duration::from_secs(30));
        assert!(health.readiness().unwrap_err().contains("plugin"));
        health.set_plugin_loaded();
        health.polled();
        health.set_connected(true);
        assert_eq!(
            health.readiness().unwrap_err(),
            "no partitions are assigned to this member"
        );
        health.set_assigned_partitions(2);
        assert_eq!(health.readiness(), Ok(()));
        health.set_connected(false);
        assert_eq!(health.readiness().unwrap_err(), "no broker is reachable");
    }

    #[test]
    fn a_loop_that_stops_polling_is_not_alive() {
        let health = Health::new(Duration::from_millis(50));
        assert_eq!(health.liveness(), Ok(()), "alive during startup");
        health.polled();
        assert_eq!(health.liveness(), Ok(()));
        std::thread::sleep(Duration::from_millis(120));
        assert!(health.liveness().unwrap_err().contains("last polled"));
        health.stopped_consuming();
        assert_eq!(health.liveness(), Ok(()));
    }
}
