//! A stage whose plugin calls out, against a real broker (tansu) and a
//! real HTTP service, in every language: the service's answers (found, not
//! found, too many requests, too slow, too big) become outputs, retries and
//! dead letters, offsets are committed, and a stage without the grant
//! refuses the plugin at startup and at hot reload.

use std::time::Duration;

use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, create_topics, produce, read_topic, wait_for_commits};
use sluice_tests::lookup_service::{LookupService, SeenRequest};
use sluice_tests::stage::StageFile;
use sluice_tests::{Language, rust_plugin, shared_plugin_cache};

const LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(2);

fn lookup_tables(service: &LookupService) -> String {
    format!(
        "[plugin.config]\nlookup-url = \"{url}\"\n\n[plugin.capabilities.http]\nallowed_origins = [\"{origin}\"]\nallowed_addresses = [\"127.0.0.1\"]\n",
        url = service.lookup_url(),
        origin = service.origin(),
    )
}

/// `{"id":"<id>"}`, the message `enrich-http` looks up.
fn record(id: &str) -> String {
    format!("{{\"id\":{}}}", serde_json::Value::from(id))
}

/// `record(id)` with the lookup service's answer added.
fn enriched(id: &str) -> String {
    let answer = serde_json::json!({ "name": id, "length": id.chars().count() });
    format!("{{\"id\":{},\"lookup\":{answer}}}", serde_json::Value::from(id))
}

/// `<prefix>-<language>`, its output and its dead-letter topic, created
/// with one partition.
fn language_topics(brokers: &str, prefix: &str, language: &str) -> [String; 3] {
    let input = format!("{prefix}-{language}");
    let topics = [input.clone(), format!("{input}-out"), format!("{input}-dlq")];
    create_topics(brokers, &[&topics[0], &topics[1], &topics[2]], 1);
    topics
}

/// `retried` came after the 2 s `Retry-After` that `first` was answered with.
fn assert_waited_for_retry_after(language: Language, first: &SeenRequest, retried: &SeenRequest) {
    let waited = retried.at - first.at;
    assert!(
        waited >= Duration::from_millis(1_900),
        "{language:?}: retried after {waited:?}, not after the 2 s Retry-After"
    );
}

