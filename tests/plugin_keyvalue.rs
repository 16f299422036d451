//! Plugins with state: a stage's `[plugin.capabilities.keyvalue]` grant
//! gives its plugin named buckets (`wasi:keyvalue`), in a real Redis or in
//! memory. The `keyvalue-probe` test plugin runs each operation the way a
//! handler would and reports the store's answer, so the answers are
//! compared exactly, on both backends.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice::capability::CapabilityGrants;
use sluice::plugin::{Message, Plugin, PluginLimits, PluginSettings, Verdict};
use sluice_tests::redis::{Redis, RedisCluster};
use sluice_tests::{Language, TestRuntime, rust_plugin, text_message};

/// Load the Rust plugin `plugin` as a stage named `stage` with this
/// `[plugin.capabilities]` table (TOML) would.
fn load(test: &TestRuntime, plugin: &str, stage: &str, capabilities: &str) -> Result<Plugin, String> {
    load_file(test, &rust_plugin(plugin), stage, capabilities)
}

/// The same for a plugin file in any language.
fn load_file(test: &TestRuntime, plugin: &Path, stage: &str, capabilities: &str) -> Result<Plugin, String> {
    let mut grants: CapabilityGrants = toml::from_str(capabilities).expect("capabilities TOML");
    if let Some(keyvalue) = &mut grants.keyvalue {
        // What the stage file loader fills in from `stage.name`.
        keyvalue.namespace = stage.to_owned();
    }
    let settings = PluginSettings {
        limits: PluginLimits {
            deadline_ms: 10_000,
            ..PluginLimits::default()
        },
        config: Default::default(),
        capabilities: Some(grants),
    };
    test.runtime
        .load_file(plugin, settings)
        .map_err(|error| error.to_string())
}

fn output_text(verdict: Verdict) -> String {
    match verdict {
        Verdict::Success(outputs) => String::from_utf8(outputs[0].value.clone().expect("a value")).expect("UTF-8"),
        other => panic!("expected success, got {other:?}"),
    }
}

/// Run one probe command; the store's answer.
fn ask(plugin: &Plugin, command: &str) -> String {
    output_text(
        plugin
            .worker()
            .handle_blocking(&text_message(0, command))
            .expect("the call itself succeeds"),
    )
}

fn memory(stage: &str) -> (TestRuntime, Plugin) {
    let test = TestRuntime::new();
    let plugin = load(
        &test,
        "keyvalue-probe",
        stage,
        "[keyvalue]\nbuckets = [\"default\", \"other\"]\n",
    )
    .expect("granted");
    (test, plugin)
}

fn on_redis(redis: &Redis, stage: &str, extra: &str) -> (TestRuntime, Plugin) {
    let test = TestRuntime::new();
    let capabilities = format!(
        "[keyvalue]\nbuckets = [\"default\", \"other\"]\nredis_url = \"{}\"\n{extra}",
        redis.url()
    );
    let plugin = load(&test, "keyvalue-probe", stage, &capabilities).expect("granted");
    (test, plugin)
}

/// Every operation of store, atomics and batch, with the answers the WIT
/// promises.
fn every_operation_answers_as_the_contract_says(plugin: &Plugin) {
    let cases = [
        ("default get a", "ok none"),
        ("default exists a", "ok false"),
        ("default set a 1", "ok set"),
        ("default get a", "ok 1"),
        ("default exists a", "ok true"),
        ("other get a", "ok none"),
        ("default set a 2", "ok set"),
        ("default get a", "ok 2"),
        ("default increment n 5", "ok 5"),
        ("default increment n 2", "ok 7"),
        ("default get n", "ok 7"),
        ("default increment a 1", "ok 3"),
        ("default set word seven", "ok set"),
        (
            "default increment word 1",
            "error other: the value at `word` is not a counter (a decimal number below 2^63)",
        ),
        ("default set-many b=x c=y", "ok set"),
        ("default get-many a b c d", "ok a=3,b=x,c=y,none"),
        ("default list", "ok a,b,c,n,word"),
        ("other list", "ok "),
        ("default delete-many b c d", "ok deleted"),
        ("default delete word", "ok deleted"),
        ("default delete word", "ok deleted"),
        ("default list", "ok a,n"),
        ("secret get a", "error access-denied"),
    ];
    for (command, expected) in cases {
        assert_eq!(ask(plugin, command), expected, "{command}");
    }
}

#[test]
fn every_operation_works_on_the_memory_backend() {
    let (_test, plugin) = memory("every-operation-memory");
    every_operation_answers_as_the_contract_says(&plugin);
}

#[test]
fn every_operation_works_on_redis_under_the_stage_namespace() {
    let redis = Redis::start();
    let (_test, plugin) = on_redis(&redis, "orders", "");
    every_operation_answers_as_the_contract_says(&plugin);
    let mut keys = redis.keys("*");
    keys.sort();
    assert_eq!(keys, ["sluice:orders:kv:default:a", "sluice:orders:kv:default:n"]);
    assert_eq!(redis.get("sluice:orders:kv:default:n").as_deref(), Some("7"));
    assert_eq!(redis.ttl("sluice:orders:kv:default:n"), -1, "no TTL unless granted");

    // Another stage on the same Redis sees none of it.
    let (_test, elsewhere) = on_redis(&redis, "billing", "");
    assert_eq!(ask(&elsewhere, "default list"), "ok ");
    assert_eq!(ask(&elsewhere, "default get a"), "ok none");
}

