//! The pinned build tools `sluice build` runs, installed on first use into
//! a cache folder it owns: componentize-py in a virtual environment per
//! version, jco and componentize-js in an npm folder per version pair, and
//! the SDK sources for handlers that do not carry their own copy.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::ProjectError;
use super::templates::{self, EmbeddedFile};

/// A folder of installed tools, shared by every build on the machine (or
/// whatever `SLUICE_TOOLS_DIR` names). Installs are locked per tool, so
/// builds running side by side install each tool once.
#[derive(Debug, Clone)]
pub struct ToolCache {
    dir: PathBuf,
}

/// The JavaScript tools a build uses: jco and the componentize-js it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JavaScriptTools {
    pub jco: String,
    pub componentize_js: String,
}

/// jco's bundler (rolldown) needs this Node.js or newer.
const NODE_MINIMUM: (u32, u32) = (20, 19);

/// The componentize-py version this `sluice` builds with unless a project
/// pins another.
pub(super) fn pinned_componentize_py() -> &'static str {
    templates::PYTHON_REQUIREMENTS
        .lines()
        .find_map(|line| line.trim().strip_prefix("componentize-py=="))
        .expect("plugins/python/requirements.txt pins componentize-py")
}

impl JavaScriptTools {
    /// The versions this `sluice` builds with unless a project pins others.
    pub(super) fn pinned() -> JavaScriptTools {
        let package: serde_json::Value =
            serde_json::from_str(templates::JAVASCRIPT_TOOLS_PACKAGE).expect("plugins/js/package.json is JSON");
        let pin = |name: &str| {
            package["devDependencies"][name]
                .as_str()
                .unwrap_or_else(|| panic!("plugins/js/package.json pins {name}"))
                .to_owned()
        };
        JavaScriptTools {
            jco: pin("@bytecodealliance/jco"),
            componentize_js: pin("@bytecodealliance/componentize-js"),
        }
    }

    pub(super) fn describe(&self) -> String {
        format!("jco {}, componentize-js {}", self.jco, self.componentize_js)
    }
}

impl ToolCache {
    pub fn new(dir: PathBuf) -> ToolCache {
        ToolCache { dir }
    }

