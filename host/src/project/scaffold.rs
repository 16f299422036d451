//! `sluice new`: a standalone handler project from the files carried in
//! the binary.

use std::fs;
use std::path::{Path, PathBuf};

use super::templates::{self, EmbeddedFile};
use super::tools::{JavaScriptTools, pinned_componentize_py};
use super::{Language, ProjectError};

/// The project to write.
#[derive(Debug)]
pub struct NewProject {
    /// A folder that does not exist yet, or is empty.
    pub dir: PathBuf,
    pub language: Language,
    /// The handler's name [default: the folder's name].
    pub name: Option<String>,
}

/// A project just written.
#[derive(Debug)]
pub struct CreatedProject {
    /// The handler's name; its component builds to `dist/<name>.wasm`.
    pub name: String,
    /// The files written, relative to the project folder.
    pub files: Vec<PathBuf>,
}

/// Write the project. Nothing is overwritten: a folder with anything in it
/// is refused.
pub fn create_project(project: &NewProject) -> Result<CreatedProject, ProjectError> {
    let name = match &project.name {
        Some(name) => name.clone(),
        None => std::path::absolute(&project.dir)
            .ok()
            .and_then(|dir| dir.file_name().map(|name| name.to_string_lossy().into_owned()))
            .unwrap_or_default(),
    };
    check_name(&name)?;
    if project.dir.exists() {
        let mut entries = fs::read_dir(&project.dir).map_err(|_| ProjectError::AlreadyExists {
            path: project.dir.clone(),
        })?;
        if entries.next().is_some() {
            return Err(ProjectError::AlreadyExists {
                path: project.dir.clone(),
            });
        }
    }

    let (sdk, files): (&[EmbeddedFile], &[EmbeddedFile]) = match project.language {
        Language::Rust => (templates::RUST_SDK, templates::RUST_PROJECT),
        Language::Python => (templates::PYTHON_SDK, templates::PYTHON_PROJECT),
        Language::JavaScript => (templates::JAVASCRIPT_SDK, templates::JAVASCRIPT_PROJECT),
    };
    let placeholders = placeholders(&name, project.language);
    let mut written = Vec::new();
    for (path, contents) in files.iter().chain(templates::COMMON) {
        written.push(write(&project.dir, Path::new(path), &fill(contents, &placeholders))?);
    }
    for (path, contents) in sdk {
        written.push(write(&project.dir, &Path::new("sluice-plugin").join(path), contents)?);
    }
    Ok(CreatedProject { name, files: written })
}

/// A name that works as a crate, a Python distribution and an npm package.
fn check_name(name: &str) -> Result<(), ProjectError> {
    let invalid = |reason| ProjectError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let mut characters = name.chars();
    match characters.next() {
        None => Err(invalid("it is empty")),
        Some(first) if !first.is_ascii_lowercase() => Err(invalid("it must start with a lowercase letter")),
        _ if name.len() > 64 => Err(invalid("it is longer than 64 characters")),
        _ if !characters.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') => Err(invalid(
            "only lowercase letters, digits, '-' and '_' work in every language",
        )),
        _ => Ok(()),
    }
}

fn placeholders(name: &str, language: Language) -> Vec<(&'static str, String)> {
    let javascript = JavaScriptTools::pinned();
    let build_notes = match language {
        Language::Rust => "\n`cargo build --release` builds the same component into \
                           `target/wasm32-wasip2/release/` (the target is set in `.cargo/config.toml`); \
                           `sluice build` also checks it and copies it to `dist/`.\n"
            .to_owned(),
        Language::Python => format!(
            "\n`sluice build` runs componentize-py {} (the version pinned in `pyproject.toml`) from a \
             virtual environment it keeps in its tool cache (`~/.cache/sluice/tools`, or \
             `$SLUICE_TOOLS_DIR`). Modules beside `handler.py` are bundled too, and so are the \
             pure-Python packages listed in `dependencies`.\n",
            pinned_componentize_py()
        ),
        Language::JavaScript => format!(
            "\n`sluice build` bundles `handler.js` and what it imports with jco {} and componentize-js {} \
             (pinned in `package.json`), installed in its tool cache (`~/.cache/sluice/tools`, or \
             `$SLUICE_TOOLS_DIR`); it needs Node.js 20.19 or newer. `npm install` is only for your \
             editor; `npm test` builds and runs the expected results.\n",
            javascript.jco, javascript.componentize_js
        ),
    };
    vec![
        ("{{name}}", name.to_owned()),
        ("{{language}}", language.to_string()),
        ("{{handler}}", language.handler_file().to_owned()),
        ("{{componentize_py}}", pinned_componentize_py().to_owned()),
        ("{{jco}}", javascript.jco),
        ("{{componentize_js}}", javascript.componentize_js),
        ("{{build_notes}}", build_notes),
    ]
}

fn fill(template: &str, placeholders: &[(&str, String)]) -> String {
    placeholders
        .iter()
        .fold(template.to_owned(), |text, (placeholder, value)| {
            text.replace(placeholder, value)
        })
}

fn write(dir: &Path, relative: &Path, contents: &str) -> Result<PathBuf, ProjectError> {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(ProjectError::io(format!("cannot create {}", parent.display())))?;
    }
    fs::write(&path, contents).map_err(ProjectError::io(format!("cannot write {}", path.display())))?;
    Ok(relative.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_work_in_every_language() {
        assert!(check_name("geo-coder_2").is_ok());
        for bad in ["", "Geo", "2geo", "geo coder", "géo", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_project_has_its_handler_sdk_contract_and_samples_filled_in() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("geo");
        let created = create_project(&NewProject {
            dir: dir.clone(),
            language: Language::Python,
            name: None,
        })
        .unwrap();
        assert_eq!(created.name, "geo");
        let written = created.files;
        for file in [
            "handler.py",
            "pyproject.toml",
            "stage.toml",
            "sluice-plugin/wit/plugin.wit",
            "expected.jsonl",
        ] {
            assert!(written.contains(&PathBuf::from(file)), "{file} in {written:?}");
        }
        let pyproject = fs::read_to_string(dir.join("pyproject.toml")).unwrap();
        assert!(pyproject.contains("name = \"geo\""), "{pyproject}");
        assert!(!pyproject.contains("{{"), "{pyproject}");
        let stage = fs::read_to_string(dir.join("stage.toml")).unwrap();
        assert!(stage.contains("path = \"dist/geo.wasm\""), "{stage}");
    }

    #[test]
    fn a_folder_with_files_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let error = create_project(&NewProject {
            dir: dir.path().to_owned(),
            language: Language::Rust,
            name: Some("h".into()),
        })
        .unwrap_err();
        assert!(matches!(error, ProjectError::AlreadyExists { .. }), "{error}");
        assert_eq!(fs::read_to_string(dir.path().join("keep.txt")).unwrap(), "mine");
    }
}
