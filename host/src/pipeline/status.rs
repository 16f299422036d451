//! What a running stage reports through `/healthz`, `/readyz` and
//! `/stats`.

use std::sync::Arc;

use serde_json::json;

use super::breaker::Breaker;
use super::counters::StageCounters;
use super::degraded::DegradedCheck;
use super::memory_budget::MemoryUse;
use super::rate_limit::RateLimit;
use crate::config::{ConsumerProfile, MessageOrder};
use crate::observe::{Health, PartitionBoard, StatusSource};
use crate::plugin::PluginSlot;

/// The stage's answer to the status endpoints, read from the live counters.
pub(crate) struct StageStatus {
    pub(crate) stage_name: String,
    pub(crate) profile: Option<ConsumerProfile>,
    pub(crate) counters: Arc<StageCounters>,
    pub(crate) plugin: Arc<PluginSlot>,
    pub(crate) health: Arc<Health>,
    pub(crate) partitions: Arc<PartitionBoard>,
    pub(crate) memory: Arc<MemoryUse>,
    pub(crate) rate_limit: Option<Arc<RateLimit>>,
    pub(crate) breaker: Option<Arc<Breaker>>,
    pub(crate) degraded: Arc<DegradedCheck>,
    pub(crate) ordering: MessageOrder,
    pub(crate) calls_per_partition: usize,
}

impl StatusSource for StageStatus {
    fn liveness(&self) -> Result<(), String> {
        self.health.liveness()
    }

    /// Not ready while the breaker is open: the stage takes no messages.
    fn readiness(&self) -> Result<(), String> {
        let breaker = self.breaker.as_ref().and_then(|breaker| breaker.open_reason());
        match (self.health.readiness(), breaker) {
            (Ok(()), None) => Ok(()),
            (Err(missing), None) => Err(missing),
            (Ok(()), Some(open)) => Err(open),
            (Err(missing), Some(open)) => Err(format!("{missing}; {open}")),
        }
    }

    fn degraded(&self) -> Vec<String> {
        self.degraded.reasons()
    }

    fn stats(&self) -> serde_json::Value {
        let totals = self.counters.snapshot();
        let uptime = self.health.uptime().as_secs_f64();
        let plugin = self.plugin.current().plugin;
        let reloads = self.plugin.stats();
        json!({
            "stage": self.stage_name,
            "profile": self.profile,
            "uptime_seconds": round(uptime),
            "received": totals.received,
            "processed": totals.finished,
            "outputs": totals.outputs,
            "filtered": totals.filtered,
            "retried": totals.retries,
            "failed_attempts": totals.failed_attempts,
            "delivery_failures": totals.delivery_failures,
            "dead_lettered": totals.dead_lettered,
            "deduplicated": totals.deduplicated,
            "dedup_store_errors": totals.store_errors,
            "dedup_claim_waits": totals.claim_waits,
            "dedup_claim_takeovers": totals.claim_takeovers,
            "dedup_claims_lost": totals.claims_lost,
            "processed_per_second": if uptime > 0.0 { round(totals.finished as f64 / uptime) } else { 0.0 },
            "plugin_latency": self.counters.plugin_latency(),
            "plugin": {
                "name": plugin.name(),
                "version": plugin.version().full(),
                "reloads": reloads.reloads,
                "rejected_files": reloads.rejected,
                "rolled_back": reloads.rolled_back,
            },
            "assigned_partitions": self.health.assigned_partitions(),
            "partitions": self.partitions.snapshot(),
            "init_attempts": self.health.init_attempts(),
            "startup": self.health.startup_steps(),
            "connection_errors": self.health.connection_errors(),
            "consumer_recreations": self.health.consumer_recreations(),
            "memory": self.memory.report(),
            "rate_limit": self.rate_limit.as_ref().map(|limit| limit.report()),
            "ordering": self.ordering,
            "calls_per_partition": self.calls_per_partition,
            "breaker": self.breaker.as_ref().map(|breaker| breaker.report()),
            "degraded": self.degraded(),
        })
    }
}

fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