#[test]
fn lookups_become_outputs_and_dead_letters_and_every_offset_is_committed_in_every_language() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let service = LookupService::start();
    let mut requests_before = 0;
    for language in Language::ALL {
        let name = format!("{language:?}").to_lowercase();
        // The fifth is answered 429 with `Retry-After: 2` once, then 200;
        // `slow` outlasts the grant's timeout every time; `big` answers more
        // than the grant lets the plugin read.
        let recovering = format!("once:429:{name}");
        let ids = ["a", "status:404", "b", "c", recovering.as_str(), "slow", "big"];
        let topics = language_topics(&brokers, "ids", &name);
        let topics = [topics[0].as_str(), topics[1].as_str(), topics[2].as_str()];
        let inputs: Vec<Input> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| Input::text(0, &format!("key-{n}"), &record(id)))
            .collect();
        produce(&brokers, topics[0], &inputs);
        let group = format!("lookup-{name}");
        let stage = StageFile::for_plugin_file(
            &brokers,
            &language.plugin("enrich-http"),
            &group,
            topics,
            &format!(
                "{}timeout_ms = 500\nmax_response_bytes = 1000\n\n[retry]\nmax_attempts = 3\ninitial_backoff_ms = 100\n",
                lookup_tables(&service)
            ),
        )
        .sharing_cache(&shared_plugin_cache());

        let process = stage.start("stage.log");
        let outputs = read_topic(&brokers, topics[1], 4, LIMIT, SETTLE);
        let dead_letters = read_topic(&brokers, topics[2], 3, LIMIT, SETTLE);
        let committed = wait_for_commits(&brokers, &group, topics[0], &[Some(7)], Duration::from_secs(30));

        let found: Vec<(String, String)> = outputs
            .iter()
            .map(|record| (record.key_text(), record.value_text()))
            .collect();
        assert_eq!(
            found,
            [
                ("key-0".to_owned(), enriched("a")),
                ("key-2".to_owned(), enriched("b")),
                ("key-3".to_owned(), enriched("c")),
                ("key-4".to_owned(), enriched(&recovering)),
            ],
            "{language:?}; log:\n{}",
            process.log()
        );
        let dead: Vec<(String, String)> = dead_letters
            .iter()
            .map(|record| (record.key_text(), record.header("sluice.reason").unwrap_or_default()))
            .collect();
        assert_eq!(dead.len(), 3, "{language:?}: {dead:?}");
        assert_eq!(
            dead_letters[0].value_text(),
            record("status:404"),
            "the input, untouched"
        );
        assert_eq!(
            dead[0],
            (
                "key-1".to_owned(),
                r#"lookup of id "status:404" found nothing (404 Not Found)"#.to_owned()
            ),
            "{language:?}"
        );
        // Too slow every time: retried, then dead-lettered.
        assert_eq!(dead[1].0, "key-5");
        assert!(
            dead[1].1.starts_with("retries exhausted: lookup failed"),
            "{language:?}: {}",
            dead[1].1
        );
        // Too big: the plugin sees the refusal. Rust and Python name it and
        // give up at once; JavaScript's fetch reports a failure like any
        // other, which is retried.
        assert_eq!(dead[2].0, "key-6");
        let big_attempts = match language {
            Language::JavaScript => {
                assert!(
                    dead[2].1.starts_with("retries exhausted: lookup failed"),
                    "{}",
                    dead[2].1
                );
                3
            }
            _ => {
                assert!(
                    dead[2].1.starts_with("lookup refused by the stage: ")
                        && dead[2].1.contains("HttpResponseBodySize"),
                    "{language:?}: {}",
                    dead[2].1
                );
                1
            }
        };
        assert_eq!(committed, [Some(7)], "{language:?}");

        // One request per message, in order; the recovering one twice, the
        // second after the delay its 429 asked for.
        let requests: Vec<SeenRequest> = service.requests().into_iter().skip(requests_before).collect();
        let subjects: Vec<Vec<u8>> = requests.iter().map(SeenRequest::subject).collect();
        let mut expected: Vec<Vec<u8>> = ids[..5].iter().map(|id| id.as_bytes().to_vec()).collect();
        expected.push(recovering.as_bytes().to_vec());
        expected.extend(std::iter::repeat_n(b"slow".to_vec(), 3));
        expected.extend(std::iter::repeat_n(b"big".to_vec(), big_attempts));
        assert_eq!(subjects, expected, "{language:?}");
        assert_waited_for_retry_after(language, &requests[4], &requests[5]);
        requests_before += requests.len();
    }
}

