//! A stage file with a mistake fails at once, naming the key and the
//! problem, before anything connects.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::time::Duration;

use sluice_tests::broker::free_port;
use sluice_tests::rust_plugin;
use sluice_tests::stage::{StageFile, StageSpec};

fn spec_toml(brokers: &str, plugin: &Path, extra: &str) -> String {
    StageSpec {
        brokers,
        plugin,
        group: "g",
        input: "in",
        output: "out",
        dead_letter: "dlq",
        extra,
    }
    .to_toml()
}

fn run(toml: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let env: Vec<(OsString, OsString)> = env
        .iter()
        .map(|(name, value)| (OsString::from(name), OsString::from(value)))
        .collect();
    run_with_os_env(toml, &env)
}

/// `sluice run` with environment variables that need not be Unicode.
fn run_with_os_env(toml: &str, env: &[(OsString, OsString)]) -> (Option<i32>, String) {
    let stage = StageFile::new(toml);
    let mut command = std::process::Command::new(sluice_tests::sluice_bin());
    command
        .arg("run")
        .arg(&stage.path)
        .env("SLUICE_CACHE_DIR", stage.dir.path().join("cache"));
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("sluice runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_key_is_named() {
    let toml = spec_toml("127.0.0.1:9092", &rust_plugin("uppercase"), "").replace("group_id", "grup_id");

    let (code, stderr) = run(&toml, &[]);

    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("`kafka.grup_id`: unknown field: found `grup_id`"),
        "{stderr}"
    );
}

#[test]
fn a_missing_plugin_file_is_named() {
    let toml = spec_toml("127.0.0.1:9092", Path::new("/nowhere/missing.wasm"), "");

    let (code, stderr) = run(&toml, &[]);

    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("`plugin.path` /nowhere/missing.wasm: no such file"),
        "{stderr}"
    );
}

#[test]
fn a_malformed_broker_address_is_named() {
    let toml = spec_toml("localhost", &rust_plugin("uppercase"), "");

    let (code, stderr) = run(&toml, &[]);

    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("`kafka.brokers` \"localhost\" is not a broker address: it has no port"),
        "{stderr}"
    );
}

#[test]
fn environment_overrides_apply_and_their_errors_name_the_variable() {
    let toml = spec_toml("127.0.0.1:9092", &rust_plugin("uppercase"), "");

    let (bad_brokers, brokers_error) = run(&toml, &[("SLUICE_KAFKA_BROKERS", "nohost:")]);
    let (bad_number, number_error) = run(&toml, &[("SLUICE_RETRY_MAX_ATTEMPTS", "lots")]);

    assert_eq!(bad_brokers, Some(1));
    assert!(
        brokers_error.contains("\"nohost:\" is not a broker address"),
        "{brokers_error}"
    );
    assert_eq!(bad_number, Some(1));
    assert!(
        number_error.contains("`retry.max_attempts`")
            && number_error.contains("environment variable SLUICE_RETRY_MAX_ATTEMPTS"),
        "{number_error}"
    );
}

#[test]
fn a_profile_from_the_environment_applies_and_is_checked_with_the_file() {
    // slow-handler drains for 60 s; the file's own 30 s health limit would
    // call the stage stuck during a legitimate drain.
    let toml = spec_toml(
        "127.0.0.1:9092",
        &rust_plugin("uppercase"),
        "[observe]\nstuck_after_seconds = 30\n",
    );

    let (conflict, conflict_error) = run(&toml, &[("SLUICE_STAGE_PROFILE", "slow-handler")]);
    let (unknown, unknown_error) = run(&toml, &[("SLUICE_STAGE_PROFILE", "turbo")]);

    assert_eq!(conflict, Some(1));
    assert!(
        conflict_error.contains("`observe.stuck_after_seconds` must be longer than stage.drain_timeout_ms (60000 ms)"),
        "{conflict_error}"
    );
    assert_eq!(unknown, Some(1));
    assert!(
        unknown_error.contains("`stage.profile` \"turbo\" is not a profile; use \"fast\", \"slow-handler\""),
        "{unknown_error}"
    );
}

#[test]
fn out_of_range_values_are_explained() {
    let toml = spec_toml("127.0.0.1:9092", &rust_plugin("uppercase"), "[retry]\njitter = 3.0\n");

    let (code, stderr) = run(&toml, &[]);

    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("`retry.jitter` must be between 0 and 1, got 3"),
        "{stderr}"
    );
}

#[test]
fn values_past_their_upper_bound_are_named_with_the_bound() {
    let toml = spec_toml(
        "127.0.0.1:9092",
        &rust_plugin("uppercase"),
        "[retry]\nmultiplier = 1e300\n",
    );

    let (multiplier, multiplier_error) = run(&toml, &[]);
    let (ttl, ttl_error) = run(
        &format!("{toml}\n[dedup]\nkey = \"message-key\"\nttl_seconds = 9000000000000\n")
            .replace("multiplier = 1e300", ""),
        &[],
    );
    let (batch, batch_error) = run(
        &toml.replace("multiplier = 1e300", ""),
        &[("SLUICE_STAGE_BATCH_SIZE", "100000000")],
    );

    assert_eq!(multiplier, Some(1));
    assert!(
        multiplier_error.contains("`retry.multiplier` must be between 1 and 100, got 1e300"),
        "{multiplier_error}"
    );
    assert_eq!(ttl, Some(1));
    assert!(
        ttl_error.contains("`dedup.ttl_seconds` must be between 1 and 315360000, got 9000000000000"),
        "{ttl_error}"
    );
    assert_eq!(batch, Some(1));
    assert!(
        batch_error.contains("`stage.batch_size` must be between 1 and 10000, got 100000000"),
        "{batch_error}"
    );
}

/// Latin-1 bytes: a fine value for a C program, not UTF-8.
fn latin1(text: &[u8]) -> OsString {
    OsString::from_vec(text.to_vec())
}

#[test]
fn a_stage_key_variable_that_is_not_utf8_is_named() {
    let toml = spec_toml("127.0.0.1:9092", &rust_plugin("uppercase"), "");

    let (code, stderr) = run_with_os_env(&toml, &[("SLUICE_STAGE_NAME".into(), latin1(b"caf\xe9"))]);

    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("environment variable SLUICE_STAGE_NAME is not valid UTF-8"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn variables_that_are_not_ours_may_hold_any_bytes() {
    // The stage file is wrong on purpose, so the run ends at validation:
    // what matters is that it got there instead of panicking on the
    // environment.
    let toml = spec_toml("127.0.0.1:9092", &rust_plugin("uppercase"), "[retry]\njitter = 3.0\n");

    let (code, stderr) = run_with_os_env(
        &toml,
        &[
            ("LEGACY_PATH".into(), latin1(b"/data/caf\xe9")),
            (latin1(b"CAF\xc9_NAME"), "x".into()),
            ("SLUICE_LOG".into(), latin1(b"\xff")),
        ],
    );

    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("`retry.jitter` must be between 0 and 1, got 3"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_broker_fails_with_the_address() {
    let address = format!("127.0.0.1:{}", free_port());
    let toml = spec_toml(
        &address,
        &rust_plugin("uppercase"),
        "[startup]\nmax_attempts = 3\ninitial_backoff_ms = 100\n",
    );
    let started = std::time::Instant::now();

    let (code, stderr) = run(&toml, &[]);

    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("cannot start (broker metadata): gave up after 3 attempts"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot read cluster metadata from {address}")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("startup step failed; retrying").count(), 2, "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(60));
}
