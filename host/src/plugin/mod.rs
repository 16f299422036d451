//! The plugin runtime: Wasmtime, the contract, limits and instances.
//!
//! [`PluginRuntime`] owns the process's engine and turns a `.wasm` file into
//! a [`Plugin`]: compiled once (and cached on disk by content hash),
//! checked against the `message-handler` world, and pre-linked. Each call
//! under way takes a [`PluginWorker`], which keeps one instance and calls
//! `handle` / `handle-batch` on it, asynchronously on the runtime's own
//! call threads (a blocking form serves the CLI and tests). A trap, a blown
//! deadline or a memory-cap hit comes back as a [`PluginFailure`] with a
//! readable reason; the worker replaces the instance and carries on. A [`PluginSlot`] holds the version
//! serving now; a [`PluginWatcher`] swaps new versions into it.
//!
//! This module knows nothing of Kafka: messages and verdicts are the
//! contract's own types.

mod cache;
mod call_threads;
mod contract;
mod error;
mod guest_output;
mod host_state;
mod inspect;
mod limits;
#[allow(clippy::module_inception)]
mod plugin;
mod reload;
mod runtime;
mod worker;

pub use contract::{Header, Message, Output, REQUIRED_EXPORTS, RetryInfo, Verdict, WORLD};
pub use error::{FailureKind, LoadError, PluginFailure};
pub use inspect::{WasmKind, wasm_kind};
pub use limits::PluginLimits;
pub use plugin::{Plugin, PluginVersion};
pub use reload::{CurrentPlugin, PluginSlot, PluginWatcher, ReloadSettings, ReloadStats, WatchError};
pub use runtime::{PluginRuntime, PluginSettings};
pub use worker::PluginWorker;