#[test]
fn webhooks_are_sent_once_per_message_with_a_stable_idempotency_key_in_every_language() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let service = LookupService::start();
    let mut requests_before = 0;
    for language in Language::ALL {
        let name = format!("{language:?}").to_lowercase();
        // The third is answered 503 with `Retry-After: 2` once, then 2xx.
        let recovering = format!("once:503:{name}");
        let values = ["order 1 shipped", "status:404", recovering.as_str(), "order 2 paid"];
        let topics = language_topics(&brokers, "events", &name);
        let topics = [topics[0].as_str(), topics[1].as_str(), topics[2].as_str()];
        let mut inputs: Vec<Input> = values
            .iter()
            .enumerate()
            .map(|(n, value)| Input::text(0, &format!("key-{n}"), value))
            .collect();
        inputs[3] = inputs[3].clone().with_header("event-id", "evt-42");
        produce(&brokers, topics[0], &inputs);
        let group = format!("webhook-{name}");
        let stage = StageFile::for_plugin_file(
            &brokers,
            &language.plugin("webhook"),
            &group,
            topics,
            &format!(
                "[plugin.config]\nwebhook-url = \"{url}\"\nidempotency-header = \"event-id\"\n\n[plugin.capabilities.http]\nallowed_origins = [\"{origin}\"]\nallowed_addresses = [\"127.0.0.1\"]\nallowed_methods = [\"POST\"]\n",
                url = service.lookup_url(),
                origin = service.origin(),
            ),
        )
        .sharing_cache(&shared_plugin_cache());

        let process = stage.start("stage.log");
        let outputs = read_topic(&brokers, topics[1], 3, LIMIT, SETTLE);
        let dead_letters = read_topic(&brokers, topics[2], 1, LIMIT, SETTLE);
        let committed = wait_for_commits(&brokers, &group, topics[0], &[Some(4)], Duration::from_secs(30));

        let passed: Vec<String> = outputs.iter().map(|record| record.value_text()).collect();
        assert_eq!(
            passed,
            ["order 1 shipped", recovering.as_str(), "order 2 paid"],
            "{language:?}: each message passes through once its POST is answered 2xx; log:\n{}",
            process.log()
        );
        assert_eq!(dead_letters.len(), 1, "{language:?}");
        assert_eq!(dead_letters[0].value_text(), "status:404");
        assert_eq!(
            dead_letters[0].header("sluice.reason").as_deref(),
            Some("webhook answered 404 Not Found"),
            "{language:?}"
        );
        assert_eq!(committed, [Some(4)], "{language:?}");

        // One POST per message, the recovering one twice with the same key:
        // the coordinates, or the message's own `event-id`.
        let requests: Vec<SeenRequest> = service.requests().into_iter().skip(requests_before).collect();
        let sent: Vec<(String, String)> = requests
            .iter()
            .map(|request| {
                (
                    String::from_utf8_lossy(&request.body).into_owned(),
                    request.header("idempotency-key").unwrap_or("<none>").to_owned(),
                )
            })
            .collect();
        let input_topic = topics[0];
        let expected: Vec<(String, String)> = [
            ("order 1 shipped", format!("{input_topic}/0/0")),
            ("status:404", format!("{input_topic}/0/1")),
            (recovering.as_str(), format!("{input_topic}/0/2")),
            (recovering.as_str(), format!("{input_topic}/0/2")),
            ("order 2 paid", "evt-42".to_owned()),
        ]
        .into_iter()
        .map(|(body, key)| (body.to_owned(), key))
        .collect();
        assert_eq!(sent, expected, "{language:?}");
        assert!(requests.iter().all(|request| request.method == "POST"), "{language:?}");
        assert_waited_for_retry_after(language, &requests[2], &requests[3]);
        requests_before += requests.len();
    }
}

#[test]
fn a_stage_without_the_grant_refuses_the_plugin_at_startup_naming_the_key() {
    let stage = StageFile::for_plugin(
        "127.0.0.1:1",
        "enrich-http",
        "lookup",
        ["ids", "ids-found", "ids-dlq"],
        "[plugin.config]\nlookup-url = \"http://127.0.0.1:1/lookup\"\n",
    );
    let (status, log) = stage.run_to_exit(Duration::from_secs(30));
    assert!(!status.success(), "{log}");
    assert!(log.contains("imports `wasi:http/outgoing-handler@"), "{log}");
    assert!(
        log.contains("add [plugin.capabilities.http] to the stage file"),
        "{log}"
    );
}

#[test]
fn a_new_version_that_imports_an_ungranted_capability_is_rejected_and_the_old_keeps_serving() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["words", "words-upper", "words-dlq"], 1);
    let folder = tempfile::tempdir().expect("plugin folder");
    let plugin = folder.path().join("handler.wasm");
    std::fs::copy(rust_plugin("uppercase"), &plugin).expect("copy uppercase");
    let stage = StageFile::for_plugin_file(
        &brokers,
        &plugin,
        "upper",
        ["words", "words-upper", "words-dlq"],
        "[plugin.reload]\ndebounce_ms = 50\n",
    );
    let process = stage.start("stage.log");
    produce(&brokers, "words", &[Input::text(0, "k0", "before")]);
    assert_eq!(
        read_topic(&brokers, "words-upper", 1, LIMIT, SETTLE)[0].value_text(),
        "BEFORE"
    );

    let staging = folder.path().join("handler.wasm.new");
    std::fs::copy(rust_plugin("enrich-http"), &staging).expect("stage the new version");
    std::fs::rename(&staging, &plugin).expect("deploy it");
    assert!(
        process.wait_for_log("new plugin file rejected", Duration::from_secs(30)),
        "log:\n{}",
        process.log()
    );
    assert!(
        process.log().contains("add [plugin.capabilities.http]"),
        "{}",
        process.log()
    );

    produce(&brokers, "words", &[Input::text(0, "k1", "after")]);
    let outputs = read_topic(&brokers, "words-upper", 2, LIMIT, SETTLE);
    assert_eq!(
        outputs.last().map(|record| record.value_text()).as_deref(),
        Some("AFTER")
    );
}
