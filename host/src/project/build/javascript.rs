//! JavaScript: `jco componentize --bundle` over `handler.js`, the SDK
//! resolved as the package `sluice-plugin` and the contract's interfaces
//! left as imports for the host.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::{Candidate, LanguageStep, require_handler, sdk_folder};
use crate::project::inputs_hash::{inputs_hash, up_to_date};
use crate::project::templates::JAVASCRIPT_SDK;
use crate::project::tools::{JavaScriptTools, run_step};
use crate::project::{Language, ProjectError};

pub(super) fn build(step: &LanguageStep<'_>) -> Result<Candidate, ProjectError> {
    let handler = require_handler(step.dir, Language::JavaScript)?;
    let pinned = JavaScriptTools::pinned();
    let versions = JavaScriptTools {
        jco: step.manifest.jco.clone().unwrap_or(pinned.jco),
        componentize_js: step.manifest.componentize_js.clone().unwrap_or(pinned.componentize_js),
    };
    let jco = step.tools.jco(&versions)?;
    let sdk = sdk_folder(step.dir, step.tools, "js", JAVASCRIPT_SDK)?;
    let tool = versions.describe();
    let hash = inputs_hash(&[env!("CARGO_PKG_VERSION"), &tool], &[step.dir, &sdk])?;
    if up_to_date(step.output, &hash) {
        return Ok(Candidate::Unchanged);
    }

    let config_dir = tempfile::tempdir().map_err(ProjectError::io("cannot create a temporary folder"))?;
    let config = config_dir.path().join("bundle.config.mjs");
    fs::write(
        &config,
        bundle_config(&std::path::absolute(&sdk).unwrap_or(sdk.clone()))?,
    )
    .map_err(ProjectError::io(format!("cannot write {}", config.display())))?;
    // `--disable http fetch-event`: otherwise the component imports
    // wasi:http, which the stage does not provide.
    run_step(
        "jco componentize",
        Command::new(&jco)
            .arg("componentize")
            .arg(&handler)
            .arg("--bundle")
            .arg("--bundle-config")
            .arg(&config)
            .arg("--wit")
            .arg(sdk.join("wit"))
            .args(["-n", "message-handler", "--disable", "http", "fetch-event", "-o"])
            .arg(step.partial),
    )?;
    Ok(Candidate::Built { stamp: Some(hash) })
}

/// Rolldown settings: `sluice-plugin` is the SDK folder; the contract's
/// interfaces (`sluice:plugin/...`) are provided by the host at run time.
/// The SDK's path goes into JavaScript source, so it must be text.
fn bundle_config(sdk: &Path) -> Result<String, ProjectError> {
    let entry = sdk.join("sluice-plugin.js");
    let entry = entry
        .to_str()
        .ok_or_else(|| ProjectError::NotText { path: entry.clone() })?;
    let entry = serde_json::Value::from(entry);
    Ok(format!(
        "export default {{\n  external: [/^sluice:plugin\\//],\n  resolve: {{ alias: {{ 'sluice-plugin': {entry} }} }},\n}};\n"
    ))
}