    /// `$XDG_CACHE_HOME/sluice/tools`, else `~/.cache/sluice/tools`.
    pub fn default_dir() -> Option<PathBuf> {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(cache.join("sluice").join("tools"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `componentize-py` program at `version`, installed with pip into
    /// a virtual environment of its own the first time.
    pub(super) fn componentize_py(&self, version: &str) -> Result<PathBuf, ProjectError> {
        let venv = self.installed(&format!("componentize-py-{version}"), |venv| {
            let python = find_program(
                "python3",
                "install Python 3.11 or newer with its venv module (Debian: apt install python3-venv)",
            )?;
            eprintln!("sluice: installing componentize-py {version} into {}", venv.display());
            run_step(
                "creating a Python virtual environment",
                Command::new(python).arg("-m").arg("venv").arg(venv),
            )?;
            run_step(
                &format!("pip install componentize-py=={version}"),
                Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .arg(format!("componentize-py=={version}")),
            )
        })?;
        Ok(venv.join("bin/componentize-py"))
    }

    /// pip in the virtual environment of componentize-py `version`, for a
    /// project's own dependencies.
    pub(super) fn pip(&self, componentize_py_version: &str) -> PathBuf {
        self.dir
            .join(format!("componentize-py-{componentize_py_version}/bin/pip"))
    }

    /// jco's command-line entry point at `tools`' versions, installed with
    /// npm the first time: from the lock this `sluice` carries when the
    /// versions are its own, else at exactly the versions asked for.
    pub(super) fn jco(&self, tools: &JavaScriptTools) -> Result<PathBuf, ProjectError> {
        check_node()?;
        let name = format!("jco-{}-componentize-js-{}", tools.jco, tools.componentize_js);
        let folder = self.installed(&name, |folder| {
            let npm = find_program("npm", "install Node.js 20.19 or newer with npm (https://nodejs.org)")?;
            eprintln!("sluice: installing {} into {}", tools.describe(), folder.display());
            let write = |file: &str, contents: &str| {
                fs::write(folder.join(file), contents)
                    .map_err(ProjectError::io(format!("cannot write {file} in {}", folder.display())))
            };
            if *tools == JavaScriptTools::pinned() {
                write("package.json", templates::JAVASCRIPT_TOOLS_PACKAGE)?;
                write("package-lock.json", templates::JAVASCRIPT_TOOLS_LOCK)?;
            } else {
                let package = serde_json::json!({
                    "private": true,
                    "devDependencies": {
                        "@bytecodealliance/jco": tools.jco,
                        "@bytecodealliance/componentize-js": tools.componentize_js,
                    },
                    "overrides": { "@bytecodealliance/componentize-js": tools.componentize_js },
                });
                write("package.json", &package.to_string())?;
            }
            // `install`, not `ci`: the lock leaves out other systems'
            // optional native binaries, which `ci` refuses and `install`
            // skips; the versions it installs are the locked ones.
            run_step(
                "npm install (jco, componentize-js)",
                Command::new(npm)
                    .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                    .current_dir(folder),
            )
        })?;
        Ok(folder.join("node_modules/.bin/jco"))
    }

    /// A folder holding the SDK (and the contract) for `language`, written
    /// from the copy inside this binary, for handlers that carry none.
    pub(super) fn embedded_sdk(&self, language: &str, files: &[EmbeddedFile]) -> Result<PathBuf, ProjectError> {
        let mut digest = Sha256::new();
        for (path, contents) in files {
            digest.update(path.as_bytes());
            digest.update([0]);
            digest.update(contents.as_bytes());
            digest.update([0]);
        }
        let hash = hex::encode(digest.finalize());
        self.installed(&format!("sdk-{language}-{}", &hash[..16]), |folder| {
            for (path, contents) in files {
                let target = folder.join(path);
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)
                        .map_err(ProjectError::io(format!("cannot create {}", parent.display())))?;
                }
                fs::write(&target, contents).map_err(ProjectError::io(format!("cannot write {}", target.display())))?;
            }
            Ok(())
        })
    }

    /// `name`'s folder in the cache, running `install` in it first unless a
    /// finished install is there. A half-finished one (a killed build) is
    /// started over.
    fn installed(
        &self,
        name: &str,
        install: impl FnOnce(&Path) -> Result<(), ProjectError>,
    ) -> Result<PathBuf, ProjectError> {
        let folder = self.dir.join(name);
        let finished = folder.join(".sluice-installed");
        if finished.is_file() {
            return Ok(folder);
        }
        fs::create_dir_all(&self.dir).map_err(ProjectError::io(format!("cannot create {}", self.dir.display())))?;
        let lock_path = self.dir.join(format!(".{name}.lock"));
        let lock =
            File::create(&lock_path).map_err(ProjectError::io(format!("cannot create {}", lock_path.display())))?;
        lock.lock()
            .map_err(ProjectError::io(format!("cannot lock {}", lock_path.display())))?;
        if finished.is_file() {
            return Ok(folder);
        }
        if folder.exists() {
            fs::remove_dir_all(&folder).map_err(ProjectError::io(format!("cannot clear {}", folder.display())))?;
        }
        fs::create_dir_all(&folder).map_err(ProjectError::io(format!("cannot create {}", folder.display())))?;
        install(&folder)?;
        fs::write(&finished, "").map_err(ProjectError::io(format!("cannot write {}", finished.display())))?;
        Ok(folder)
    }
}

/// Run one step of a build with its output shown as the tool prints it
/// (on stderr, so that stdout carries only sluice's own result).
pub(super) fn run_step(step: &str, command: &mut Command) -> Result<(), ProjectError> {
    let status = command
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(ProjectError::io(format!("cannot run {step}")))?;
    match status.success() {
        true => Ok(()),
        false => Err(ProjectError::StepFailed {
            step: step.to_owned(),
            status: status.to_string(),
        }),
    }
}

/// `program` if it can be run, else what to install.
pub(super) fn find_program(program: &'static str, hint: &'static str) -> Result<&'static str, ProjectError> {
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => Ok(program),
        Err(_) => Err(ProjectError::ToolMissing { tool: program, hint }),
    }
}

/// A program that cannot be started because it is not there is missing
/// (with what to install); any other failure to start it is an I/O error.
pub(super) fn missing_or_io(
    error: std::io::Error,
    tool: &'static str,
    hint: &'static str,
    context: &str,
) -> ProjectError {
    match error.kind() {
        std::io::ErrorKind::NotFound => ProjectError::ToolMissing { tool, hint },
        _ => ProjectError::Io {
            context: context.to_owned(),
            source: error,
        },
    }
}

fn check_node() -> Result<(), ProjectError> {
    let output = Command::new("node").arg("--version").output().map_err(|error| {
        missing_or_io(
            error,
            "node",
            "install Node.js 20.19 or newer (https://nodejs.org)",
            "cannot run node --version",
        )
    })?;
    let found = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    match parse_node_version(&found) {
        Some(version) if version >= NODE_MINIMUM => Ok(()),
        _ => Err(ProjectError::ToolTooOld(format!(
            "building a JavaScript handler needs Node.js {}.{} or newer (jco's bundler); found {found:?}",
            NODE_MINIMUM.0, NODE_MINIMUM.1
        ))),
    }
}

/// `v20.19.2` as (20, 19).
fn parse_node_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.strip_prefix('v')?.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_versions_are_read_as_major_and_minor() {
        assert_eq!(parse_node_version("v20.19.2"), Some((20, 19)));
        assert_eq!(parse_node_version("v22.1.0"), Some((22, 1)));
        assert!(parse_node_version("v20.18.0").unwrap() < NODE_MINIMUM);
        assert_eq!(parse_node_version("20"), None);
    }

    #[test]
    fn the_pins_are_the_repository_builds() {
        assert!(pinned_componentize_py().starts_with("0."));
        let tools = JavaScriptTools::pinned();
        assert!(!tools.jco.is_empty() && !tools.componentize_js.is_empty());
    }
}
