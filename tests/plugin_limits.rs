//! A misbehaving plugin costs one failed call, never the worker: the call
//! comes back as a failure with a readable reason, and the next message runs
//! on a fresh instance. A plugin that merely leaks costs no call at all: its
//! instance is replaced before it reaches the memory cap.

use sluice::plugin::{FailureKind, Output, PluginFailure, PluginLimits, PluginSettings, Verdict};
use sluice_tests::{TestRuntime, rust_plugin, text_message};

fn settings(limits: PluginLimits) -> PluginSettings {
    PluginSettings {
        limits,
        ..PluginSettings::default()
    }
}

fn passed_through(value: &str) -> Verdict {
    Verdict::Success(vec![Output {
        topic: None,
        key: None,
        value: Some(value.as_bytes().to_vec()),
        headers: Vec::new(),
    }])
}

/// Call the plugin with a normal message, the marker, and a normal message
/// again on one worker. Asserts the worker recovered on a fresh instance and
/// returns the marker call's failure.
fn fail_once_and_recover(plugin: &str, limits: PluginLimits, marker: &str) -> PluginFailure {
    let test = TestRuntime::new();
    let plugin = test.runtime.load_file(&rust_plugin(plugin), settings(limits)).unwrap();
    let mut worker = plugin.worker();
    assert_eq!(
        worker.handle_blocking(&text_message(0, "before")).unwrap(),
        passed_through("before")
    );

    let failure = worker.handle_blocking(&text_message(1, marker)).unwrap_err();

    assert_eq!(
        worker.handle_blocking(&text_message(2, "after")).unwrap(),
        passed_through("after")
    );
    assert_eq!(worker.instances_created(), 2, "the failed instance was replaced");
    failure
}

/// A guest waiting on a timer runs no code an epoch tick could interrupt;
/// the call is stopped at its deadline all the same, not when the wait
/// would have ended, and the next call gets a fresh instance.
#[test]
fn a_call_waiting_past_its_deadline_is_stopped_at_the_deadline() {
    let test = TestRuntime::new();
    let settings = PluginSettings {
        limits: PluginLimits {
            deadline_ms: 200,
            ..PluginLimits::default()
        },
        config: [("ms-per-message".to_owned(), "5000".to_owned())].into(),
        ..PluginSettings::default()
    };
    let plugin = test
        .runtime
        .load_file(&rust_plugin("wait-per-message"), settings)
        .unwrap();
    let mut worker = plugin.worker();
    worker.warm_up_blocking().unwrap();

    let started = std::time::Instant::now();
    let failure = worker.handle_blocking(&text_message(0, "waits")).unwrap_err();
    let took = started.elapsed();

    assert_eq!(failure.kind, FailureKind::Deadline);
    assert_eq!(failure.reason, "plugin exceeded its 200 ms deadline");
    assert!(
        took < std::time::Duration::from_millis(2_000),
        "stopped after {took:?}; the wait was 5 s"
    );
    assert!(worker.handle_blocking(&text_message(1, "again")).is_err());
    assert_eq!(worker.instances_created(), 2, "the abandoned instance was replaced");
}

#[test]
fn runaway_loop_is_stopped_by_the_deadline_and_the_worker_recovers() {
    let limits = PluginLimits {
        deadline_ms: 200,
        ..PluginLimits::default()
    };

    let failure = fail_once_and_recover("infinite-loop", limits, "LOOP");

    assert_eq!(failure.kind, FailureKind::Deadline);
    assert_eq!(failure.reason, "plugin exceeded its 200 ms deadline");
}

#[test]
fn unbounded_allocation_is_stopped_by_the_memory_cap_and_the_worker_recovers() {
    let limits = PluginLimits {
        memory_mib: 32,
        ..PluginLimits::default()
    };

    let failure = fail_once_and_recover("memory-hog", limits, "HOG");

    assert_eq!(failure.kind, FailureKind::MemoryLimit);
    assert_eq!(failure.reason, "plugin exceeded its 32 MiB memory limit");
}

#[test]
fn default_memory_cap_is_64_mib() {
    let test = TestRuntime::new();
    let plugin = test
        .runtime
        .load_file(&rust_plugin("memory-hog"), PluginSettings::default())
        .unwrap();

    let failure = plugin.worker().handle_blocking(&text_message(0, "HOG")).unwrap_err();

    assert_eq!(failure.reason, "plugin exceeded its 64 MiB memory limit");
}

