//! The one Wasmtime engine of the process and how plugin files become
//! ready-to-instantiate [`Plugin`]s.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, OptLevel};

use super::cache::CompiledCache;
use super::call_threads::CallThreads;
use super::contract::{MessageHandler, MessageHandlerPre, REQUIRED_EXPORTS, WORLD};
use super::error::LoadError;
use super::host_state::{PluginIdentity, WorkerState};
use super::inspect::{self, WasmKind};
use super::limits::PluginLimits;
use super::plugin::{LinkedComponent, Plugin, PluginVersion};
use crate::capability::{self, CapabilityGrants};

/// How often the engine's epoch advances: how often a computing guest is
/// checked against its deadline and yields to other calls. A call ends
/// within about a tick of its deadline, plus any time it waited for its
/// turn on a call thread.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How a stage wants one plugin set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginSettings {
    pub limits: PluginLimits,
    /// The plugin's own settings, readable through the `config` import.
    pub config: BTreeMap<String, String>,
    /// What the stage lets it reach (`[plugin.capabilities]`), enforced:
    /// a plugin importing a capability not granted here is refused. `None`
    /// loads it outside any stage (`sluice check`, `sluice build`, `sluice
    /// test`): its imports are reported, not refused, and every request it
    /// makes is denied.
    pub capabilities: Option<CapabilityGrants>,
}

impl PluginSettings {
    /// The settings a stage file gives its plugin.
    pub fn of_stage(section: &crate::config::PluginSection) -> Self {
        PluginSettings {
            limits: section.limits,
            config: section.config.clone(),
            capabilities: Some(section.capabilities.clone()),
        }
    }
}

/// Owns the process's Wasmtime engine, the linker with the host's imports,
/// the compiled-artifact cache, the epoch ticker behind call deadlines and
/// the threads calls run on.
///
/// Create one per process; loading plugins from it is cheap to share.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<WorkerState>,
    cache: Option<CompiledCache>,
    call_threads: Arc<CallThreads>,
    compilations: AtomicU64,
    _ticker: EpochTicker,
}

