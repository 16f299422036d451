//! Every file `sluice new` writes and `sluice build` may need, carried
//! inside the binary: the SDKs and the contract are the very files this
//! repository builds its own examples from, so a project made by a given
//! `sluice` speaks the contract that `sluice` runs.

/// A file of a project or an SDK, by its path relative to where it goes.
pub(super) type EmbeddedFile = (&'static str, &'static str);

macro_rules! repository_file {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../", $path))
    };
}

macro_rules! template {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/", $path))
    };
}

/// The contract, `wit/plugin.wit`; each SDK carries it in its `wit/`.
pub(super) const CONTRACT: EmbeddedFile = ("wit/plugin.wit", repository_file!("wit/plugin.wit"));

/// An SDK's files: `$file`s, the contract and the standard WASI packages
/// its `message-handler-io` world imports (`wit/deps/`).
macro_rules! sdk_files {
    ($($file:expr),* $(,)?) => {
        &[
            $($file,)*
            CONTRACT,
            ("wit/deps/cli/cli.wit", repository_file!("wit/deps/cli/cli.wit")),
            ("wit/deps/clocks/clocks.wit", repository_file!("wit/deps/clocks/clocks.wit")),
            ("wit/deps/filesystem/filesystem.wit", repository_file!("wit/deps/filesystem/filesystem.wit")),
            ("wit/deps/http/http.wit", repository_file!("wit/deps/http/http.wit")),
            ("wit/deps/io/io.wit", repository_file!("wit/deps/io/io.wit")),
            ("wit/deps/random/random.wit", repository_file!("wit/deps/random/random.wit")),
            ("wit/deps/sockets/sockets.wit", repository_file!("wit/deps/sockets/sockets.wit")),
            ("wit/deps/keyvalue/atomic.wit", repository_file!("wit/deps/keyvalue/atomic.wit")),
            ("wit/deps/keyvalue/batch.wit", repository_file!("wit/deps/keyvalue/batch.wit")),
            ("wit/deps/keyvalue/store.wit", repository_file!("wit/deps/keyvalue/store.wit")),
            ("wit/deps/keyvalue/watch.wit", repository_file!("wit/deps/keyvalue/watch.wit")),
            ("wit/deps/keyvalue/world.wit", repository_file!("wit/deps/keyvalue/world.wit")),
        ]
    };
}

pub(super) const RUST_SDK: &[EmbeddedFile] = sdk_files![
    ("Cargo.toml", repository_file!("plugins/sdk/Cargo.toml")),
    ("README.md", repository_file!("plugins/sdk/README.md")),
    ("src/lib.rs", repository_file!("plugins/sdk/src/lib.rs")),
    ("src/config.rs", repository_file!("plugins/sdk/src/config.rs")),
    ("src/handler.rs", repository_file!("plugins/sdk/src/handler.rs")),
    ("src/keyvalue.rs", repository_file!("plugins/sdk/src/keyvalue.rs")),
    ("src/log.rs", repository_file!("plugins/sdk/src/log.rs")),
    ("src/types.rs", repository_file!("plugins/sdk/src/types.rs")),
];

pub(super) const PYTHON_SDK: &[EmbeddedFile] = sdk_files![
    ("pyproject.toml", repository_file!("plugins/python/sdk/pyproject.toml")),
    ("README.md", repository_file!("plugins/python/sdk/README.md")),
    (
        "sluice_plugin/__init__.py",
        repository_file!("plugins/python/sdk/sluice_plugin/__init__.py"),
    ),
    (
        "sluice_plugin/config.py",
        repository_file!("plugins/python/sdk/sluice_plugin/config.py"),
    ),
    (
        "sluice_plugin/http.py",
        repository_file!("plugins/python/sdk/sluice_plugin/http.py"),
    ),
    (
        "sluice_plugin/json_document.py",
        repository_file!("plugins/python/sdk/sluice_plugin/json_document.py"),
    ),
    (
        "sluice_plugin/keyvalue.py",
        repository_file!("plugins/python/sdk/sluice_plugin/keyvalue.py"),
    ),
    (
        "sluice_plugin/log.py",
        repository_file!("plugins/python/sdk/sluice_plugin/log.py"),
    ),
    (
        "sluice_plugin/records.py",
        repository_file!("plugins/python/sdk/sluice_plugin/records.py"),
    ),
    (
        "sluice_plugin/text.py",
        repository_file!("plugins/python/sdk/sluice_plugin/text.py"),
    ),
    (
        "sluice_plugin/verdicts.py",
        repository_file!("plugins/python/sdk/sluice_plugin/verdicts.py"),
    ),
];

