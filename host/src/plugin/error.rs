//! Errors of the plugin runtime: loading a plugin, and a call that failed.

use std::path::PathBuf;

/// Why a plugin file could not be loaded. Each variant's message says what
/// is wrong with the file and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: no such file")]
    NotFound { path: PathBuf },
    #[error("{path}: is a directory, not a plugin file")]
    IsDirectory { path: PathBuf },
    #[error("{path}: cannot be read: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{path}: is empty")]
    Empty { path: PathBuf },
    #[error("{path}: is not a WebAssembly file (it does not start with the `\\0asm` magic bytes)")]
    NotWasm { path: PathBuf },
    #[error(
        "{path}: is a core WebAssembly module, not a component; build it as a component \
         (Rust: `cargo build --target wasm32-wasip2`; or wrap it with `wasm-tools component new`)"
    )]
    CoreModule { path: PathBuf },
    #[error("{path}: is not a valid WebAssembly component: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: does not implement {world}: {reason}")]
    WrongWorld {
        path: PathBuf,
        world: &'static str,
        reason: String,
    },
    #[error(
        "{path}: imports `{import}` ({capability}), which this stage does not grant: \
         add [{key}] to the stage file to allow it"
    )]
    NotGranted {
        path: PathBuf,
        import: String,
        capability: String,
        key: &'static str,
    },
    #[error("{path}: cannot set up its grant: `{key}` {reason}")]
    Grant { path: PathBuf, key: String, reason: String },
    #[error("{path}: needs imports sluice does not provide: {reason}")]
    UnsatisfiedImports { path: PathBuf, reason: String },
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// How a plugin call failed. The pipeline treats every kind as a failed
/// attempt (retried, then dead-lettered), so the kind matters for metrics
/// and rollback decisions, and the reason for the dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped: a panic, an exception, `unreachable`, a bad access.
    Trap,
    /// The call ran past its wall-clock deadline and was interrupted.
    Deadline,
    /// The guest asked for more memory than its cap.
    MemoryLimit,
    /// The guest returned something the contract forbids (such as the wrong
    /// number of verdicts for a batch).
    ContractViolation,
    /// The host panicked while calling the plugin (a bug in sluice, or in
    /// the runtime): caught, and treated like a trap so the message is
    /// retried and then dead-lettered instead of stalling its partition.
    HostPanic,
}

impl FailureKind {
    /// The kind as a metric label: `trap`, `deadline`, `memory_limit`,
    /// `contract_violation`, `host_panic`.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::ContractViolation => "contract_violation",
            FailureKind::HostPanic => "host_panic",
        }
    }
}

/// A failed plugin call, with a reason fit for a log line or a dead-letter
/// header: "plugin exceeded its 1000 ms deadline", "plugin trapped: ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PluginFailure {
    pub kind: FailureKind,
    pub reason: String,
}
