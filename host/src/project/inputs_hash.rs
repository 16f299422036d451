//! Rebuild avoidance for the tools with no incremental build of their own
//! (componentize-py, jco): the hash of everything a component is built
//! from, kept in a stamp file beside it.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ProjectError;

/// Folders that hold build output, caches or tools, never handler sources.
const SKIPPED_FOLDERS: &[&str] = &["dist", "target", "node_modules", "__pycache__"];

/// Whether a file or folder name is left out of a handler's sources:
/// hidden entries (`.git`, `.sluice`) and [`SKIPPED_FOLDERS`].
fn is_skipped_name(name: &str) -> bool {
    name.starts_with('.') || SKIPPED_FOLDERS.contains(&name)
}

/// Whether `path`, under the project folder `dir`, is one of the handler's
/// sources rather than build output, tools or hidden state: the same rule
/// the inputs hash follows.
pub fn is_handler_source(dir: &Path, path: &Path) -> bool {
    let relative = path.strip_prefix(dir).unwrap_or(path);
    !relative.components().any(|component| match component {
        std::path::Component::Normal(name) => is_skipped_name(&name.to_string_lossy()),
        _ => false,
    })
}

/// The hash of `labels` (tool versions and the like) and of every file
/// under `roots` by relative path and contents, what [`is_skipped_name`]
/// names left out.
pub(super) fn inputs_hash(labels: &[&str], roots: &[&Path]) -> Result<String, ProjectError> {
    let mut digest = Sha256::new();
    for label in labels {
        digest.update(label.as_bytes());
        digest.update([0]);
    }
    for root in roots {
        let mut files = Vec::new();
        collect_files(root, &mut files)?;
        files.sort();
        digest.update(b"root\0");
        for file in files {
            let contents = fs::read(&file).map_err(ProjectError::io(format!("cannot read {}", file.display())))?;
            digest.update(file.strip_prefix(root).unwrap_or(&file).as_os_str().as_encoded_bytes());
            digest.update([0]);
            digest.update((contents.len() as u64).to_le_bytes());
            digest.update(&contents);
        }
    }
    Ok(hex::encode(digest.finalize()))
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), ProjectError> {
    let entries = fs::read_dir(dir).map_err(ProjectError::io(format!("cannot list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(ProjectError::io(format!("cannot list {}", dir.display())))?;
        let name = entry.file_name();
        if is_skipped_name(&name.to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        // Follows symbolic links, as the build tools do.
        if path.is_dir() {
            collect_files(&path, files)?;
        } else if path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// Where the stamp of `output` lives: `.<file name>.inputs` beside it.
pub(super) fn stamp_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.inputs"))
}

/// Whether `output` exists and was built from inputs hashing to `hash`.
pub(super) fn up_to_date(output: &Path, hash: &str) -> bool {
    output.is_file() && fs::read_to_string(stamp_path(output)).is_ok_and(|stamp| stamp.trim() == hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_change_the_hash_and_build_output_does_not() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("handler.py"), "a").unwrap();
        let before = inputs_hash(&["tool 1"], &[dir.path()]).unwrap();

        for skipped in ["dist", "__pycache__", ".sluice"] {
            fs::create_dir_all(dir.path().join(skipped)).unwrap();
            fs::write(dir.path().join(skipped).join("x"), "built").unwrap();
        }
        assert_eq!(inputs_hash(&["tool 1"], &[dir.path()]).unwrap(), before);

        assert_ne!(inputs_hash(&["tool 2"], &[dir.path()]).unwrap(), before);
        fs::write(dir.path().join("handler.py"), "b").unwrap();
        assert_ne!(inputs_hash(&["tool 1"], &[dir.path()]).unwrap(), before);
    }

    #[test]
    fn build_output_and_hidden_state_are_not_sources() {
        let dir = Path::new("/p");
        assert!(is_handler_source(dir, Path::new("/p/src/lib.rs")));
        assert!(is_handler_source(dir, Path::new("/p/handler.py")));
        for built in [
            "/p/dist/h.wasm",
            "/p/target/release/x",
            "/p/.sluice/venv/a",
            "/p/__pycache__/h.pyc",
            "/p/.git/index",
        ] {
            assert!(!is_handler_source(dir, Path::new(built)), "{built}");
        }
    }

    #[test]
    fn a_stamp_counts_only_beside_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("h.wasm");
        fs::write(stamp_path(&output), "abc\n").unwrap();
        assert!(!up_to_date(&output, "abc"), "no output yet");
        fs::write(&output, "wasm").unwrap();
        assert!(up_to_date(&output, "abc"));
        assert!(!up_to_date(&output, "abd"));
    }
}