#[test]
fn trap_on_marker_reports_the_panic_and_the_worker_recovers() {
    let failure = fail_once_and_recover("trap-on-marker", PluginLimits::default(), "TRAP");

    assert_eq!(failure.kind, FailureKind::Trap);
    assert!(
        failure
            .reason
            .starts_with("plugin trapped: wasm `unreachable` instruction executed"),
        "{}",
        failure.reason
    );
    assert!(
        failure.reason.contains(r#"found the marker value "TRAP""#),
        "the guest's panic message is quoted: {}",
        failure.reason
    );
}

#[test]
fn a_trap_inside_a_batch_fails_the_batch_and_the_next_batch_runs() {
    let test = TestRuntime::new();
    let plugin = test
        .runtime
        .load_file(&rust_plugin("trap-on-marker"), PluginSettings::default())
        .unwrap();
    let mut worker = plugin.worker();

    let failure = worker
        .handle_batch_blocking(&[text_message(0, "ok"), text_message(1, "TRAP"), text_message(2, "ok")])
        .unwrap_err();
    let next = worker
        .handle_batch_blocking(&[text_message(3, "a"), text_message(4, "b")])
        .unwrap();

    assert_eq!(failure.kind, FailureKind::Trap);
    assert_eq!(next, vec![passed_through("a"), passed_through("b")]);
}

#[test]
fn a_leaking_instance_is_replaced_before_it_reaches_the_memory_cap() {
    let test = TestRuntime::new();
    let limits = PluginLimits {
        memory_mib: 16,
        ..PluginLimits::default()
    };
    let plugin = test.runtime.load_file(&rust_plugin("leaky"), settings(limits)).unwrap();
    let mut worker = plugin.worker();

    // 1 MiB leaked per call: an instance kept for good would hit the 16 MiB
    // cap within 16 calls.
    for offset in 0..100 {
        let value = format!("message {offset}");
        assert_eq!(
            worker.handle_blocking(&text_message(offset, &value)),
            Ok(passed_through(&value)),
            "call {offset}"
        );
    }

    let instances = worker.instances_created();
    assert!(
        (100 / 16..100 / 4).contains(&instances),
        "each instance served several calls, and none ran into the cap: {instances} instances"
    );
}

/// `slow-per-message` spending `ms_per_message` on each message, with a
/// 100 ms deadline per message and the given cap per batch.
fn slow_plugin(test: &TestRuntime, ms_per_message: u64, batch_deadline_cap_ms: u64) -> sluice::plugin::Plugin {
    let settings = PluginSettings {
        limits: PluginLimits {
            deadline_ms: 100,
            batch_deadline_cap_ms,
            ..PluginLimits::default()
        },
        config: [("ms-per-message".to_owned(), ms_per_message.to_string())].into(),
        ..PluginSettings::default()
    };
    test.runtime
        .load_file(&rust_plugin("slow-per-message"), settings)
        .unwrap()
}

fn texts(count: i64) -> Vec<sluice::plugin::Message> {
    (0..count)
        .map(|offset| text_message(offset, &format!("m{offset}")))
        .collect()
}

#[test]
fn a_batch_gets_the_message_deadline_once_per_message() {
    let test = TestRuntime::new();
    let plugin = slow_plugin(&test, 20, 30_000);
    let mut worker = plugin.worker();
    let messages = texts(10);

    // 10 x 20 ms is twice one message's 100 ms deadline, and a fifth of
    // the batch's 10 x 100 ms.
    let started = std::time::Instant::now();
    let verdicts = worker.handle_batch_blocking(&messages).unwrap();
    let took = started.elapsed();

    assert!(took >= std::time::Duration::from_millis(200), "{took:?}");
    let expected: Vec<Verdict> = (0..10).map(|offset| passed_through(&format!("m{offset}"))).collect();
    assert_eq!(verdicts, expected);
    assert_eq!(worker.instances_created(), 1, "no call failed");
}

#[test]
fn a_batch_deadline_stops_at_its_cap() {
    let test = TestRuntime::new();
    // 10 x 50 ms against a 100 ms cap: a wide margin, because epoch ticks
    // come late on a loaded machine and a deadline only ever stretches.
    let plugin = slow_plugin(&test, 50, 100);
    let mut worker = plugin.worker();

    let failure = worker.handle_batch_blocking(&texts(10)).unwrap_err();

    assert_eq!(failure.kind, FailureKind::Deadline);
    assert_eq!(
        failure.reason,
        "plugin exceeded its 100 ms deadline for a batch of 10 messages (100 ms per message, at most 100 ms per batch)"
    );
    // One message at a time still fits its own deadline.
    assert_eq!(
        worker.handle_blocking(&text_message(0, "alone")),
        Ok(passed_through("alone"))
    );
}
