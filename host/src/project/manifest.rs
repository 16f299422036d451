//! What `sluice build` reads from a project's own manifest: the handler's
//! name and the tool versions the project pins. A folder without a
//! manifest (a bare `handler.py`) is named after itself and uses the pins
//! this `sluice` carries.

use std::fs;
use std::path::Path;

use super::{Language, ProjectError};

/// A project's name and pins, each absent when its manifest does not say.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ProjectManifest {
    pub name: Option<String>,
    pub componentize_py: Option<String>,
    pub jco: Option<String>,
    pub componentize_js: Option<String>,
    /// A Python project's dependencies other than the SDK, as pip takes them.
    pub python_dependencies: Vec<String>,
    /// The contract world a Python or JavaScript handler is built against
    /// (`[tool.sluice] world`, `"sluice": {"world": ...}`). Their
    /// components import their whole world, so a handler that calls out
    /// names the world with what it calls; default `message-handler`.
    pub world: Option<&'static str>,
}

/// The worlds of `wit/plugin.wit` a handler may be built against.
const WORLDS: [&str; 4] = [
    "message-handler",
    "message-handler-http",
    "message-handler-keyvalue",
    "message-handler-io",
];

/// The world a handler is built against, or why `name` is none.
fn known_world(name: &str, key: &str) -> Result<&'static str, String> {
    WORLDS.into_iter().find(|world| *world == name).ok_or_else(|| {
        format!(
            "{key}: `{name}` is not a world of the contract; use one of {}",
            WORLDS.join(", ")
        )
    })
}

/// Reads one language's manifest text.
type ManifestParser = fn(&str) -> Result<ProjectManifest, String>;

pub(super) fn read_manifest(dir: &Path, language: Language) -> Result<ProjectManifest, ProjectError> {
    let (file, parse): (&str, ManifestParser) = match language {
        Language::Rust => ("Cargo.toml", parse_cargo),
        Language::Python => ("pyproject.toml", parse_pyproject),
        Language::JavaScript => ("package.json", parse_package_json),
    };
    let path = dir.join(file);
    if !path.is_file() {
        return Ok(ProjectManifest::default());
    }
    let text = fs::read_to_string(&path).map_err(ProjectError::io(format!("cannot read {}", path.display())))?;
    parse(&text).map_err(|reason| ProjectError::Manifest { path, reason })
}

fn parse_cargo(text: &str) -> Result<ProjectManifest, String> {
    let manifest: toml::Table = toml::from_str(text).map_err(|error| error.to_string())?;
    let name = manifest
        .get("package")
        .and_then(|package| package.get("name"))
        .and_then(toml::Value::as_str)
        .ok_or("has no [package] name; `sluice build` builds a handler crate, not a workspace")?;
    Ok(ProjectManifest {
        name: Some(name.to_owned()),
        ..ProjectManifest::default()
    })
}

fn parse_pyproject(text: &str) -> Result<ProjectManifest, String> {
    let manifest: toml::Table = toml::from_str(text).map_err(|error| error.to_string())?;
    let project = manifest.get("project");
    let strings = |value: Option<&toml::Value>, key: &str| -> Result<Vec<String>, String> {
        let Some(value) = value else { return Ok(Vec::new()) };
        let list = value.as_array().ok_or(format!("{key} must be a list of strings"))?;
        list.iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or(format!("{key} must be a list of strings"))
            })
            .collect()
    };
    let dependencies = strings(
        project.and_then(|project| project.get("dependencies")),
        "project.dependencies",
    )?;
    let build_group = manifest.get("dependency-groups").and_then(|groups| groups.get("build"));
    let build_tools = strings(build_group, "dependency-groups.build")?;
    let componentize_py = build_tools.iter().find_map(|requirement| {
        let requirement = requirement.replace(' ', "");
        requirement.strip_prefix("componentize-py==").map(str::to_owned)
    });
    let world = match manifest
        .get("tool")
        .and_then(|tool| tool.get("sluice"))
        .and_then(|sluice| sluice.get("world"))
    {
        None => None,
        Some(value) => {
            let name = value.as_str().ok_or("tool.sluice.world must be a string")?;
            Some(known_world(name, "tool.sluice.world")?)
        }
    };
    Ok(ProjectManifest {
        world,
        name: project
            .and_then(|project| project.get("name"))
            .and_then(toml::Value::as_str)
            .map(str::to_owned),
        componentize_py,
        python_dependencies: dependencies
            .into_iter()
            .filter(|requirement| !is_the_sdk(requirement))
            .collect(),
        ..ProjectManifest::default()
    })
}

