//! Shared helpers for sluice's end-to-end tests: where the built plugins and
//! the `sluice` binary are, and a runtime with a private cache.
//!
//! `scripts/test` builds the guest plugins and the binary before running
//! the tests; run it once, then `cargo test --release` alone works too.

pub mod broker;
pub mod http;
pub mod kafka;
pub mod lookup_service;
pub mod process;
pub mod redis;
pub mod stage;
pub mod timing;
pub mod tls;

use std::path::{Path, PathBuf};

use sluice::plugin::{Message, PluginRuntime};
use tempfile::TempDir;

/// The repository root.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
}

/// A language plugins are written in; each has its built plugins in
/// `plugins/dist/<folder>/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
    JavaScript,
}

impl Language {
    pub const ALL: [Language; 3] = [Language::Rust, Language::Python, Language::JavaScript];

    /// The folder under `plugins/dist` (and `plugins/`) for this language.
    pub fn folder(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::JavaScript => "js",
        }
    }

    /// A built plugin in this language, by name (`uppercase`, `json-enrich`).
    pub fn plugin(self, name: &str) -> PathBuf {
        let path = workspace_root()
            .join("plugins/dist")
            .join(self.folder())
            .join(format!("{name}.wasm"));
        assert!(
            path.is_file(),
            "{} is missing: build the guest plugins first with scripts/build-plugins",
            path.display()
        );
        path
    }
}

/// A built Rust guest plugin, by crate name (`uppercase`, `trap-on-marker`).
pub fn rust_plugin(name: &str) -> PathBuf {
    Language::Rust.plugin(name)
}

/// A built Python plugin, by folder name under `plugins/python` (or
/// `plugins/python/testing`).
pub fn python_plugin(name: &str) -> PathBuf {
    Language::Python.plugin(name)
}

/// A built JavaScript plugin, by folder name under `plugins/js` (or
/// `plugins/js/testing`).
pub fn js_plugin(name: &str) -> PathBuf {
    Language::JavaScript.plugin(name)
}

/// A compiled-plugin cache shared by every test run in this target
/// directory. Python and JavaScript components take seconds each to compile
/// (Rust ones milliseconds); sharing the cache compiles each one once rather
/// than once per test. Entries are keyed by the file's SHA-256 and the
/// engine's settings, so sharing cannot serve a stale artifact. Tests of the
/// cache itself use private directories instead.
pub fn shared_plugin_cache() -> PathBuf {
    let dir = profile_dir().join("test-plugin-cache");
    std::fs::create_dir_all(&dir).expect("shared plugin cache directory");
    dir
}

/// A test fixture under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(name)
}

/// `target/<profile>`, where this test's executable was built.
fn profile_dir() -> PathBuf {
    let test_exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    test_exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_owned()
}

/// The `sluice` binary built in the same profile as this test.
pub fn sluice_bin() -> PathBuf {
    let binary = profile_dir().join(format!("sluice{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: build it first with `cargo build --release --bin sluice` (scripts/test does)",
        binary.display()
    );
    binary
}

/// A plugin runtime caching compiled plugins in its own temporary
/// directory, so tests neither share nor pollute the user's cache.
pub struct TestRuntime {
    pub runtime: PluginRuntime,
    pub cache_dir: TempDir,
}

impl TestRuntime {
    pub fn new() -> Self {
        let cache_dir = TempDir::new().expect("temporary cache directory");
        let runtime = PluginRuntime::new(Some(cache_dir.path())).expect("plugin runtime");
        TestRuntime { runtime, cache_dir }
    }
}

impl Default for TestRuntime {
    fn default() -> Self {
        TestRuntime::new()
    }
}

/// A first-attempt message with a text value on `input` partition 0.
pub fn text_message(offset: i64, value: &str) -> Message {
    Message::new("input", 0, offset, Some(value.as_bytes().to_vec()))
}

/// A message with this Kafka key and nothing else: what the stage's dedup
/// key maker sees of a message when keys are `message-key`.
pub fn keyed_message(key: &str) -> Message {
    Message {
        key: Some(key.as_bytes().to_vec()),
        ..Message::new("input", 0, 0, None)
    }
}

/// A plugin file's version as sluice reports it: its SHA-256 in hex.
pub fn file_sha256(path: &Path) -> String {
    let output = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    String::from_utf8(output.stdout)
        .expect("sha256sum prints text")
        .split_whitespace()
        .next()
        .expect("a hash")
        .to_owned()
}
