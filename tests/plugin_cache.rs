//! Compiled plugins are cached on disk by content hash: loading the same
//! bytes again, even from a new process, does not run the compiler.

use sluice::plugin::{PluginRuntime, PluginSettings};
use sluice_tests::{rust_plugin, text_message};
use tempfile::TempDir;

#[test]
fn second_load_of_the_same_file_does_not_recompile() {
    let cache = TempDir::new().unwrap();
    let path = rust_plugin("uppercase");

    let first_runtime = PluginRuntime::new(Some(cache.path())).unwrap();
    let first = first_runtime.load_file(&path, PluginSettings::default()).unwrap();
    let again = first_runtime.load_file(&path, PluginSettings::default()).unwrap();
    // A new runtime is what a restarted process has: only the disk is shared.
    let restarted_runtime = PluginRuntime::new(Some(cache.path())).unwrap();
    let restarted = restarted_runtime.load_file(&path, PluginSettings::default()).unwrap();

    assert_eq!(first_runtime.compilations(), 1);
    assert!(!first.loaded_from_cache());
    assert!(again.loaded_from_cache());
    assert_eq!(restarted_runtime.compilations(), 0);
    assert!(restarted.loaded_from_cache());
    assert_eq!(first.version(), restarted.version());
    assert!(restarted.worker().handle_blocking(&text_message(0, "works")).is_ok());
}

#[test]
fn a_changed_file_is_a_new_version_and_is_compiled() {
    let cache = TempDir::new().unwrap();
    let runtime = PluginRuntime::new(Some(cache.path())).unwrap();

    let uppercase = runtime
        .load_file(&rust_plugin("uppercase"), PluginSettings::default())
        .unwrap();
    let fanout = runtime
        .load_file(&rust_plugin("fanout"), PluginSettings::default())
        .unwrap();

    assert_ne!(uppercase.version(), fanout.version());
    assert_eq!(runtime.compilations(), 2);
}

#[test]
fn a_corrupt_cache_entry_is_recompiled_not_trusted() {
    let cache = TempDir::new().unwrap();
    let path = rust_plugin("uppercase");
    PluginRuntime::new(Some(cache.path()))
        .unwrap()
        .load_file(&path, PluginSettings::default())
        .unwrap();
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"definitely not machine code").unwrap();
    }

    let runtime = PluginRuntime::new(Some(cache.path())).unwrap();
    let plugin = runtime.load_file(&path, PluginSettings::default()).unwrap();

    assert_eq!(runtime.compilations(), 1);
    assert!(!plugin.loaded_from_cache());
    assert!(plugin.worker().handle_blocking(&text_message(0, "works")).is_ok());
}

#[test]
fn version_is_the_sha256_of_the_file() {
    let cache = TempDir::new().unwrap();
    let runtime = PluginRuntime::new(Some(cache.path())).unwrap();
    let path = rust_plugin("uppercase");

    let plugin = runtime.load_file(&path, PluginSettings::default()).unwrap();

    let sha256sum = std::process::Command::new("sha256sum").arg(&path).output().unwrap();
    let expected = String::from_utf8(sha256sum.stdout).unwrap();
    assert_eq!(plugin.version().full(), expected.split_whitespace().next().unwrap());
    assert_eq!(plugin.version().to_string(), plugin.version().full()[..12]);
    assert_eq!(plugin.name(), "uppercase");
}