#[test]
fn list_keys_pages_through_more_keys_than_one_page_holds() {
    let redis = Redis::start();
    let (_test, plugin) = on_redis(&redis, "paging", "");
    let (_memory_test, in_memory) = memory("paging-memory");
    let pairs: Vec<String> = (0..2_345).map(|n| format!("k{n:05}=v")).collect();
    for chunk in pairs.chunks(500) {
        let command = format!("default set-many {}", chunk.join(" "));
        assert_eq!(ask(&plugin, &command), "ok set");
        assert_eq!(ask(&in_memory, &command), "ok set");
    }
    let expected: Vec<String> = (0..2_345).map(|n| format!("k{n:05}")).collect();
    let expected = format!("ok {}", expected.join(","));
    assert_eq!(ask(&plugin, "default list"), expected);
    assert_eq!(ask(&in_memory, "default list"), expected);
}

#[test]
fn every_operation_works_on_a_redis_cluster_with_the_keys_spread_over_its_nodes() {
    let cluster = RedisCluster::start();
    let test = TestRuntime::new();
    let capabilities = format!(
        "[keyvalue]\nbuckets = [\"default\", \"other\"]\nredis_url = {:?}\nredis_cluster = true\n",
        cluster.urls()
    );
    let plugin = load(&test, "keyvalue-probe", "orders", &capabilities).expect("granted");
    every_operation_answers_as_the_contract_says(&plugin);

    // More keys than a page, over every primary: listed once each.
    let pairs: Vec<String> = (0..2_345).map(|n| format!("k{n:05}=v")).collect();
    for chunk in pairs.chunks(500) {
        assert_eq!(ask(&plugin, &format!("other set-many {}", chunk.join(" "))), "ok set");
    }
    let expected: Vec<String> = (0..2_345).map(|n| format!("k{n:05}")).collect();
    assert_eq!(ask(&plugin, "other list"), format!("ok {}", expected.join(",")));
    assert_eq!(
        ask(&plugin, "other get-many k00000 k02344 nope"),
        "ok k00000=v,k02344=v,none"
    );
    let per_node = cluster.keys_per_node();
    assert_eq!(per_node.iter().sum::<u64>(), 2 + 2_345, "{per_node:?}");
    assert!(
        per_node.iter().all(|count| *count > 100),
        "the keys spread over every node: {per_node:?}"
    );
}

#[test]
fn a_granted_ttl_expires_entries_after_their_last_write() {
    let redis = Redis::start();
    let (_test, plugin) = on_redis(&redis, "expiring", "ttl_seconds = 30\n");
    assert_eq!(ask(&plugin, "default set a 1"), "ok set");
    assert_eq!(ask(&plugin, "default increment n 1"), "ok 1");
    for key in ["sluice:expiring:kv:default:a", "sluice:expiring:kv:default:n"] {
        let ttl = redis.ttl(key);
        assert!((25..=30).contains(&ttl), "{key}: TTL {ttl}");
    }

    let test = TestRuntime::new();
    let plugin = load(
        &test,
        "keyvalue-probe",
        "expiring-memory",
        "[keyvalue]\nttl_seconds = 1\n",
    )
    .expect("granted");
    assert_eq!(ask(&plugin, "default set a 1"), "ok set");
    assert_eq!(ask(&plugin, "default get a"), "ok 1");
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(ask(&plugin, "default get a"), "ok none");
}

#[test]
fn a_value_over_the_cap_is_refused_inside_the_guest_and_nothing_is_written() {
    let redis = Redis::start();
    let (_test, plugin) = on_redis(&redis, "capped", "max_value_bytes = 1000\n");
    assert_eq!(ask(&plugin, "default fill a 1000"), "ok set");
    assert_eq!(
        ask(&plugin, "default fill b 1001"),
        "error other: a value of 1001 bytes is over plugin.capabilities.keyvalue.max_value_bytes (1000)"
    );
    assert_eq!(
        ask(&plugin, "default set-many c=1 d=2"),
        "ok set",
        "small values in a batch are fine"
    );
    assert_eq!(redis.get("sluice:capped:kv:default:b"), None);
}

#[test]
fn the_memory_backend_refuses_writes_past_its_budget() {
    let test = TestRuntime::new();
    let plugin = load(
        &test,
        "keyvalue-probe",
        "budget",
        "[keyvalue]\nmemory_max_bytes = 4096\n",
    )
    .expect("granted");
    assert_eq!(ask(&plugin, "default fill a 3000"), "ok set");
    assert_eq!(
        ask(&plugin, "default fill b 2000"),
        "error other: the in-memory key-value store is full (4096 bytes, plugin.capabilities.keyvalue.memory_max_bytes)"
    );
    assert_eq!(ask(&plugin, "default delete a"), "ok deleted");
    assert_eq!(ask(&plugin, "default fill b 2000"), "ok set");
}