impl PluginRuntime {
    /// A runtime that caches compiled plugins in `cache_dir`, or keeps them
    /// only in memory when `None`. A cache directory that cannot be created
    /// is logged and ignored: caching is an optimisation, never a reason to
    /// refuse to run.
    pub fn new(cache_dir: Option<&Path>) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|error| LoadError::Engine(error.to_string()))?;

        // The async flavours throughout: a call that waits (a WASI timer, a
        // request, a key-value reply) parks its future instead of a thread.
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|error| LoadError::Engine(error.to_string()))?;
        // Linked for every plugin, like wasi:keyvalue below; a plugin that
        // imports either must be granted it (checked at load), and without
        // a grant every request and every bucket is denied.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|error| LoadError::Engine(error.to_string()))?;
        capability::keyvalue::add_to_linker(&mut linker, WorkerState::keyvalue)
            .map_err(|error| LoadError::Engine(error.to_string()))?;
        MessageHandler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|error| LoadError::Engine(error.to_string()))?;

        let cache = cache_dir.and_then(|dir| match CompiledCache::open(dir) {
            Ok(cache) => Some(cache),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot use the compiled-plugin cache; plugins will be compiled on every load");
                None
            }
        });

        let call_threads = CallThreads::start()
            .map_err(|error| LoadError::Engine(format!("cannot start the plugin call threads: {error}")))?;
        Ok(PluginRuntime {
            _ticker: EpochTicker::start(engine.clone()),
            call_threads: Arc::new(call_threads),
            engine,
            linker,
            cache,
            compilations: AtomicU64::new(0),
        })
    }

    /// Where compiled plugins are cached unless told otherwise:
    /// `$XDG_CACHE_HOME/sluice/compiled`, else `~/.cache/sluice/compiled`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("sluice").join("compiled"))
    }

    /// How many times this runtime has run the compiler. A load served from
    /// the cache does not count, which is what tests and metrics need.
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// Load, validate and pre-link the plugin at `path`. Its name is the
    /// file stem (`uppercase.wasm` is `uppercase`).
    pub fn load_file(&self, path: &Path, settings: PluginSettings) -> Result<Plugin, LoadError> {
        let bytes = read_plugin_file(path)?;
        let name = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".to_owned());
        self.load_bytes(path, &name, &bytes, settings)
    }

    /// Load a plugin from bytes already in memory; `path` is used only in
    /// error messages.
    pub fn load_bytes(
        &self,
        path: &Path,
        name: &str,
        bytes: &[u8],
        settings: PluginSettings,
    ) -> Result<Plugin, LoadError> {
        let path = path.to_owned();
        match inspect::wasm_kind(bytes) {
            WasmKind::Component => {}
            WasmKind::CoreModule => return Err(LoadError::CoreModule { path }),
            WasmKind::NotWasm if bytes.is_empty() => return Err(LoadError::Empty { path }),
            WasmKind::NotWasm => return Err(LoadError::NotWasm { path }),
            WasmKind::UnknownWasm => {
                return Err(LoadError::Invalid {
                    path,
                    reason: "the header is truncated or of an unknown WebAssembly version".to_owned(),
                });
            }
        }

        let content_hash = hex::encode(Sha256::digest(bytes));
        let (component, from_cache) = self.compile(&path, &content_hash, bytes)?;

        let missing = inspect::missing_exports(&self.engine, &component, &REQUIRED_EXPORTS);
        let exports = inspect::export_names(&self.engine, &component);
        if !missing.is_empty() {
            return Err(LoadError::WrongWorld {
                path,
                world: WORLD,
                reason: format!(
                    "missing export{} `{}` (it exports: {})",
                    if missing.len() == 1 { "" } else { "s" },
                    missing.join("`, `"),
                    if exports.is_empty() {
                        "nothing".to_owned()
                    } else {
                        exports.join(", ")
                    },
                ),
            });
        }

        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|error| LoadError::UnsatisfiedImports {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        let pre = MessageHandlerPre::new(instance_pre).map_err(|error| LoadError::WrongWorld {
            path: path.clone(),
            world: WORLD,
            reason: error.to_string(),
        })?;

        let imports = inspect::import_names(&self.engine, &component);
        let in_a_stage = settings.capabilities.is_some();
        let grants = settings.capabilities.unwrap_or_default();
        if in_a_stage && let Some((capability, import)) = capability::ungranted(&imports, &grants) {
            return Err(LoadError::NotGranted {
                path,
                import,
                capability: capability.to_string(),
                key: capability.stage_key(),
            });
        }
        let grant_error = |error: capability::GrantError| LoadError::Grant {
            path: path.clone(),
            key: error.key,
            reason: error.reason,
        };
        let deadline_ms = settings.limits.deadline_ms;
        // A key-value backend's connection is made on, and lives on, the
        // threads the plugin's calls run on.
        let _on_call_threads = self.call_threads.handle().enter();
        let http = grants.resolve_http(deadline_ms).map_err(grant_error)?.map(Arc::new);
        let keyvalue = grants.resolve_keyvalue(deadline_ms).map_err(grant_error)?.map(Arc::new);

        let version = PluginVersion::from_hex(content_hash);
        let identity = Arc::new(PluginIdentity {
            name: name.into(),
            version: version.to_string().into(),
            config: settings.config,
            http,
            keyvalue,
        });
        let component = LinkedComponent {
            pre,
            exports,
            imports,
            from_cache,
        };
        Ok(Plugin::new(
            identity,
            version,
            settings.limits,
            component,
            Arc::clone(&self.call_threads),
        ))
    }

    /// Compile, or fetch from the cache. Returns whether it came from cache.
    fn compile(&self, path: &Path, content_hash: &str, bytes: &[u8]) -> Result<(Component, bool), LoadError> {
        let invalid = |error: wasmtime::Error| LoadError::Invalid {
            path: path.to_owned(),
            reason: error.to_string(),
        };
        let Some(cache) = &self.cache else {
            self.compilations.fetch_add(1, Ordering::Relaxed);
            return Component::new(&self.engine, bytes)
                .map(|component| (component, false))
                .map_err(invalid);
        };
        if let Some(component) = cache.load(&self.engine, content_hash) {
            return Ok((component, true));
        }
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let artifact = self.engine.precompile_component(bytes).map_err(invalid)?;
        if let Err(error) = cache.store(&self.engine, content_hash, &artifact) {
            tracing::warn!(%error, "cannot write the compiled-plugin cache; the next load will compile again");
        }
        // SAFETY: `artifact` was produced just above by this engine's
        // `precompile_component`, which is the documented contract of
        // `Component::deserialize`.
        let component = unsafe { Component::deserialize(&self.engine, &artifact) }.map_err(invalid)?;
        Ok((component, false))
    }
}

fn read_plugin_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    let path_buf = path.to_owned();
    if path.is_dir() {
        return Err(LoadError::IsDirectory { path: path_buf });
    }
    std::fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => LoadError::NotFound { path: path_buf },
        _ => LoadError::Unreadable { path: path_buf, source },
    })
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a background thread,
/// which is what lets a store's epoch deadline interrupt a runaway call.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".to_owned())
            .spawn(move || {
                while !stop_flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
