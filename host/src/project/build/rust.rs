//! Rust: `cargo build --release --target wasm32-wasip2` in the project,
//! adding the target with rustup when it is missing. cargo decides what to
//! rebuild; an unchanged component is recognised by its bytes.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::{Candidate, LanguageStep};
use crate::project::ProjectError;
use crate::project::tools::{missing_or_io, run_step};

const TARGET: &str = "wasm32-wasip2";

/// The part of cargo's `compiler-artifact` message that names a library's
/// output files.
#[derive(Deserialize)]
struct CargoMessage {
    reason: String,
    #[serde(default)]
    manifest_path: Option<PathBuf>,
    #[serde(default)]
    target: Option<CargoTarget>,
    #[serde(default)]
    filenames: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct CargoTarget {
    kind: Vec<String>,
}

pub(super) fn build(step: &LanguageStep<'_>) -> Result<Candidate, ProjectError> {
    let LanguageStep {
        dir, output, partial, ..
    } = *step;
    ensure_target()?;
    let manifest = std::path::absolute(dir.join("Cargo.toml"))
        .map_err(ProjectError::io(format!("cannot resolve {}", dir.display())))?;
    let mut cargo = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| {
            missing_or_io(
                error,
                "cargo",
                "install Rust with rustup (https://rustup.rs)",
                "cannot run cargo build",
            )
        })?;
    let mut component = None;
    let stdout = cargo.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(ProjectError::io("cannot read cargo's output"))?;
        let Ok(message) = serde_json::from_str::<CargoMessage>(&line) else {
            continue;
        };
        if let Some(path) = library_component(&message, &manifest) {
            component = Some(path);
        }
    }
    let status = cargo.wait().map_err(ProjectError::io("cannot wait for cargo build"))?;
    if !status.success() {
        return Err(ProjectError::StepFailed {
            step: "cargo build".to_owned(),
            status: status.to_string(),
        });
    }
    let component = component.ok_or_else(|| ProjectError::Manifest {
        path: manifest.clone(),
        reason: "builds no component: a handler crate needs `[lib] crate-type = [\"cdylib\"]`".to_owned(),
    })?;
    let built = fs::read(&component).map_err(ProjectError::io(format!("cannot read {}", component.display())))?;
    if fs::read(output).is_ok_and(|current| current == built) {
        return Ok(Candidate::Unchanged);
    }
    fs::write(partial, &built).map_err(ProjectError::io(format!("cannot write {}", partial.display())))?;
    Ok(Candidate::Built { stamp: None })
}

/// The `.wasm` of the project's own cdylib, if `message` announces it.
fn library_component(message: &CargoMessage, manifest: &Path) -> Option<PathBuf> {
    if message.reason != "compiler-artifact"
        || !message
            .manifest_path
            .as_deref()
            .is_some_and(|path| same_file(path, manifest))
    {
        return None;
    }
    if !message.target.as_ref()?.kind.iter().any(|kind| kind == "cdylib") {
        return None;
    }
    message
        .filenames
        .iter()
        .find(|file| file.extension().is_some_and(|extension| extension == "wasm"))
        .cloned()
}

fn same_file(one: &Path, other: &Path) -> bool {
    one == other || matches!((fs::canonicalize(one), fs::canonicalize(other)), (Ok(one), Ok(other)) if one == other)
}

/// Add the wasm32-wasip2 target when rustup manages the toolchain and
/// lacks it. Without rustup, cargo's own error says what is missing.
fn ensure_target() -> Result<(), ProjectError> {
    let Ok(installed) = Command::new("rustup").args(["target", "list", "--installed"]).output() else {
        return Ok(());
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        return Ok(());
    }
    eprintln!("sluice: adding the {TARGET} Rust target");
    run_step(
        &format!("rustup target add {TARGET}"),
        Command::new("rustup").args(["target", "add", TARGET]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_projects_own_cdylib_is_its_component() {
        let manifest = Path::new("/p/Cargo.toml");
        let message = |line: &str| serde_json::from_str::<CargoMessage>(line).unwrap();
        let own = message(
            r#"{"reason":"compiler-artifact","manifest_path":"/p/Cargo.toml","target":{"kind":["cdylib"]},
                "filenames":["/p/target/wasm32-wasip2/release/h.wasm"],"fresh":false}"#,
        );
        assert_eq!(
            library_component(&own, manifest),
            Some(PathBuf::from("/p/target/wasm32-wasip2/release/h.wasm"))
        );
        let dependency = message(
            r#"{"reason":"compiler-artifact","manifest_path":"/p/sluice-plugin/Cargo.toml",
                "target":{"kind":["lib"]},"filenames":["/p/target/x.rlib"]}"#,
        );
        assert_eq!(library_component(&dependency, manifest), None);
        let finished = message(r#"{"reason":"build-finished","success":true}"#);
        assert_eq!(library_component(&finished, manifest), None);
    }
}
