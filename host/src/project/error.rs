use std::io;
use std::path::PathBuf;

/// Why a project could not be created or built. Each message says what to
/// do about it; a failed toolchain step names the step, its own output has
/// already been shown as the tool printed it.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(
        "{dir}: no handler found; expected Cargo.toml (Rust), pyproject.toml or handler.py (Python), \
         or package.json or handler.js (JavaScript). Create a project with `sluice new {dir} --lang rust|python|js`"
    )]
    NoHandler { dir: PathBuf },

    #[error("{dir}: holds handlers in several languages ({found}); say which to build with --lang")]
    SeveralLanguages { dir: PathBuf, found: String },

    #[error("{dir}: has no {file}; the component is built from it")]
    NoHandlerFile { dir: PathBuf, file: &'static str },

    #[error("{path}: the path is not UTF-8, which a JavaScript build needs; move the project to a path that is")]
    NotText { path: PathBuf },

    #[error("{dir}: is not a folder")]
    NotAFolder { dir: PathBuf },

    #[error("{path}: {reason}")]
    Manifest { path: PathBuf, reason: String },

    #[error("{path} already exists; `sluice new` writes into a new or empty folder only")]
    AlreadyExists { path: PathBuf },

    #[error("{name:?} cannot name a handler: {reason} (choose one with --name)")]
    InvalidName { name: String, reason: &'static str },

    #[error("`{tool}` was not found: {hint}")]
    ToolMissing { tool: &'static str, hint: &'static str },

    #[error("{0}")]
    ToolTooOld(String),

    #[error("{step} failed ({status}); its output is above")]
    StepFailed { step: String, status: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("the build produced {path}, which is not a plugin sluice can run: {reason}")]
    NotAPlugin { path: PathBuf, reason: String },
}

impl ProjectError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ProjectError {
        let context = context.into();
        move |source| ProjectError::Io { context, source }
    }
}
