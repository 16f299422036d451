//! A plugin instance bound to one thread of work: reused across messages,
//! replaced after a failure.

use std::sync::Arc;

use wasmtime::{Store, Trap};

use super::contract::{Message, MessageHandler, Verdict};
use super::error::{FailureKind, PluginFailure};
use super::host_state::WorkerState;
use super::limits::PluginLimits;
use super::plugin::Plugin;
use super::runtime::EPOCH_TICK;
use crate::capability::CallerMessage;
use crate::observe::{TRACEPARENT_HEADER, TraceParent};

/// Calls one plugin version through its own instance.
///
/// Instantiating costs far more than a call (see TOOLCHAIN.md), so the
/// instance lives as long as it behaves. After any failed call it is dropped
/// (a trapped instance cannot be entered again) and the next call gets a
/// fresh one from the pre-linked component.
///
/// An instance is also replaced, between calls, once its memory has grown
/// past halfway from its size after start-up to the memory cap. Guest
/// runtimes leak: componentize-py a little per returned byte, StarlingMonkey
/// (JavaScript) some GC memory per call, so such a plugin would otherwise hit
/// the cap every few hundred thousand (Python) or tens of thousands
/// (JavaScript) messages and fail an attempt that did nothing wrong.
pub struct PluginWorker {
    plugin: Plugin,
    live: Option<LiveInstance>,
    instances_created: u64,
}

struct LiveInstance {
    store: Store<WorkerState>,
    bindings: MessageHandler,
    /// Memory size at which this instance is retired before its next call.
    retire_at_bytes: usize,
}

impl LiveInstance {
    fn worn_out(&self) -> bool {
        self.store.data().limiter.largest_memory_bytes() >= self.retire_at_bytes
    }
}

impl PluginWorker {
    pub(crate) fn new(plugin: Plugin) -> Self {
        PluginWorker {
            plugin,
            live: None,
            instances_created: 0,
        }
    }

    /// The plugin version this worker runs.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// How many instances this worker has made: 1 after the first call, one
    /// more after each failure or memory-driven replacement. Lets callers
    /// observe instance reuse.
    pub fn instances_created(&self) -> u64 {
        self.instances_created
    }

    /// Create the instance now rather than on the first message, so a plugin
    /// that cannot start is found before any message depends on it.
    pub fn warm_up(&mut self) -> Result<(), PluginFailure> {
        if self.live.is_none() {
            let deadline = Deadline::message(self.plugin.limits());
            self.live = Some(self.instantiate(deadline)?);
        }
        Ok(())
    }

    /// Ask the plugin for its verdict on one message, within the
    /// per-message deadline ([`PluginLimits::deadline_ms`]).
    pub fn handle(&mut self, message: &Message) -> Result<Verdict, PluginFailure> {
        let deadline = Deadline::message(self.plugin.limits());
        let caller = CallerMessage {
            topic: message.topic.clone(),
            partition: message.partition,
            offset: message.offset,
            trace: message
                .headers
                .iter()
                .rev()
                .find(|header| header.name == TRACEPARENT_HEADER)
                .and_then(|header| TraceParent::parse(&header.value)),
        };
        self.call(deadline, Some(caller), |bindings, store| {
            bindings.call_handle(store, message)
        })
    }

    /// Ask the plugin for one verdict per message, in order, in one call,
    /// within the batch deadline ([`PluginLimits::batch_deadline_ms`]).
    pub fn handle_batch(&mut self, messages: &[Message]) -> Result<Vec<Verdict>, PluginFailure> {
        let deadline = Deadline::batch(self.plugin.limits(), messages.len());
        let verdicts = self.call(deadline, None, |bindings, store| {
            bindings.call_handle_batch(store, messages)
        })?;
        if verdicts.len() != messages.len() {
            return Err(PluginFailure {
                kind: FailureKind::ContractViolation,
                reason: format!(
                    "plugin broke the contract: handle-batch returned {} verdicts for {} messages",
                    verdicts.len(),
                    messages.len()
                ),
            });
        }
        Ok(verdicts)
    }

    fn call<R>(
        &mut self,
        deadline: Deadline,
        message: Option<CallerMessage>,
        call: impl FnOnce(&MessageHandler, &mut Store<WorkerState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginFailure> {
        if self.live.as_ref().is_some_and(LiveInstance::worn_out) {
            tracing::debug!(
                plugin = self.plugin.name(),
                "plugin instance grew past half its memory headroom; replacing it"
            );
            self.live = None;
        }
        self.warm_up()?;
        let live = self.live.as_mut().expect("instance was just created");
        live.store.set_epoch_deadline(deadline_ticks(deadline.ms));
        live.store.data_mut().begin_call(deadline.instant(), message);
        let result = call(&live.bindings, &mut live.store);
        let stderr = live.store.data_mut().end_call();
        let refused_memory = live.store.data().limiter.refused_growth();
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                let failure = self.describe_failure(&error, refused_memory, &stderr, deadline);
                tracing::debug!(plugin = self.plugin.name(), reason = %failure.reason, "plugin call failed; its instance is discarded");
                self.live = None;
                Err(failure)
            }
        }
    }

