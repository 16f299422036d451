//! A plugin instance serving one call at a time: reused across calls,
//! replaced after a failure.

use std::sync::Arc;

use wasmtime::{Store, StoreContextMut, Trap, UpdateDeadline};

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
///
/// Calls are async: await them on the plugin's call threads (the stage
/// spawns them there), or use the `_blocking` forms from a thread outside
/// any async runtime.
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
    pub async fn warm_up(&mut self) -> Result<(), PluginFailure> {
        if self.live.is_none() {
            let deadline = Deadline::message(self.plugin.limits());
            self.live = Some(self.instantiate(deadline).await?);
        }
        Ok(())
    }

    /// Ask the plugin for its verdict on one message, within the
    /// per-message deadline ([`PluginLimits::deadline_ms`]).
    pub async fn handle(&mut self, message: &Message) -> Result<Verdict, PluginFailure> {
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
        let (mut live, ends_at) = self.begin_call(deadline, Some(caller)).await?;
        let outcome = within(ends_at, live.bindings.call_handle(&mut live.store, message)).await;
        self.end_call(live, outcome, deadline)
    }

    /// Ask the plugin for one verdict per message, in order, in one call,
    /// within the batch deadline ([`PluginLimits::batch_deadline_ms`]).
    pub async fn handle_batch(&mut self, messages: &[Message]) -> Result<Vec<Verdict>, PluginFailure> {
        let deadline = Deadline::batch(self.plugin.limits(), messages.len());
        let (mut live, ends_at) = self.begin_call(deadline, None).await?;
        let outcome = within(ends_at, live.bindings.call_handle_batch(&mut live.store, messages)).await;
        let verdicts = self.end_call(live, outcome, deadline)?;
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

    /// [`PluginWorker::warm_up`] from code that is not async (the CLI,
    /// the reload trial, tests).
    pub fn warm_up_blocking(&mut self) -> Result<(), PluginFailure> {
        let plugin = self.plugin.clone();
        plugin.call_threads().block_on(self.warm_up())
    }

    /// [`PluginWorker::handle`] from code that is not async (the CLI,
    /// tests).
    pub fn handle_blocking(&mut self, message: &Message) -> Result<Verdict, PluginFailure> {
        let plugin = self.plugin.clone();
        plugin.call_threads().block_on(self.handle(message))
    }

    /// [`PluginWorker::handle_batch`] from code that is not async (the
    /// CLI, tests).
    pub fn handle_batch_blocking(&mut self, messages: &[Message]) -> Result<Vec<Verdict>, PluginFailure> {
        let plugin = self.plugin.clone();
        plugin.call_threads().block_on(self.handle_batch(messages))
    }

    /// The instance to call, ready for a call with `deadline`, which starts
    /// now (after any instantiation, which has a deadline of its own), and
    /// when the call must end.
    ///
    /// The instance is taken out of the worker for the call and put back by
    /// [`PluginWorker::end_call`] only if the call succeeded, so a call
    /// whose future is dropped half-way leaves no half-run instance behind.
    async fn begin_call(
        &mut self,
        deadline: Deadline,
        message: Option<CallerMessage>,
    ) -> Result<(LiveInstance, tokio::time::Instant), PluginFailure> {
        if self.live.as_ref().is_some_and(LiveInstance::worn_out) {
            tracing::debug!(
                plugin = self.plugin.name(),
                "plugin instance grew past half its memory headroom; replacing it"
            );
            self.live = None;
        }
        self.warm_up().await?;
        let mut live = self.live.take().expect("instance was just created");
        let ends_at = deadline.instant();
        live.store.data_mut().begin_call(ends_at, message);
        live.store.set_epoch_deadline(1);
        Ok((live, ends_at))
    }

    /// What a call begun with [`PluginWorker::begin_call`] came to. The
    /// instance serves again after a success; after a failure it is
    /// discarded.
    fn end_call<R>(
        &mut self,
        mut live: LiveInstance,
        outcome: wasmtime::Result<R>,
        deadline: Deadline,
    ) -> Result<R, PluginFailure> {
        let stderr = live.store.data_mut().end_call();
        let refused_memory = live.store.data().limiter.refused_growth();
        match outcome {
            Ok(value) => {
                self.live = Some(live);
                Ok(value)
            }
            Err(error) => {
                let failure = self.describe_failure(&error, refused_memory, &stderr, deadline);
                tracing::debug!(plugin = self.plugin.name(), reason = %failure.reason, "plugin call failed; its instance is discarded");
                Err(failure)
            }
        }
    }

    async fn instantiate(&mut self, deadline: Deadline) -> Result<LiveInstance, PluginFailure> {
        let state = WorkerState::new(Arc::clone(self.plugin.identity()), self.plugin.limits().memory_bytes());
        let mut store = Store::new(self.plugin.pre().engine(), state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(interrupt_when_overdue);
        let ends_at = deadline.instant();
        store.data_mut().begin_call(ends_at, None);
        store.set_epoch_deadline(1);
        let instantiated = within(ends_at, self.plugin.pre().instantiate_async(&mut store)).await;
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
    /// An absurd deadline (`sluice test --deadline-ms` takes any number)
    /// ends in thirty years rather than overflowing the clock.
    fn instant(&self) -> tokio::time::Instant {
        later_by(tokio::time::Instant::now(), std::time::Duration::from_millis(self.ms))
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

/// `instant + duration`, or thirty years on where that would overflow.
fn later_by(instant: tokio::time::Instant, duration: std::time::Duration) -> tokio::time::Instant {
    const THIRTY_YEARS: std::time::Duration = std::time::Duration::from_secs(30 * 365 * 24 * 3600);
    instant.checked_add(duration).unwrap_or_else(|| instant + THIRTY_YEARS)
}

/// Run by wasmtime each epoch tick while the guest computes: a call past
/// its deadline traps (`Trap::Interrupt`), any other yields to the call
/// threads and goes on, so calls that compute take turns with the rest.
///
/// The yield is tokio's own: a task that yields that way is polled again
/// only after the runtime has polled its timers and sockets, so calls that
/// wait get their timers and responses on time even while every call
/// thread is busy computing (a plain wake-up would let a busy thread run
/// 61 slices of 10 ms before it looked).
fn interrupt_when_overdue(store: StoreContextMut<'_, WorkerState>) -> wasmtime::Result<UpdateDeadline> {
    Ok(match store.data().call_overdue() {
        true => UpdateDeadline::Interrupt,
        false => UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())),
    })
}

/// Bound a call that waits (a timer, a request, a key-value reply) as the
/// epoch bounds one that computes: the guest is not running while it waits,
/// so no tick can interrupt it. One tick of slack lets a computing guest
/// trap on its own. Dropping the call abandons it in the host function it
/// waits in; its instance is discarded like any failed one.
async fn within<R>(
    ends_at: tokio::time::Instant,
    call: impl Future<Output = wasmtime::Result<R>>,
) -> wasmtime::Result<R> {
    tokio::time::timeout_at(later_by(ends_at, EPOCH_TICK), call)
        .await
        .unwrap_or_else(|_elapsed| Err(Trap::Interrupt.into()))
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
    use super::{Deadline, PluginLimits, later_by};

    #[test]
    fn an_absurd_deadline_ends_far_off_instead_of_overflowing() {
        let now = tokio::time::Instant::now();
        let limits = PluginLimits {
            deadline_ms: u64::MAX,
            ..PluginLimits::default()
        };
        assert!(Deadline::message(&limits).instant() > now + std::time::Duration::from_secs(365 * 24 * 3600));
        assert_eq!(
            later_by(now, std::time::Duration::from_millis(10)),
            now + std::time::Duration::from_millis(10)
        );
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
