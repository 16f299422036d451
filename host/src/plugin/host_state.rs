//! What each plugin instance's store holds, and the host functions the
//! contract lets a plugin import (logging, its own config).

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capability::keyvalue::{KeyValueAccess, KeyValueGrant, KeyValueView};
use crate::capability::{CallerMessage, HttpGrant, OutboundHttp};

use super::contract::sluice::plugin::{config, logging, types};
use super::guest_output::{GuestOutput, GuestStream};
use super::limits::MemoryLimiter;

/// Who a plugin is, shared by all its instances: used to tag its logs and
/// to answer its config reads.
#[derive(Debug)]
pub(crate) struct PluginIdentity {
    pub(crate) name: Arc<str>,
    pub(crate) version: Arc<str>,
    pub(crate) config: BTreeMap<String, String>,
    /// The stage's HTTP grant with its secrets, when it grants HTTP.
    pub(crate) http: Option<Arc<HttpGrant>>,
    /// The stage's key-value grant over its backend, when it grants one.
    pub(crate) keyvalue: Option<Arc<KeyValueGrant>>,
}

/// Store data of one plugin instance.
pub(crate) struct WorkerState {
    wasi: WasiCtx,
    /// Shared by WASI and `wasi:http`: their resources refer to each other.
    table: ResourceTable,
    http: WasiHttpCtx,
    /// Applies the stage's grant to every request the plugin makes.
    outbound: OutboundHttp,
    /// Applies the stage's grant to every key-value operation.
    keyvalue: KeyValueAccess,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) stderr: GuestOutput,
    stdout: GuestOutput,
    identity: Arc<PluginIdentity>,
    /// When the call under way must end; the epoch callback interrupts
    /// the guest once it has passed.
    call_deadline: Option<tokio::time::Instant>,
}

impl WorkerState {
    /// A sandbox with nothing granted but what the stage grants: no
    /// preopened directories, no environment variables or arguments, no
    /// sockets or name lookups; clocks, randomness, the log-forwarding
    /// stdout/stderr, and HTTP requests and key-value buckets only as the
    /// stage's grant allows.
    pub(crate) fn new(identity: Arc<PluginIdentity>, memory_cap_bytes: usize) -> Self {
        let stdout = GuestOutput::new(GuestStream::Stdout, identity.name.clone());
        let stderr = GuestOutput::new(GuestStream::Stderr, identity.name.clone());
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        WorkerState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHttp::new(identity.http.clone(), identity.name.clone()),
            keyvalue: KeyValueAccess::new(identity.keyvalue.clone(), identity.name.clone()),
            limiter: MemoryLimiter::new(memory_cap_bytes),
            stdout,
            stderr,
            identity,
            call_deadline: None,
        }
    }

    /// Reset per-call bookkeeping before a call into the guest.
    /// `deadline` bounds the requests the call makes; `message` is what
    /// they are about (none for a batch).
    pub(crate) fn begin_call(&mut self, deadline: tokio::time::Instant, message: Option<CallerMessage>) {
        self.call_deadline = Some(deadline);
        self.outbound.begin_call(deadline, message);
        self.keyvalue.begin_call(deadline);
        self.limiter.reset();
        self.stdout.begin_call();
        self.stderr.begin_call();
    }

    /// The view the `wasi:keyvalue` host functions work through.
    pub(crate) fn keyvalue(&mut self) -> KeyValueView<'_> {
        KeyValueView {
            access: &mut self.keyvalue,
            table: &mut self.table,
        }
    }

    /// Whether the call under way has run past its deadline.
    pub(crate) fn call_overdue(&self) -> bool {
        self.call_deadline
            .is_some_and(|deadline| tokio::time::Instant::now() >= deadline)
    }

    /// Flush partial output lines after a call; returns the call's stderr.
    pub(crate) fn end_call(&mut self) -> Vec<String> {
        self.call_deadline = None;
        self.stdout.end_call();
        self.stderr.end_call()
    }
}

impl WasiView for WorkerState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for WorkerState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.outbound,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

impl types::Host for WorkerState {}

impl logging::Host for WorkerState {
    fn log(&mut self, level: logging::Level, message: String) {
        let plugin = &*self.identity.name;
        let version = &*self.identity.version;
        match level {
            logging::Level::Trace => tracing::trace!(target: "sluice::plugin::guest", plugin, version, "{message}"),
            logging::Level::Debug => tracing::debug!(target: "sluice::plugin::guest", plugin, version, "{message}"),
            logging::Level::Info => tracing::info!(target: "sluice::plugin::guest", plugin, version, "{message}"),
            logging::Level::Warn => tracing::warn!(target: "sluice::plugin::guest", plugin, version, "{message}"),
            logging::Level::Error => tracing::error!(target: "sluice::plugin::guest", plugin, version, "{message}"),
        }
    }
}

impl config::Host for WorkerState {
    fn get(&mut self, key: String) -> Option<String> {
        self.identity.config.get(&key).cloned()
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        self.identity
            .config
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }
}
