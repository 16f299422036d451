//! `sluice test` is the plugin author's local loop: messages from a JSON
//! Lines file in, one exact JSON verdict per message out, no Kafka needed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use proptest::prelude::*;
use sluice_tests::{fixture, rust_plugin, shared_plugin_cache, sluice_bin};
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

#[test]
fn expected_results_that_match_pass() {
    let expect = fixture("uppercase.expected.jsonl");
    let output = sluice_test(
        "uppercase",
        &fixture("messages.jsonl"),
        &["--expect", expect.to_str().unwrap()],
    );
    let stdout = stdout_of(&output);
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("results as expected"), "{stdout}");
}

#[test]
fn a_differing_result_fails_naming_the_message_and_field_and_update_fixes_it() {
    let dir = TempDir::new().unwrap();
    let expect = dir.path().join("expected.jsonl");
    // The author's handler changed: it used to leave the first message's
    // text alone.
    let original = expected("uppercase.expected.jsonl");
    let edited = original.replacen("\"HELLO, WORLD\"", "\"hello, world\"", 1);
    assert_ne!(edited, original, "the fixture has the value to edit");
    std::fs::write(&expect, &edited).unwrap();
    let args = ["--expect", expect.to_str().unwrap()];

    let output = sluice_test("uppercase", &fixture("messages.jsonl"), &args);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains(
            "message 1 (events/0@10) differs:\n  outputs[0].value: expected \"hello, world\", got \"HELLO, WORLD\"\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("FAILED: 1 of "), "{stdout}");
    assert_eq!(stdout.matches("differs:").count(), 1, "only that message: {stdout}");

    let update = sluice_test(
        "uppercase",
        &fixture("messages.jsonl"),
        &["--expect", expect.to_str().unwrap(), "--update"],
    );
    assert!(stdout_of(&update).starts_with("updated "));
    assert_eq!(std::fs::read_to_string(&expect).unwrap(), original);
    let again = sluice_test("uppercase", &fixture("messages.jsonl"), &args);
    assert!(stdout_of(&again).starts_with("ok: "));
}

#[test]
fn fewer_expected_lines_than_messages_fail_on_the_extra_message() {
    let dir = TempDir::new().unwrap();
    let expect = dir.path().join("expected.jsonl");
    let all = expected("uppercase.expected.jsonl");
    let lines: Vec<&str> = all.lines().collect();
    std::fs::write(&expect, lines[..lines.len() - 1].join("\n")).unwrap();

    let output = sluice_test(
        "uppercase",
        &fixture("messages.jsonl"),
        &["--expect", expect.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last = lines.len();
    assert!(
        stdout.contains(&format!("message {last} (")) && stdout.contains("  result: expected nothing, got {"),
        "{stdout}"
    );
}

#[test]
fn update_needs_an_expected_file_and_a_broken_one_is_named_by_line() {
    let output = sluice_test("uppercase", &fixture("messages.jsonl"), &["--update"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--expect"));

    let dir = TempDir::new().unwrap();
    let expect = dir.path().join("expected.jsonl");
    std::fs::write(&expect, "{\"verdict\": \"success\"}\n\nnot json\n").unwrap();
    let output = sluice_test(
        "uppercase",
        &fixture("messages.jsonl"),
        &["--expect", expect.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 3: not a JSON result line"), "{stderr}");
}

#[test]
fn limits_outside_their_bounds_are_usage_errors_naming_the_flag() {
    for (flag, value) in [
        ("--deadline-ms", "0"),
        ("--deadline-ms", "600001"),
        ("--memory-mib", "0"),
        ("--memory-mib", "4097"),
    ] {
        let output = sluice_test("uppercase", &fixture("messages.jsonl"), &[flag, value]);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains("not in"),
            "{flag} {value}: {stderr}"
        );
    }
}

/// One input line of a generated file: a message, a blank line, or a line
/// that is wrong in one of the ways people get JSON Lines wrong.
#[derive(Debug, Clone)]
enum Line {
    Message(serde_json::Value),
    Blank(&'static str),
    Broken(Vec<u8>),
}

fn any_line() -> impl Strategy<Value = Line> {
    let message = (
        prop::option::of(any::<String>()),
        prop::option::of(any::<String>()),
        prop::option::of(any::<i32>()),
        prop::option::of(any::<u32>()),
        prop::collection::btree_map("[a-z-]{1,6}", any::<String>(), 0..3),
    )
        .prop_map(|(key, value, partition, attempt, headers)| {
            let mut object = serde_json::Map::new();
            if let Some(key) = key {
                object.insert("key".into(), key.into());
            }
            if let Some(value) = value {
                object.insert("value".into(), value.into());
            }
            if let Some(partition) = partition {
                object.insert("partition".into(), partition.into());
            }
            if let Some(attempt) = attempt {
                object.insert("attempt".into(), attempt.into());
            }
            object.insert(
                "headers".into(),
                headers
                    .into_iter()
                    .map(|(name, value)| (name, value.into()))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            );
            Line::Message(serde_json::Value::Object(object))
        });
    let broken: Vec<&'static [u8]> = vec![
        b"{\"value\": \"unterminated",
        b"not json at all",
        b"[1, 2, 3]",
        b"\"just a string\"",
        b"{\"value\": 42}",
        b"{\"vaule\": \"typo\"}",
        b"{\"value\": \"a\", \"value_base64\": \"YQ==\"}",
        b"{\"key_base64\": \"***\"}",
        b"{\"headers\": {\"h\": 1}}",
        b"{\"headers\": [{\"name\": \"h\"}]}",
        b"{\"partition\": 3000000000}",
        b"{\"attempt\": -1}",
        b"{\"offset\": 1e400}",
        b"{\"value\": \"caf\xe9\"}",
        b"\xff\xfe",
    ];
    prop_oneof![
        6 => message,
        1 => prop::sample::select(vec!["", "   ", "\t"]).prop_map(Line::Blank),
        2 => prop::sample::select(broken).prop_map(|bytes| Line::Broken(bytes.to_vec())),
    ]
}

proptest! {
    // Each case runs the binary once (the plugin comes from the shared
    // compiled cache): a couple of seconds in all.
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever the input file holds, `sluice test` never panics: it prints
    /// a verdict for every message up to the first bad line, then fails
    /// naming that line's number.
    #[test]
    fn any_input_file_gives_verdicts_then_names_the_first_bad_line(
        lines in prop::collection::vec(any_line(), 0..12),
    ) {
        let dir = TempDir::new().unwrap();
        let input = dir.path().join("input.jsonl");
        let mut bytes = Vec::new();
        for line in &lines {
            match line {
                Line::Message(value) => bytes.extend_from_slice(value.to_string().as_bytes()),
                Line::Blank(text) => bytes.extend_from_slice(text.as_bytes()),
                Line::Broken(raw) => bytes.extend_from_slice(raw),
            }
            bytes.push(b'\n');
        }
        std::fs::write(&input, &bytes).unwrap();

        let output = Command::new(sluice_bin())
            .arg("test")
            .arg(rust_plugin("uppercase"))
            .arg("--input")
            .arg(&input)
            .env("SLUICE_CACHE_DIR", shared_plugin_cache())
            .output()
            .expect("sluice runs");

        let stderr = String::from_utf8_lossy(&output.stderr);
        let first_bad = lines.iter().position(|line| matches!(line, Line::Broken(_)));
        let expected_verdicts = lines[..first_bad.unwrap_or(lines.len())]
            .iter()
            .filter(|line| matches!(line, Line::Message(_)))
            .count();
        prop_assert!(!stderr.contains("panicked"), "{stderr}");
        prop_assert_eq!(output.stdout.iter().filter(|&&byte| byte == b'\n').count(), expected_verdicts);
        match first_bad {
            None => prop_assert!(output.status.success(), "{stderr}"),
            Some(index) => {
                prop_assert_eq!(output.status.code(), Some(1), "{}", stderr);
                prop_assert!(stderr.contains(&format!("line {}: ", index + 1)), "{stderr}");
            }
        }
    }
}

#[test]
fn with_a_stage_file_the_plugin_gets_the_stage_grants_and_config() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("messages.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"partition\": 0, \"offset\": 1, \"key\": \"a\", \"value\": \"x\"}\n",
            "{\"partition\": 0, \"offset\": 2, \"key\": \"b\", \"value\": \"x\"}\n",
            "{\"partition\": 0, \"offset\": 3, \"key\": \"a\", \"value\": \"x\"}\n",
        ),
    )
    .unwrap();
    let stage = dir.path().join("stage.toml");
    std::fs::write(
        &stage,
        format!(
            "[stage]\nname = \"counting\"\n\n[plugin]\npath = {:?}\n\n[plugin.config]\nbucket = \"tallies\"\n\n[plugin.capabilities.keyvalue]\nbuckets = [\"tallies\"]\n\n[kafka]\nbrokers = \"localhost:9092\"\ngroup_id = \"g\"\ninput_topics = \"in\"\noutput_topic = \"out\"\ndead_letter_topic = \"dlq\"\n",
            rust_plugin("count-by-key")
        ),
    )
    .unwrap();

    let counted = stdout_of(&sluice_test(
        "count-by-key",
        &input,
        &["--stage", stage.to_str().unwrap()],
    ));
    let values: Vec<&str> = counted
        .lines()
        .map(|line| {
            let start = line.find("\"value\":\"").expect("an output value") + 9;
            &line[start..start + line[start..].find('"').unwrap()]
        })
        .collect();
    assert_eq!(values, ["1", "1", "2"], "{counted}");

    // Without the stage nothing is granted: the plugin sees the refusal.
    let refused = stdout_of(&sluice_test("count-by-key", &input, &[]));
    assert!(
        refused.contains("\"reason\":\"count-by-key: the stage does not grant bucket `default`\""),
        "{refused}"
    );
}
