//! `sluice test` is the plugin author's local loop: messages from a JSON
//! Lines file in, one exact JSON verdict per message out, no Kafka needed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sluice_tests::{fixture, rust_plugin, sluice_bin};
use tempfile::TempDir;

fn sluice_test(plugin: &str, input: &Path, extra: &[&str]) -> Output {
    let cache = TempDir::new().unwrap();
    Command::new(sluice_bin())
        .arg("test")
        .arg(rust_plugin(plugin))
        .arg("--input")
        .arg(input)
        .args(extra)
        .env("SLUICE_CACHE_DIR", cache.path())
        .output()
        .expect("sluice runs")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "sluice test failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

const ENRICH_CONFIG: [&str; 4] = ["--config", "add.env=prod", "--config", "add.version=3"];
const FANOUT_CONFIG: [&str; 6] = [
    "--config",
    "copies=3",
    "--config",
    "topic-a=left",
    "--config",
    "topic-b=right",
];

#[test]
fn uppercase_output_is_exact() {
    let output = sluice_test("uppercase", &fixture("messages.jsonl"), &[]);
    assert_eq!(stdout_of(&output), expected("uppercase.expected.jsonl"));
}

#[test]
fn json_enrich_output_is_exact() {
    let output = sluice_test("json-enrich", &fixture("messages.jsonl"), &ENRICH_CONFIG);
    assert_eq!(stdout_of(&output), expected("json-enrich.expected.jsonl"));
}

#[test]
fn fanout_output_is_exact() {
    let output = sluice_test("fanout", &fixture("messages.jsonl"), &FANOUT_CONFIG);
    assert_eq!(stdout_of(&output), expected("fanout.expected.jsonl"));
}

#[test]
fn batched_calls_print_exactly_what_single_calls_print() {
    for (plugin, config, expected_file) in [
        ("uppercase", &[][..], "uppercase.expected.jsonl"),
        ("json-enrich", &ENRICH_CONFIG[..], "json-enrich.expected.jsonl"),
        ("fanout", &FANOUT_CONFIG[..], "fanout.expected.jsonl"),
    ] {
        let mut args = vec!["--batch", "3"];
        args.extend_from_slice(config);
        let output = sluice_test(plugin, &fixture("messages.jsonl"), &args);
        assert_eq!(stdout_of(&output), expected(expected_file), "{plugin} with --batch 3");
    }
}

#[test]
fn messages_can_come_from_stdin() {
    let cache = TempDir::new().unwrap();
    let mut child = Command::new(sluice_bin())
        .args(["test", rust_plugin("uppercase").to_str().unwrap(), "--input", "-"])
        .env("SLUICE_CACHE_DIR", cache.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"value\": \"first\"}\n\n{\"value\": \"second\", \"key\": \"k\"}\n")
        .unwrap();

    let output = child.wait_with_output().unwrap();

    assert_eq!(
        stdout_of(&output),
        "{\"topic\":\"test\",\"partition\":0,\"offset\":0,\"verdict\":\"success\",\"outputs\":[{\"topic\":null,\"key\":null,\"value\":\"FIRST\",\"headers\":[]}]}\n\
         {\"topic\":\"test\",\"partition\":0,\"offset\":1,\"verdict\":\"success\",\"outputs\":[{\"topic\":null,\"key\":\"k\",\"value\":\"SECOND\",\"headers\":[]}]}\n"
    );
}

#[test]
fn a_failing_call_is_reported_and_the_run_goes_on() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("input.jsonl");
    std::fs::write(
        &input,
        "{\"value\": \"a\"}\n{\"value\": \"TRAP\"}\n{\"value\": \"b\"}\n",
    )
    .unwrap();

    let output = sluice_test("trap-on-marker", &input, &[]);

    let stdout = stdout_of(&output);
    let lines: Vec<serde_json::Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["verdict"], "success");
    assert_eq!(lines[1]["verdict"], "failed");
    let reason = lines[1]["reason"].as_str().unwrap();
    assert!(reason.starts_with("plugin trapped: "), "{reason}");
    assert!(reason.contains("found the marker value"), "{reason}");
    assert_eq!(lines[2]["verdict"], "success");
    assert_eq!(lines[2]["outputs"][0]["value"], "b");
}

#[test]
fn a_malformed_input_line_is_named_by_number() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, "{\"value\": \"a\"}\n{\"value\": 42}\n").unwrap();

    let output = sluice_test("uppercase", &input, &[]);

    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: {}: line 2: invalid type: integer `42`",
            input.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_bad_config_argument_is_a_usage_error() {
    let output = sluice_test("uppercase", &fixture("messages.jsonl"), &["--config", "no-equals-sign"]);

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("expected KEY=VALUE, got \"no-equals-sign\""),
        "{stderr}"
    );
}
