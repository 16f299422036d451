//! The example plugins exist in Rust, Python and JavaScript, and a handler's
//! language must not show in its output: over the same messages and config,
//! `sluice test` prints the same bytes for all three, and those bytes are the
//! expected fixture. `edge-cases.jsonl` holds what tends to differ between
//! languages: invalid UTF-8 of every kind, Unicode case mappings that change
//! length, and JSON whose numbers, key order, escapes, surrogates and depth
//! trip up a naive port.
//!
//! `sdk-tour` does the same for every helper of the three SDKs.
//!
//! Python and JavaScript components take seconds to compile, so these tests
//! share one compiled-plugin cache (see `shared_plugin_cache`).

use std::path::Path;
use std::process::Command;

use sluice_tests::{Language, fixture, js_plugin, python_plugin, shared_plugin_cache, sluice_bin};
use tempfile::TempDir;

const ENRICH_CONFIG: [&str; 4] = ["--config", "add.env=prod", "--config", "add.version=3"];
/// Adds a number with an upper-case exponent and a value that is not JSON.
const EDGE_ENRICH_CONFIG: [&str; 8] = [
    "--config",
    "add.env=prod",
    "--config",
    "add.version=3",
    "--config",
    "add.ratio=1.50E3",
    "--config",
    "add.note=not-json",
];

/// What `sluice test` prints for `plugin` over `input`; fails on a non-zero exit.
fn sluice_test(plugin: &Path, input: &Path, extra: &[&str]) -> String {
    sluice_test_with_log(plugin, input, extra).0
}

/// `sluice test`'s standard output and its log (standard error).
fn sluice_test_with_log(plugin: &Path, input: &Path, extra: &[&str]) -> (String, String) {
    let output = Command::new(sluice_bin())
        .arg("test")
        .arg(plugin)
        .arg("--input")
        .arg(input)
        .args(extra)
        .env("SLUICE_CACHE_DIR", shared_plugin_cache())
        .env("SLUICE_LOG", "info")
        .output()
        .expect("sluice runs");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "sluice test {} failed: {log}",
        plugin.display()
    );
    (String::from_utf8(output.stdout).expect("sluice test prints UTF-8"), log)
}

/// Runs `plugin` in every language over each (input, config, expected
/// output) case, one call at a time and in batches, and asserts that every
/// language printed exactly the expected bytes.
fn assert_every_language_prints_expected(plugin: &str, cases: &[(&str, &[&str], &str)]) {
    for &(input, config, expected_file) in cases {
        let expected = std::fs::read_to_string(fixture(expected_file)).unwrap();
        for batch in [None, Some("3")] {
            let mut args = config.to_vec();
            if let Some(size) = batch {
                args.extend(["--batch", size]);
            }
            let printed: Vec<(Language, String)> = Language::ALL
                .iter()
                .map(|&language| (language, sluice_test(&language.plugin(plugin), &fixture(input), &args)))
                .collect();
            let wanted: Vec<(Language, String)> = Language::ALL
                .iter()
                .map(|&language| (language, expected.clone()))
                .collect();
            assert!(
                printed == wanted,
                "{plugin} over {input} (batch {batch:?}) differs from {expected_file}:\n{}",
                differences(&printed, &expected)
            );
        }
    }
}

/// The first differing line of each language that got it wrong.
fn differences(printed: &[(Language, String)], expected: &str) -> String {
    let mut report = String::new();
    for (language, output) in printed {
        let mismatch = output
            .lines()
            .zip(expected.lines())
            .enumerate()
            .find(|(_, (got, wanted))| got != wanted);
        match mismatch {
            Some((line, (got, wanted))) => {
                report += &format!(
                    "{language:?}, line {}:\n  got:      {got}\n  expected: {wanted}\n",
                    line + 1
                )
            }
            None if output.lines().count() != expected.lines().count() => {
                report += &format!(
                    "{language:?}: {} lines, expected {}\n",
                    output.lines().count(),
                    expected.lines().count()
                )
            }
            None => {}
        }
    }
    report
}

#[test]
fn uppercase_prints_the_same_bytes_in_rust_python_and_javascript() {
    assert_every_language_prints_expected(
        "uppercase",
        &[
            ("messages.jsonl", &[], "uppercase.expected.jsonl"),
            ("edge-cases.jsonl", &[], "edge-cases.uppercase.expected.jsonl"),
        ],
    );
}

#[test]
fn json_enrich_prints_the_same_bytes_in_rust_python_and_javascript() {
    assert_every_language_prints_expected(
        "json-enrich",
        &[
            ("messages.jsonl", &ENRICH_CONFIG, "json-enrich.expected.jsonl"),
            (
                "edge-cases.jsonl",
                &EDGE_ENRICH_CONFIG,
                "edge-cases.json-enrich.expected.jsonl",
            ),
        ],
    );
}

/// The SDKs are the same toolkit: every verdict, output builder, header,
/// key and config helper, and logging, give the same result in each language.
#[test]
fn the_three_sdks_agree_on_every_helper() {
    let expected = std::fs::read_to_string(fixture("sdk-tour.expected.jsonl")).unwrap();
    for language in Language::ALL {
        let (printed, log) = sluice_test_with_log(
            &language.plugin("sdk-tour"),
            &fixture("sdk-tour.jsonl"),
            &["--config", "greeting=hello", "--config", "extra=1"],
        );

        assert!(
            printed == expected,
            "{language:?}:\n{}",
            differences(&[(language, printed.clone())], &expected)
        );
        let logged: Vec<&str> = log
            .lines()
            .filter_map(|line| line.split_once("sdk-tour: ").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split_once(" plugin=").map(|(command, _)| command))
            .collect();
        assert_eq!(
            logged,
            [
                "filter",
                "retry",
                "retry-later",
                "dead-letter",
                "build",
                "header",
                "header",
                "header",
                "key",
                "key",
                "key",
                "config",
                "anything else"
            ],
            "{language:?} log:\n{log}"
        );
    }
}

/// An uncaught exception is a failed attempt whose reason quotes it, and the
/// next message is handled by a fresh instance.
#[test]
fn python_and_javascript_exceptions_are_failed_attempts_quoting_the_exception() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("input.jsonl");
    std::fs::write(
        &input,
        "{\"value\": \"a\"}\n{\"value\": \"TRAP\"}\n{\"value\": \"b\"}\n",
    )
    .unwrap();

    for (plugin, exception) in [
        (
            python_plugin("raise-on-marker"),
            "handler.MarkerFound: found the marker value 'TRAP'",
        ),
        (js_plugin("throw-on-marker"), "found the marker value \"TRAP\""),
    ] {
        let printed = sluice_test(&plugin, &input, &[]);

        let lines: Vec<serde_json::Value> = printed
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{printed}");
        assert_eq!(lines[0]["outputs"][0]["value"], "a", "{printed}");
        assert_eq!(lines[1]["verdict"], "failed", "{printed}");
        let reason = lines[1]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("plugin trapped: wasm `unreachable` instruction executed (guest stderr: "),
            "{reason}"
        );
        assert!(reason.contains(exception), "{} reason: {reason}", plugin.display());
        assert_eq!(lines[2]["outputs"][0]["value"], "b", "{printed}");
    }
}
