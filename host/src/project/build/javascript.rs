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
    // StarlingMonkey's `fetch` imports wasi:http, which only a stage that
    // grants it allows: left out unless the world asks for it. A handler
    // never serves HTTP, so `fetch-event` (an incoming-handler export) is
    // always left out.
    let world = step.manifest.world.unwrap_or("message-handler");
    let disabled: &[&str] = match world {
        "message-handler-http" | "message-handler-io" => &["fetch-event"],
        _ => &["http", "fetch-event"],
    };
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
            .args(["-n", world, "--disable"])
            .args(disabled)
            .arg("-o")
            .arg(step.partial),
    )?;
    Ok(Candidate::Built { stamp: Some(hash) })
}

/// Rolldown settings: `sluice-plugin` (and `sluice-plugin/keyvalue`) are
/// the SDK folder's modules; the contract's interfaces (`sluice:plugin/...`,
/// `wasi:...`) are provided by the host at run time.
/// The SDK's path goes into JavaScript source, so it must be text.
fn bundle_config(sdk: &Path) -> Result<String, ProjectError> {
    let module = |file: &str| {
        let path = sdk.join(file);
        path.to_str()
            .map(serde_json::Value::from)
            .ok_or_else(|| ProjectError::NotText { path: path.clone() })
    };
    let (entry, keyvalue) = (module("sluice-plugin.js")?, module("keyvalue.js")?);
    // The more specific alias first: `sluice-plugin` alone would also
    // claim `sluice-plugin/keyvalue`.
    Ok(format!(
        "export default {{\n  external: [/^sluice:plugin\\//, /^wasi:/],\n  resolve: {{ alias: {{ 'sluice-plugin/keyvalue': {keyvalue}, 'sluice-plugin': {entry} }} }},\n}};\n"
    ))
}