#[test]
fn an_unreachable_redis_is_an_error_the_guest_sees_within_the_timeout_not_a_trap() {
    let mut redis = Redis::start();
    let (_test, plugin) = on_redis(&redis, "outage", "timeout_ms = 300\n");
    assert_eq!(ask(&plugin, "default set a 1"), "ok set");
    redis.stop();
    let started = Instant::now();
    let answer = ask(&plugin, "default get a");
    assert!(answer.starts_with("error other: the key-value store"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "bounded by the operation timeout, took {:?}",
        started.elapsed()
    );
    // The same instance keeps working once Redis is back (its data is
    // gone: this Redis keeps nothing on disk).
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ask(&plugin, "default set a 2");
        if answer == "ok set" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis is back but the store still fails: {answer}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ask(&plugin, "default get a"), "ok 2");
}

#[test]
fn a_plugin_that_imports_keyvalue_is_refused_by_a_stage_that_does_not_grant_it() {
    let test = TestRuntime::new();
    let error = load(&test, "count-by-key", "refused", "").expect_err("not granted");
    assert!(error.contains("imports `wasi:keyvalue/"), "{error}");
    assert!(error.contains("add [plugin.capabilities.keyvalue]"), "{error}");
    // A pure plugin built with the same SDK imports nothing of it.
    load(&test, "uppercase", "refused", "").expect("a pure plugin needs no grant");
}

fn keyed(partition: i32, offset: i64, key: &str) -> Message {
    Message {
        key: Some(key.as_bytes().to_vec()),
        ..Message::new("input", partition, offset, Some(b"payload".to_vec()))
    }
}

#[test]
fn count_by_key_counts_each_message_once_even_when_it_is_delivered_again() {
    let test = TestRuntime::new();
    let plugin = load(&test, "count-by-key", "counting", "[keyvalue]\n").expect("granted");
    let mut worker = plugin.worker();
    let mut count = |message: &Message| output_text(worker.handle_blocking(message).expect("call"));
    assert_eq!(count(&keyed(0, 10, "a")), "1");
    assert_eq!(count(&keyed(0, 11, "b")), "1");
    assert_eq!(count(&keyed(0, 12, "a")), "2");
    // Delivered again after a crash, before its offset was committed.
    assert_eq!(count(&keyed(0, 12, "a")), "2");
    assert_eq!(count(&keyed(0, 11, "b")), "1");
    assert_eq!(count(&keyed(0, 13, "a")), "3");
    let keyless = Message::new("input", 0, 14, Some(b"payload".to_vec()));
    match worker.handle_blocking(&keyless).expect("call") {
        Verdict::DeadLetter(reason) => assert!(reason.contains("no key"), "{reason}"),
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

/// What `count-by-key` in `language` outputs (or why it dead-letters) for
/// each of `messages`, on a fresh in-memory store of its own.
fn counts_in(language: Language, messages: &[Message]) -> Vec<String> {
    let test = TestRuntime::new();
    let stage = format!("polyglot-{language:?}");
    let plugin = load_file(&test, &language.plugin("count-by-key"), &stage, "[keyvalue]\n")
        .unwrap_or_else(|error| panic!("{language:?}: {error}"));
    let mut worker = plugin.worker();
    messages
        .iter()
        .map(|message| match worker.handle_blocking(message).expect("call") {
            Verdict::Success(outputs) => format!(
                "{:?} -> {}",
                outputs[0].key.as_deref().map(String::from_utf8_lossy),
                String::from_utf8_lossy(outputs[0].value.as_deref().unwrap_or_default())
            ),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn count_by_key_answers_the_same_in_every_language() {
    let mut messages = vec![
        keyed(0, 10, "a"),
        keyed(0, 11, "b"),
        keyed(0, 12, "a"),
        keyed(0, 12, "a"),
        keyed(1, 3, "a"),
        keyed(0, 9, "b"),
        keyed(0, 13, "ünïcödé"),
        Message::new("input", 0, 14, Some(b"keyless".to_vec())),
    ];
    let mut not_utf8 = keyed(0, 15, "");
    not_utf8.key = Some(vec![0xff, 0x00, 0xfe]);
    messages.push(not_utf8.clone());
    not_utf8.offset = 16;
    messages.push(not_utf8);
    let expected = [
        "Some(\"a\") -> 1",
        "Some(\"b\") -> 1",
        "Some(\"a\") -> 2",
        "Some(\"a\") -> 2",
        "Some(\"a\") -> 3",
        "Some(\"b\") -> 1",
        "Some(\"ünïcödé\") -> 1",
        "Verdict::DeadLetter(\"count-by-key: the message has no key to count it under\")",
        "Some(\"\u{fffd}\\0\u{fffd}\") -> 1",
        "Some(\"\u{fffd}\\0\u{fffd}\") -> 2",
    ];
    for language in Language::ALL {
        assert_eq!(counts_in(language, &messages), expected, "{language:?}");
    }
}
