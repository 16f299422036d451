//! `sluice check` tells a plugin author, in one line, whether a file is a
//! plugin sluice can run and, if not, what is wrong with it.

use std::path::Path;
use std::process::{Command, Output};

use sluice_tests::{rust_plugin, sluice_bin};
use tempfile::TempDir;

fn check(path: &Path) -> Output {
    let cache = TempDir::new().unwrap();
    Command::new(sluice_bin())
        .arg("check")
        .arg(path)
        .env("SLUICE_CACHE_DIR", cache.path())
        .output()
        .expect("sluice runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_temp(dir: &TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_good_plugin_passes_and_its_exports_are_listed() {
    let path = rust_plugin("uppercase");

    let output = check(&path);

    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert!(
        stdout.starts_with(&format!(
            "{}: ok, implements sluice:plugin/message-handler@0.1.0\n",
            path.display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("  name:    uppercase\n"), "{stdout}");
    assert!(
        stdout.contains("  exports: handle (function), handle-batch (function)\n"),
        "{stdout}"
    );
    assert!(stdout.contains("    sluice:plugin/types@0.1.0\n"), "{stdout}");
}

#[test]
fn a_truncated_file_is_not_a_valid_component() {
    let dir = TempDir::new().unwrap();
    let bytes = std::fs::read(rust_plugin("uppercase")).unwrap();
    let path = write_temp(&dir, "truncated.wasm", &bytes[..bytes.len() / 2]);

    let output = check(&path);

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&format!(
            "error: {}: is not a valid WebAssembly component: ",
            path.display()
        )),
        "{message}"
    );
}

#[test]
fn random_bytes_are_not_webassembly() {
    let dir = TempDir::new().unwrap();
    // A fixed xorshift sequence: random-looking, reproducible.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let path = write_temp(&dir, "random.wasm", &bytes);

    let output = check(&path);

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!(
            "error: {}: is not a WebAssembly file (it does not start with the `\\0asm` magic bytes)\n",
            path.display()
        )
    );
}

#[test]
fn a_core_module_is_told_to_become_a_component() {
    let dir = TempDir::new().unwrap();
    let module = wat::parse_str(r#"(module (func (export "handle") (result i32) i32.const 0))"#).unwrap();
    let path = write_temp(&dir, "core.wasm", &module);

    let output = check(&path);

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!(
            "error: {}: is a core WebAssembly module, not a component; build it as a component",
            path.display()
        )),
        "{message}"
    );
}

#[test]
fn a_component_of_another_world_names_the_missing_exports() {
    let path = rust_plugin("wrong-world");

    let output = check(&path);

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!(
            "error: {}: does not implement sluice:plugin/message-handler@0.1.0: \
             missing exports `handle`, `handle-batch` (it exports: greet (function))\n",
            path.display()
        )
    );
}

#[test]
fn missing_files_directories_and_empty_files_are_named_plainly() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope.wasm");
    let empty = write_temp(&dir, "empty.wasm", b"");

    let missing_output = check(&missing);
    let directory_output = check(dir.path());
    let empty_output = check(&empty);

    assert_eq!(missing_output.status.code(), Some(1));
    assert_eq!(
        stderr(&missing_output),
        format!("error: {}: no such file\n", missing.display())
    );
    assert_eq!(
        stderr(&directory_output),
        format!("error: {}: is a directory, not a plugin file\n", dir.path().display())
    );
    assert_eq!(stderr(&empty_output), format!("error: {}: is empty\n", empty.display()));
}

#[test]
fn a_plugin_that_calls_out_lists_the_capability_a_stage_must_grant() {
    let output = check(&rust_plugin("enrich-http"));
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert!(
        stdout.contains("  capabilities:\n    outbound HTTP (wasi:http/outgoing-handler@0.2."),
        "{stdout}"
    );
    assert!(
        stdout.contains("a stage must grant it: [plugin.capabilities.http]\n"),
        "{stdout}"
    );
    let pure = String::from_utf8(check(&rust_plugin("uppercase")).stdout).unwrap();
    assert!(pure.contains("  capabilities: none (a pure transform)\n"), "{pure}");
    // A capability several imports ask for is one line naming them all.
    let stateful = String::from_utf8(check(&rust_plugin("keyvalue-probe")).stdout).unwrap();
    assert!(
        stateful.contains(
            "  capabilities:\n    key-value store (wasi:keyvalue/store@0.2.0-draft, wasi:keyvalue/atomics@0.2.0-draft, wasi:keyvalue/batch@0.2.0-draft): a stage must grant it: [plugin.capabilities.keyvalue]\n  imports:"
        ),
        "{stateful}"
    );
}

#[test]
fn checked_against_a_stage_a_capability_it_does_not_grant_fails() {
    let dir = TempDir::new().unwrap();
    let plugin = rust_plugin("enrich-http");
    let stage_file = |extra: &str| {
        let text = format!(
            "[stage]\nname = \"check\"\n\n[plugin]\npath = {:?}\n\n[kafka]\nbrokers = \"localhost:9092\"\ngroup_id = \"g\"\ninput_topics = \"in\"\noutput_topic = \"out\"\ndead_letter_topic = \"dlq\"\n{extra}",
            plugin
        );
        write_temp(&dir, "stage.toml", text.as_bytes())
    };
    let with_stage = |stage: &Path| {
        let cache = TempDir::new().unwrap();
        Command::new(sluice_bin())
            .arg("check")
            .arg(&plugin)
            .arg("--stage")
            .arg(stage)
            .env("SLUICE_CACHE_DIR", cache.path())
            .output()
            .expect("sluice runs")
    };

    let refused = with_stage(&stage_file(""));
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("which this stage does not grant: add [plugin.capabilities.http] to the stage file"),
        "{}",
        stderr(&refused)
    );

    let granted = with_stage(&stage_file(
        "\n[plugin.capabilities.http]\nallowed_origins = \"https://api.example.com\"\n",
    ));
    let stdout = String::from_utf8(granted.stdout.clone()).unwrap();
    assert!(granted.status.success(), "stderr: {}", stderr(&granted));
    assert!(stdout.contains(": granted by "), "{stdout}");
}
