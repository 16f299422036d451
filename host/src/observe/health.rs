//! What the process knows about its own health: written by startup and the
//! consumer thread, read by `/healthz`, `/readyz` and `/stats`.

use std::collections::BTreeMap;
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
    /// Partitions holding still because their dead letters cannot be
    /// written, with why: not ready until they move again.
    blocked_partitions: Mutex<BTreeMap<String, String>>,
    /// Partitions whose worker ended without being told to, with the
    /// cause: not alive until the workers are replaced.
    failed_workers: Mutex<BTreeMap<String, String>>,
    /// Why the stage is stopping on its own, once it is.
    fault: Mutex<Option<String>>,
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
            blocked_partitions: Mutex::default(),
            failed_workers: Mutex::default(),
            fault: Mutex::default(),
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

    /// A partition cannot move (its dead letters cannot be written).
    pub fn partition_blocked(&self, partition: &str, reason: &str) {
        lock(&self.blocked_partitions).insert(partition.to_owned(), reason.to_owned());
    }

    /// A blocked partition moves again (or is no longer this member's).
    pub fn partition_unblocked(&self, partition: &str) {
        lock(&self.blocked_partitions).remove(partition);
    }

    /// A partition's worker ended without being told to stop.
    pub fn worker_failed(&self, partition: &str, cause: &str) {
        lock(&self.failed_workers).insert(partition.to_owned(), cause.to_owned());
        metrics::counter!(super::metrics::WORKER_FAILURES).increment(1);
    }

    /// Every worker was replaced (the consumer was recreated).
    pub fn workers_replaced(&self) {
        lock(&self.failed_workers).clear();
        lock(&self.blocked_partitions).clear();
    }

    /// The stage is stopping on its own because of `reason`.
    pub fn stage_failed(&self, reason: &str) {
        lock(&self.fault).get_or_insert_with(|| reason.to_owned());
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
        if let Some(fault) = lock(&self.fault).as_ref() {
            return Err(format!("the stage is stopping: {fault}"));
        }
        let failed = lock(&self.failed_workers);
        if !failed.is_empty() {
            return Err(failed
                .iter()
                .map(|(partition, cause)| format!("the worker of {partition} failed: {cause}"))
                .collect::<Vec<_>>()
                .join("; "));
        }
        drop(failed);
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
        let mut missing: Vec<String> = missing.into_iter().map(str::to_owned).collect();
        if let Err(dead) = self.liveness() {
            missing.push(dead);
        }
        missing.extend(
            lock(&self.blocked_partitions)
                .iter()
                .map(|(partition, reason)| format!("{partition} is blocked: {reason}")),
        );
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

    #[test]
    fn failed_workers_and_blocked_partitions_are_named() {
        let health = Health::new(Duration::from_secs(30));
        health.set_plugin_loaded();
        health.polled();
        health.set_connected(true);
        health.set_assigned_partitions(2);
        health.partition_blocked("in/1", "the dead-letter topic dlq cannot be written: denied");
        assert_eq!(health.liveness(), Ok(()), "blocked is not dead");
        assert_eq!(
            health.readiness().unwrap_err(),
            "in/1 is blocked: the dead-letter topic dlq cannot be written: denied"
        );
        health.partition_unblocked("in/1");
        assert_eq!(health.readiness(), Ok(()));

        health.worker_failed("in/0", "panicked: boom");
        assert_eq!(
            health.liveness().unwrap_err(),
            "the worker of in/0 failed: panicked: boom"
        );
        assert!(health.readiness().unwrap_err().contains("in/0"));
        health.workers_replaced();
        assert_eq!(health.liveness(), Ok(()));

        health.stage_failed("fatal producer error");
        assert_eq!(
            health.liveness().unwrap_err(),
            "the stage is stopping: fatal producer error"
        );
    }
}
