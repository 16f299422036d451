//! Python: componentize-py over `handler.py`, with the SDK and the
//! project's other dependencies on the path.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Candidate, LanguageStep, require_handler, sdk_folder};
use crate::project::inputs_hash::{inputs_hash, up_to_date};
use crate::project::manifest::ProjectManifest;
use crate::project::templates::PYTHON_SDK;
use crate::project::tools::{ToolCache, pinned_componentize_py, run_step};
use crate::project::{Language, ProjectError};

pub(super) fn build(step: &LanguageStep<'_>) -> Result<Candidate, ProjectError> {
    require_handler(step.dir, Language::Python)?;
    let version = step
        .manifest
        .componentize_py
        .as_deref()
        .unwrap_or(pinned_componentize_py());
    let componentize_py = step.tools.componentize_py(version)?;
    let sdk = sdk_folder(step.dir, step.tools, "python", PYTHON_SDK)?;
    let tool = format!("componentize-py {version}");
    let mut labels = vec![env!("CARGO_PKG_VERSION"), tool.as_str()];
    labels.extend(step.manifest.python_dependencies.iter().map(String::as_str));
    let hash = inputs_hash(&labels, &[step.dir, &sdk])?;
    if up_to_date(step.output, &hash) {
        return Ok(Candidate::Unchanged);
    }

    let mut command = Command::new(&componentize_py);
    command
        .arg("-d")
        .arg(sdk.join("wit"))
        .arg("-w")
        .arg(step.manifest.world.unwrap_or("message-handler"))
        .args(["componentize", "handler", "-p"])
        .arg(step.dir)
        .arg("-p")
        .arg(&sdk);
    if let Some(packages) = dependencies(step.dir, step.manifest, step.tools, version)? {
        command.arg("-p").arg(packages);
    }
    run_step("componentize-py", command.arg("-o").arg(step.partial))?;
    Ok(Candidate::Built { stamp: Some(hash) })
}

/// The project's own dependencies, installed with pip into
/// `.sluice/python-packages` (again when the list changes); componentize-py
/// bundles what the handler imports from there. Pure-Python packages only:
/// a component cannot load native extensions built for this machine.
fn dependencies(
    dir: &Path,
    manifest: &ProjectManifest,
    tools: &ToolCache,
    componentize_py: &str,
) -> Result<Option<PathBuf>, ProjectError> {
    if manifest.python_dependencies.is_empty() {
        return Ok(None);
    }
    let packages = dir.join(".sluice/python-packages");
    let wanted = manifest.python_dependencies.join("\n");
    let record = packages.join(".sluice-requirements");
    if std::fs::read_to_string(&record).is_ok_and(|installed| installed == wanted) {
        return Ok(Some(packages));
    }
    if packages.exists() {
        std::fs::remove_dir_all(&packages).map_err(ProjectError::io(format!("cannot clear {}", packages.display())))?;
    }
    run_step(
        "pip install (the project's dependencies)",
        Command::new(tools.pip(componentize_py))
            .args(["install", "--quiet", "--disable-pip-version-check", "--target"])
            .arg(&packages)
            .args(&manifest.python_dependencies),
    )?;
    std::fs::write(&record, wanted).map_err(ProjectError::io(format!("cannot write {}", record.display())))?;
    Ok(Some(packages))
}
