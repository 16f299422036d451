//! A partition's way to the plugin: the version serving now, called on the
//! plugin's call threads, a batch at a time.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use tokio::sync::Semaphore;

use super::counters::StageCounters;
use super::instance_pool::InstancePool;
use super::supervision::panic_message;
use crate::plugin::{FailureKind, Message, Plugin, PluginFailure, PluginSlot, PluginWorker, Verdict};

/// What one call gave back: the messages, a result for each (possibly
/// fewer, see [`PluginCaller::call`]) and the version that produced them,
/// which the outputs and dead-letter records must name.
pub(crate) struct Called {
    pub(crate) messages: Vec<Message>,
    pub(crate) results: Vec<Result<Verdict, PluginFailure>>,
    pub(crate) plugin: Plugin,
}

/// Calls the slot's current version with an instance borrowed from the
/// stage's pool; a new version is taken up only between calls, so a batch
/// is handled start to finish by one version. Cheap to clone: each running
/// call of a partition holds its own.
#[derive(Clone)]
pub(crate) struct PluginCaller {
    slot: Arc<PluginSlot>,
    /// Bounds plugin calls running at once across partitions.
    permits: Arc<Semaphore>,
    /// The stage's instances, one borrowed per call.
    instances: Arc<InstancePool>,
    /// Where call durations go.
    counters: Arc<StageCounters>,
}

impl PluginCaller {
    pub(crate) fn new(
        slot: Arc<PluginSlot>,
        permits: Arc<Semaphore>,
        instances: Arc<InstancePool>,
        counters: Arc<StageCounters>,
    ) -> Self {
        PluginCaller {
            slot,
            permits,
            instances,
            counters,
        }
    }

    /// Run the plugin as a task on its call threads (Wasm that computes must
    /// not hold up the stage's runtime; one that waits parks there without
    /// a thread). After a failed batch the messages are retried one by one
    /// to find the culprit, stopping at it, so there may be fewer results
    /// than messages. A panic in the host during the call is caught: it
    /// fails the message it happened on (a failed attempt,
    /// `FailureKind::HostPanic`) and the instance is replaced.
    ///
    /// Dropping the returned future while the call runs (the worker is
    /// stopping) abandons the call: it runs to its end (its deadline bounds
    /// it) without anyone waiting for its results, then gives its instance
    /// back like any call.
    pub(crate) async fn call(self, messages: Vec<Message>) -> Called {
        let PluginCaller {
            slot,
            permits,
            instances,
            counters,
        } = self;
        let permit = permits
            .acquire_owned()
            .await
            .expect("the plugin-call semaphore is never closed");
        let current = slot.current();
        let generation = current.generation;
        let mut worker = instances.borrow(generation, || current.plugin.worker());
        let plugin = current.plugin;
        let called_version = plugin.clone();
        let call_threads = plugin.call_threads_handle();
        let (messages, results) = call_threads
            .spawn(async move {
                // Held until the call ends, even one whose caller has gone, so
                // no more calls (and instances) run than the permits allow.
                let _permit = permit;
                let started = Instant::now();
                let called = AssertUnwindSafe(call_in_order(&mut worker, &messages))
                    .catch_unwind()
                    .await;
                let elapsed = started.elapsed();
                let results = match called {
                    Ok(results) => {
                        instances.give_back(generation, slot.generation(), worker);
                        results
                    }
                    Err(panic) => {
                        let reason = format!("the host panicked calling the plugin: {}", panic_message(&*panic));
                        tracing::error!(%reason, "plugin call panicked; the message counts as a failed attempt");
                        // The instance may be half-way through a call: it is
                        // dropped, and a later call starts a fresh one.
                        drop(worker);
                        vec![Err(PluginFailure {
                            kind: FailureKind::HostPanic,
                            reason,
                        })]
                    }
                };
                counters.plugin_call(elapsed, &results);
                slot.record(called_version.version(), &results);
                (messages, results)
            })
            .await
            .expect("the call threads live as long as a plugin, and a panic in a call is caught");
        Called {
            messages,
            results,
            plugin,
        }
    }
}

/// Call the plugin on `messages`: as one batch when there are several
/// (unless the plugin calls out, see [`Plugin::calls_out`]); if the batch
/// fails, one by one up to and including the first failure.
///
/// [`Plugin::calls_out`]: crate::plugin::Plugin::calls_out
///
/// A fallback costs the batch's work twice, so it is counted
/// (`sluice_batch_fallbacks_total`, by failure kind) and logged: at warn the
/// first time for each plugin version, at debug after, so a version whose
/// every batch fails is noticed without a warning per batch.
async fn call_in_order(plugin: &mut PluginWorker, messages: &[Message]) -> Vec<Result<Verdict, PluginFailure>> {
    if messages.len() > 1 && !plugin.plugin().calls_out() {
        match plugin.handle_batch(messages).await {
            Ok(verdicts) => return verdicts.into_iter().map(Ok).collect(),
            Err(failure) => {
                metrics::counter!(crate::observe::metrics::BATCH_FALLBACKS, "kind" => failure.kind.label())
                    .increment(1);
                let version = plugin.plugin().version();
                let batch = messages.len();
                if plugin.plugin().first_batch_fallback() {
                    tracing::warn!(
                        %version,
                        batch,
                        reason = %failure.reason,
                        "batch call failed; handling its messages one by one (logged once per plugin version, later ones at debug)"
                    );
                } else {
                    tracing::debug!(%version, batch, reason = %failure.reason, "batch call failed; handling its messages one by one");
                }
            }
        }
    }
    let mut results = Vec::with_capacity(messages.len());
    for message in messages {
        let result = plugin.handle(message).await;
        let stop = !matches!(result, Ok(Verdict::Success(_)) | Ok(Verdict::DeadLetter(_)));
        results.push(result);
        if stop {
            break;
        }
    }
    results
}