pub(super) const JAVASCRIPT_SDK: &[EmbeddedFile] = sdk_files![
    ("package.json", repository_file!("plugins/js/sdk/package.json")),
    ("README.md", repository_file!("plugins/js/sdk/README.md")),
    ("sluice-plugin.js", repository_file!("plugins/js/sdk/sluice-plugin.js")),
    ("config.js", repository_file!("plugins/js/sdk/config.js")),
    ("json-document.js", repository_file!("plugins/js/sdk/json-document.js")),
    ("keyvalue.js", repository_file!("plugins/js/sdk/keyvalue.js")),
    ("log.js", repository_file!("plugins/js/sdk/log.js")),
    ("records.js", repository_file!("plugins/js/sdk/records.js")),
    ("utf8.js", repository_file!("plugins/js/sdk/utf8.js")),
    ("verdicts.js", repository_file!("plugins/js/sdk/verdicts.js")),
];

/// componentize-py's pin, as `componentize-py==X.Y.Z`.
pub(super) const PYTHON_REQUIREMENTS: &str = repository_file!("plugins/python/requirements.txt");
/// The JavaScript build tools' pins: the package file and its lock.
pub(super) const JAVASCRIPT_TOOLS_PACKAGE: &str = repository_file!("plugins/js/package.json");
pub(super) const JAVASCRIPT_TOOLS_LOCK: &str = repository_file!("plugins/js/package-lock.json");

/// Files every new project gets. `{{name}}` and friends are filled in.
pub(super) const COMMON: &[EmbeddedFile] = &[
    ("README.md", template!("README.md")),
    (".gitignore", template!("gitignore")),
    ("stage.toml", template!("stage.toml")),
    ("messages.jsonl", repository_file!("tests/fixtures/messages.jsonl")),
    (
        "expected.jsonl",
        repository_file!("tests/fixtures/uppercase.expected.jsonl"),
    ),
];

/// The handlers are the repository's `uppercase` examples, which its tests
/// hold byte-for-byte equal across the three languages.
pub(super) const RUST_PROJECT: &[EmbeddedFile] = &[
    ("Cargo.toml", template!("rust/Cargo.toml")),
    ("Cargo.lock", template!("rust/Cargo.lock")),
    (".cargo/config.toml", template!("rust/cargo-config.toml")),
    ("src/lib.rs", repository_file!("plugins/rust/uppercase/src/lib.rs")),
];

pub(super) const PYTHON_PROJECT: &[EmbeddedFile] = &[
    ("pyproject.toml", template!("python/pyproject.toml")),
    ("handler.py", repository_file!("plugins/python/uppercase/handler.py")),
];

pub(super) const JAVASCRIPT_PROJECT: &[EmbeddedFile] = &[
    ("package.json", template!("js/package.json")),
    ("handler.js", repository_file!("plugins/js/uppercase/handler.js")),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// `version = "X"` or `"version": "X"` in a manifest.
    fn manifest_version(files: &[EmbeddedFile], manifest: &str) -> String {
        let (_, text) = files.iter().find(|(path, _)| *path == manifest).unwrap();
        let line = text
            .lines()
            .find(|line| line.trim_start().starts_with("version =") || line.trim_start().starts_with("\"version\":"))
            .unwrap();
        line.split('"').rev().nth(1).unwrap().to_owned()
    }

    #[test]
    fn every_sdk_and_every_project_template_speaks_the_contracts_version() {
        let contract = CONTRACT
            .1
            .lines()
            .find_map(|line| line.strip_prefix("package sluice:plugin@"))
            .and_then(|rest| rest.strip_suffix(';'))
            .unwrap();
        assert_eq!(manifest_version(RUST_SDK, "Cargo.toml"), contract);
        assert_eq!(manifest_version(PYTHON_SDK, "pyproject.toml"), contract);
        assert_eq!(manifest_version(JAVASCRIPT_SDK, "package.json"), contract);
        let (_, cargo) = RUST_PROJECT[0];
        assert!(
            cargo.contains(&format!("sluice-plugin = {{ version = \"{contract}\"")),
            "{cargo}"
        );
        let (_, pyproject) = PYTHON_PROJECT[0];
        assert!(
            pyproject.contains(&format!("\"sluice-plugin=={contract}\"")),
            "{pyproject}"
        );
    }
}
