//! `sluice build`: a handler's sources in, a checked component out.
//!
//! Each language has its own step that leaves a candidate component
//! ([`rust`], [`python`], [`javascript`]); this module does what is common:
//! it checks the candidate as `sluice check` would (a file that is not a
//! working plugin never replaces the output) and renames it over the
//! output, so that a stage watching that file sees one complete new version.

mod javascript;
mod python;
mod rust;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::inputs_hash::stamp_path;
use super::manifest::{ProjectManifest, read_manifest};
use super::{Language, ProjectError, ToolCache};
use crate::plugin::{PluginRuntime, PluginSettings};

/// What to build and with what.
pub struct BuildRequest<'a> {
    /// The project folder.
    pub dir: PathBuf,
    /// The handler's language, when the folder's files do not tell.
    pub language: Option<Language>,
    /// Where the component goes [default: `<dir>/dist/<name>.wasm`].
    pub output: Option<PathBuf>,
    pub tools: &'a ToolCache,
    /// Checks the result; its compiled-plugin cache makes the stage's first
    /// load of the same file fast.
    pub runtime: &'a PluginRuntime,
}

/// A component ready to run.
#[derive(Debug)]
pub struct BuiltPlugin {
    pub path: PathBuf,
    pub language: Language,
    pub size: u64,
    /// The SHA-256 of the file: the plugin version a stage reports.
    pub sha256: String,
    /// False when the project was unchanged and the file left as it was.
    pub rebuilt: bool,
    pub elapsed: Duration,
}

/// What a language's build step works from.
struct LanguageStep<'a> {
    dir: &'a Path,
    manifest: &'a ProjectManifest,
    tools: &'a ToolCache,
    /// Where the component goes once checked.
    output: &'a Path,
    /// Where the step writes the new component.
    partial: &'a Path,
}

/// What a language step leaves for the common part to finish.
enum Candidate {
    /// A new component at the partial path, to be checked and moved into
    /// place, with the inputs hash to stamp it with (none for Rust, whose
    /// cargo knows its inputs better).
    Built { stamp: Option<String> },
    /// The output is up to date; nothing was built.
    Unchanged,
}

/// Build the handler in `request.dir` into a checked component.
pub fn build_project(request: BuildRequest<'_>) -> Result<BuiltPlugin, ProjectError> {
    let started = Instant::now();
    let dir = request.dir.as_path();
    let language = match request.language {
        Some(language) => language,
        None => Language::detect(dir)?,
    };
    let manifest = read_manifest(dir, language)?;
    let output = match &request.output {
        Some(output) => output.clone(),
        // `dist/x.wasm` rather than `./dist/x.wasm` when building here.
        None => match dir == Path::new(".") {
            true => PathBuf::new(),
            false => dir.to_owned(),
        }
        .join("dist")
        .join(format!("{}.wasm", handler_name(dir, &manifest)?)),
    };
    let output_dir = output
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(output_dir).map_err(ProjectError::io(format!("cannot create {}", output_dir.display())))?;
    let partial = output.with_file_name(format!(
        ".{}.partial",
        output
            .file_name()
            .map(|name| name.to_string_lossy())
            .unwrap_or_default()
    ));

    let step = LanguageStep {
        dir,
        manifest: &manifest,
        tools: request.tools,
        output: &output,
        partial: &partial,
    };
    let step = match language {
        Language::Rust => rust::build(&step)?,
        Language::Python => python::build(&step)?,
        Language::JavaScript => javascript::build(&step)?,
    };
    let rebuilt = match step {
        Candidate::Unchanged => false,
        Candidate::Built { stamp } => {
            check_component(request.runtime, &partial).inspect_err(|_| {
                let _ = fs::remove_file(&partial);
            })?;
            fs::rename(&partial, &output).map_err(ProjectError::io(format!(
                "cannot move the build to {}",
                output.display()
            )))?;
            if let Some(stamp) = stamp {
                fs::write(stamp_path(&output), stamp).map_err(ProjectError::io(format!(
                    "cannot write the stamp of {}",
                    output.display()
                )))?;
            }
            true
        }
    };
    let bytes = fs::read(&output).map_err(ProjectError::io(format!("cannot read {}", output.display())))?;
    Ok(BuiltPlugin {
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        path: output,
        language,
        rebuilt,
        elapsed: started.elapsed(),
    })
}

/// The name the component file takes: the manifest's, else the folder's.
fn handler_name(dir: &Path, manifest: &ProjectManifest) -> Result<String, ProjectError> {
    if let Some(name) = &manifest.name {
        return Ok(name.clone());
    }
    let absolute = std::path::absolute(dir).map_err(ProjectError::io(format!("cannot resolve {}", dir.display())))?;
    absolute
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| ProjectError::InvalidName {
            name: absolute.display().to_string(),
            reason: "a folder with no name of its own",
        })
}

/// Load the component exactly as a stage would and start one instance.
fn check_component(runtime: &PluginRuntime, path: &Path) -> Result<(), ProjectError> {
    let not_a_plugin = |reason: String| ProjectError::NotAPlugin {
        path: path.to_owned(),
        reason,
    };
    let plugin = runtime
        .load_file(path, PluginSettings::default())
        .map_err(|error| not_a_plugin(error.to_string()))?;
    plugin
        .worker()
        .warm_up_blocking()
        .map_err(|failure| not_a_plugin(format!("it implements the world but cannot start: {failure}")))
}

/// The handler file a Python or JavaScript build starts from, which must
/// be there whatever the manifest says.
fn require_handler(dir: &Path, language: Language) -> Result<PathBuf, ProjectError> {
    let handler = dir.join(language.handler_file());
    match handler.is_file() {
        true => Ok(handler),
        false => Err(ProjectError::NoHandlerFile {
            dir: dir.to_owned(),
            file: language.handler_file(),
        }),
    }
}

/// The SDK a Python or JavaScript handler is built with: the copy the
/// project carries in `sluice-plugin/` (as `sluice new` writes it), else
/// the one inside this binary. Either holds the contract in `wit/`.
fn sdk_folder(
    dir: &Path,
    tools: &ToolCache,
    language: &str,
    files: &[super::templates::EmbeddedFile],
) -> Result<PathBuf, ProjectError> {
    let carried = dir.join("sluice-plugin");
    match carried.join("wit").is_dir() {
        true => Ok(carried),
        false => tools.embedded_sdk(language, files),
    }
}
