//! Compiled plugins kept on disk, keyed by content hash, so reloading an
//! unchanged file (a restart, a hot-reload of the same bytes) costs a
//! memory-map instead of seconds of Cranelift work.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of precompiled components.
///
/// The directory must be writable only by the user running sluice: loading
/// an artifact runs its machine code, so a tampered file is as dangerous as
/// a tampered binary. Wasmtime does check that an artifact was produced by a
/// compatible engine and configuration, and a mismatched or unreadable
/// artifact is simply recompiled.
#[derive(Debug)]
pub(crate) struct CompiledCache {
    dir: PathBuf,
}

impl CompiledCache {
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(CompiledCache { dir: dir.to_owned() })
    }

    /// The cached artifact for this content, when there is a usable one.
    pub(crate) fn load(&self, engine: &Engine, content_hash: &str) -> Option<Component> {
        let path = self.entry_path(engine, content_hash);
        if !path.is_file() {
            return None;
        }
        // SAFETY: files in this directory are written only by `store` below
        // from `Engine::precompile_component` output (see the type's doc on
        // who may write here), and Wasmtime validates the artifact header
        // against this engine before using it.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring unusable compiled-plugin cache entry; recompiling");
                None
            }
        }
    }

    /// Save an artifact. Written to a temporary file and renamed into place,
    /// so a concurrent reader never sees half a file.
    pub(crate) fn store(&self, engine: &Engine, content_hash: &str, artifact: &[u8]) -> io::Result<()> {
        let path = self.entry_path(engine, content_hash);
        let mut temporary = tempfile::NamedTempFile::new_in(&self.dir)?;
        temporary.write_all(artifact)?;
        temporary.persist(&path).map_err(|error| error.error)?;
        Ok(())
    }

    fn entry_path(&self, engine: &Engine, content_hash: &str) -> PathBuf {
        // The engine's compatibility hash covers the Wasmtime version and
        // every setting that changes generated code, so an upgrade or a
        // config change gets fresh entries instead of rejected ones.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.dir.join(format!("{content_hash}-{:016x}.cwasm", hasher.finish()))
    }
}