/// Whether a requirement names the SDK, which the project carries itself.
fn is_the_sdk(requirement: &str) -> bool {
    let name_end = requirement
        .find(|character: char| !(character.is_ascii_alphanumeric() || "-_.".contains(character)))
        .unwrap_or(requirement.len());
    let name = requirement[..name_end].to_ascii_lowercase().replace(['_', '.'], "-");
    name == "sluice-plugin"
}

fn parse_package_json(text: &str) -> Result<ProjectManifest, String> {
    let package: serde_json::Value = serde_json::from_str(text).map_err(|error| error.to_string())?;
    let pin = |name: &str| {
        ["devDependencies", "dependencies"]
            .iter()
            .find_map(|table| package[table][name].as_str())
            .map(|version| version.trim_start_matches(['=', 'v']).to_owned())
    };
    let world = match &package["sluice"]["world"] {
        serde_json::Value::Null => None,
        serde_json::Value::String(name) => Some(known_world(name, "sluice.world")?),
        _ => return Err("sluice.world must be a string".to_owned()),
    };
    Ok(ProjectManifest {
        world,
        // A scoped name (`@team/handler`) names the file after its last part.
        name: package["name"]
            .as_str()
            .map(|name| name.rsplit('/').next().unwrap_or(name).to_owned()),
        jco: pin("@bytecodealliance/jco"),
        componentize_js: pin("@bytecodealliance/componentize-js"),
        ..ProjectManifest::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pyproject_gives_name_pin_and_dependencies_without_the_sdk() {
        let manifest = parse_pyproject(
            r#"
            [project]
            name = "geo"
            dependencies = ["sluice-plugin==0.1.0", "Sluice_Plugin>=0.1", "python-dateutil==2.9.0"]
            [dependency-groups]
            build = ["componentize-py == 0.25.1"]
            "#,
        )
        .unwrap();
        assert_eq!(manifest.name.as_deref(), Some("geo"));
        assert_eq!(manifest.componentize_py.as_deref(), Some("0.25.1"));
        assert_eq!(manifest.python_dependencies, ["python-dateutil==2.9.0"]);
    }

    #[test]
    fn a_package_json_gives_a_scoped_name_and_the_tool_pins() {
        let manifest = parse_package_json(
            r#"{"name": "@team/enrich", "devDependencies": {"@bytecodealliance/jco": "1.35.0",
                "@bytecodealliance/componentize-js": "=0.23.0"}}"#,
        )
        .unwrap();
        assert_eq!(manifest.name.as_deref(), Some("enrich"));
        assert_eq!(manifest.jco.as_deref(), Some("1.35.0"));
        assert_eq!(manifest.componentize_js.as_deref(), Some("0.23.0"));
    }

    #[test]
    fn a_manifest_names_the_world_its_handler_is_built_against() {
        let python = parse_pyproject("[tool.sluice]\nworld = \"message-handler-keyvalue\"\n").unwrap();
        assert_eq!(python.world, Some("message-handler-keyvalue"));
        let javascript = parse_package_json(r#"{"sluice": {"world": "message-handler-http"}}"#).unwrap();
        assert_eq!(javascript.world, Some("message-handler-http"));
        assert_eq!(parse_package_json("{}").unwrap().world, None);
        let error = parse_pyproject("[tool.sluice]\nworld = \"proxy\"\n").unwrap_err();
        assert!(error.contains("tool.sluice.world: `proxy` is not a world"), "{error}");
        assert!(error.contains("message-handler-io"), "{error}");
        let error = parse_package_json(r#"{"sluice": {"world": 3}}"#).unwrap_err();
        assert!(error.contains("sluice.world must be a string"), "{error}");
    }

    #[test]
    fn a_cargo_workspace_without_a_package_is_refused_with_the_reason() {
        let error = parse_cargo("[workspace]\nmembers = [\"a\"]\n").unwrap_err();
        assert!(error.contains("[package] name"), "{error}");
        assert!(parse_cargo("not toml [").is_err());
    }
}
