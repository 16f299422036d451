//! The SDKs are packages a handler project depends on by version: each
//! builds from this repository with its own metadata and installs from a
//! local path. (Publishing them to the registries is not done here.)

use std::path::Path;
use std::process::{Command, Output};

use sluice_tests::workspace_root;
use tempfile::TempDir;

fn succeeded(what: &str, output: Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run(what: &str, command: &mut Command) -> String {
    succeeded(
        what,
        command
            .output()
            .unwrap_or_else(|error| panic!("cannot run {what}: {error}")),
    )
}

#[test]
fn the_rust_sdk_packages_with_the_contract_it_is_generated_from() {
    let files = run(
        "cargo package --list",
        Command::new("cargo")
            .args(["package", "--list", "--allow-dirty", "--offline"])
            .current_dir(workspace_root().join("plugins/sdk")),
    );
    let files: Vec<&str> = files.lines().collect();
    for file in [
        "Cargo.toml",
        "README.md",
        "src/lib.rs",
        "src/types.rs",
        "src/keyvalue.rs",
        "wit/plugin.wit",
        "wit/deps/keyvalue/store.wit",
        "wit/deps/http/http.wit",
    ] {
        assert!(files.contains(&file), "{file} is in the crate: {files:?}");
    }
}

#[test]
fn the_python_sdk_installs_from_its_folder_as_sluice_plugin_0_1_0() {
    let venv = TempDir::new().unwrap();
    run(
        "python3 -m venv",
        Command::new("python3").arg("-m").arg("venv").arg(venv.path()),
    );
    let pip = venv.path().join("bin/pip");
    run(
        "pip install plugins/python/sdk",
        Command::new(&pip)
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(workspace_root().join("plugins/python/sdk")),
    );
    let shown = run(
        "pip show",
        Command::new(&pip).args(["show", "--files", "sluice-plugin"]),
    );
    assert!(shown.contains("Name: sluice-plugin\n"), "{shown}");
    assert!(shown.contains("Version: 0.1.0\n"), "{shown}");
    let location = shown.lines().find_map(|line| line.strip_prefix("Location: ")).unwrap();
    let metadata = std::fs::read_to_string(Path::new(location).join("sluice_plugin-0.1.0.dist-info/METADATA")).unwrap();
    assert!(metadata.contains("License-Expression: Apache-2.0\n"), "{metadata}");
    for module in [
        "__init__.py",
        "records.py",
        "verdicts.py",
        "config.py",
        "log.py",
        "text.py",
        "http.py",
        "keyvalue.py",
        "json_document.py",
    ] {
        assert!(
            shown.contains(&format!("sluice_plugin/{module}")),
            "{module} installed: {shown}"
        );
    }
}

#[test]
fn the_javascript_sdk_packs_and_installs_as_sluice_plugin_0_1_0() {
    let packed = TempDir::new().unwrap();
    let name = run(
        "npm pack",
        Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(packed.path())
            .current_dir(workspace_root().join("plugins/js/sdk")),
    );
    let tarball = packed.path().join(name.trim());
    assert_eq!(name.trim(), "sluice-plugin-0.1.0.tgz");

    let project = TempDir::new().unwrap();
    std::fs::write(
        project.path().join("package.json"),
        r#"{"name": "consumer", "private": true}"#,
    )
    .unwrap();
    run(
        "npm install the packed SDK",
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .arg(&tarball)
            .current_dir(project.path()),
    );
    let installed = project.path().join("node_modules/sluice-plugin");
    let package: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(installed.join("package.json")).unwrap()).unwrap();
    assert_eq!(package["version"], "0.1.0");
    assert_eq!(package["license"], "Apache-2.0");
    for module in [
        "sluice-plugin.js",
        "records.js",
        "verdicts.js",
        "config.js",
        "log.js",
        "utf8.js",
        "keyvalue.js",
        "json-document.js",
        "README.md",
    ] {
        assert!(Path::new(&installed.join(module)).is_file(), "{module} installed");
    }
}