    fn instantiate(&mut self, deadline: Deadline) -> Result<LiveInstance, PluginFailure> {
        let pre = self.plugin.pre();
        let state = WorkerState::new(Arc::clone(self.plugin.identity()), self.plugin.limits().memory_bytes());
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(deadline_ticks(deadline.ms));
        store.data_mut().begin_call(deadline.instant(), None);
        let instantiated = pre.instantiate(&mut store);
        let stderr = store.data_mut().end_call();
        let refused_memory = store.data().limiter.refused_growth();
        let bindings = instantiated.map_err(|error| {
            let mut failure = self.describe_failure(&error, refused_memory, &stderr, deadline);
            failure.reason = format!("plugin failed to start: {}", failure.reason);
            failure
        })?;
        self.instances_created += 1;
        let limiter = &store.data().limiter;
        let started_at = limiter.largest_memory_bytes();
        let retire_at_bytes = started_at + limiter.cap_bytes().saturating_sub(started_at) / 2;
        Ok(LiveInstance {
            store,
            bindings,
            retire_at_bytes,
        })
    }

    /// `refused_memory`: whether the store's limiter refused a grow during
    /// the failed call, which makes the failure a memory-cap hit whatever
    /// trap the guest raised afterwards.
    fn describe_failure(
        &self,
        error: &wasmtime::Error,
        refused_memory: bool,
        stderr: &[String],
        deadline: Deadline,
    ) -> PluginFailure {
        let limits = self.plugin.limits();
        if refused_memory {
            return PluginFailure {
                kind: FailureKind::MemoryLimit,
                reason: format!("plugin exceeded its {} MiB memory limit", limits.memory_mib),
            };
        }
        let trap = error.downcast_ref::<Trap>();
        if trap == Some(&Trap::Interrupt) {
            return PluginFailure {
                kind: FailureKind::Deadline,
                reason: deadline.exceeded(limits),
            };
        }
        let cause = match trap {
            Some(trap) => trap.to_string(),
            None => error.to_string(),
        };
        let cause = cause.strip_prefix("wasm trap: ").unwrap_or(&cause);
        PluginFailure {
            kind: FailureKind::Trap,
            reason: with_guest_output(format!("plugin trapped: {cause}"), stderr),
        }
    }
}

/// The wall-clock limit of one call, and what it was computed from, for
/// the failure reason.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    ms: u64,
    /// `Some(n)` for a `handle-batch` call on `n` messages.
    batch_of: Option<usize>,
}

impl Deadline {
    fn message(limits: &PluginLimits) -> Self {
        Deadline {
            ms: limits.deadline_ms,
            batch_of: None,
        }
    }

    fn batch(limits: &PluginLimits, messages: usize) -> Self {
        Deadline {
            ms: limits.batch_deadline_ms(messages),
            batch_of: Some(messages),
        }
    }

    /// When a call starting now must end: what its requests are bounded by.
    fn instant(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + std::time::Duration::from_millis(self.ms)
    }

    /// "plugin exceeded its 200 ms deadline", or for a batch how its
    /// deadline came about, so an operator can tell a slow plugin from a
    /// cap set too low.
    fn exceeded(&self, limits: &PluginLimits) -> String {
        match self.batch_of {
            None => format!("plugin exceeded its {} ms deadline", self.ms),
            Some(messages) => format!(
                "plugin exceeded its {} ms deadline for a batch of {messages} messages \
                 ({} ms per message, at most {} ms per batch)",
                self.ms,
                limits.deadline_ms,
                limits.batch_deadline_cap_ms.max(limits.deadline_ms)
            ),
        }
    }
}

/// A deadline in epoch ticks, rounded up plus one: the current tick may be
/// nearly over, and a call must never be cut off before its deadline.
///
/// At most half the epoch range, whatever the tick length: wasmtime adds
/// the ticks to the current epoch unchecked, and a sum that wrapped would
/// put the deadline in the past, so a call with an absurd deadline (`sluice
/// test --deadline-ms` takes any number) would be interrupted at once.
fn deadline_ticks(deadline_ms: u64) -> u64 {
    let tick_ms = EPOCH_TICK.as_millis() as u64;
    deadline_ms.div_ceil(tick_ms).saturating_add(1).min(u64::MAX / 2)
}

/// Append what the guest printed to stderr during the call (a Rust panic
/// message, a Python exception) minus boilerplate, capped in length.
fn with_guest_output(reason: String, stderr: &[String]) -> String {
    const MAX_GUEST_OUTPUT: usize = 1024;
    let printed = stderr
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join(" ");
    if printed.is_empty() {
        return reason;
    }
    let printed = match printed.char_indices().rev().nth(MAX_GUEST_OUTPUT) {
        Some((cut, _)) => format!("…{}", &printed[cut..]),
        None => printed,
    };
    format!("{reason} (guest stderr: {printed})")
}

#[cfg(test)]
mod tests {
    use super::{Deadline, PluginLimits, deadline_ticks};

    #[test]
    fn deadlines_round_up_to_whole_ticks_and_never_wrap() {
        assert_eq!(deadline_ticks(1), 2);
        assert_eq!(deadline_ticks(10), 2);
        assert_eq!(deadline_ticks(11), 3);
        let longest = deadline_ticks(u64::MAX);
        assert!((u64::MAX / 20..=u64::MAX / 2).contains(&longest), "{longest}");
    }

    #[test]
    fn a_blown_batch_deadline_says_how_it_was_computed() {
        let limits = PluginLimits {
            deadline_ms: 20,
            batch_deadline_cap_ms: 1000,
            ..PluginLimits::default()
        };
        assert_eq!(
            Deadline::message(&limits).exceeded(&limits),
            "plugin exceeded its 20 ms deadline"
        );
        assert_eq!(
            Deadline::batch(&limits, 10).exceeded(&limits),
            "plugin exceeded its 200 ms deadline for a batch of 10 messages (20 ms per message, at most 1000 ms per batch)"
        );
        assert_eq!(Deadline::batch(&limits, 100).ms, 1000);
    }
}
