//! A stage whose plugin calls out, against a real broker (tansu) and a
//! real HTTP service: the service's answers become outputs and dead
//! letters, offsets are committed, and a stage without the grant refuses
//! the plugin at startup and at hot reload.

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

#[test]
fn answers_become_outputs_and_dead_letters_and_every_offset_is_committed_in_every_language() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let service = LookupService::start();
    let mut requests_before = 0;
    for language in Language::ALL {
        let name = format!("{language:?}").to_lowercase();
        // The last is answered 429 with `Retry-After: 2` once, then 200.
        let recovering = format!("once:429:{name}");
        let values = ["a", "status:404", "b", "c", recovering.as_str()];
        let topics = [
            format!("ids-{name}"),
            format!("ids-{name}-found"),
            format!("ids-{name}-dlq"),
        ];
        let topics = [topics[0].as_str(), topics[1].as_str(), topics[2].as_str()];
        create_topics(&brokers, &topics, 1);
        let inputs: Vec<Input> = values
            .iter()
            .enumerate()
            .map(|(n, value)| Input::text(0, &format!("key-{n}"), value))
            .collect();
        produce(&brokers, topics[0], &inputs);
        let group = format!("lookup-{name}");
        let stage = StageFile::for_plugin_file(
            &brokers,
            &language.plugin("http-lookup"),
            &group,
            topics,
            &lookup_tables(&service),
        )
        .sharing_cache(&shared_plugin_cache());

        let process = stage.start("stage.log");
        let outputs = read_topic(&brokers, topics[1], 4, LIMIT, SETTLE);
        let dead_letters = read_topic(&brokers, topics[2], 1, LIMIT, SETTLE);
        let committed = wait_for_commits(&brokers, &group, topics[0], &[Some(5)], Duration::from_secs(30));

        let found: Vec<(String, String)> = outputs
            .iter()
            .map(|record| (record.key_text(), record.value_text()))
            .collect();
        assert_eq!(
            found,
            [
                ("key-0".to_owned(), "looked-up:a".to_owned()),
                ("key-2".to_owned(), "looked-up:b".to_owned()),
                ("key-3".to_owned(), "looked-up:c".to_owned()),
                ("key-4".to_owned(), format!("looked-up:{recovering}")),
            ],
            "{language:?}; log:\n{}",
            process.log()
        );
        assert_eq!(dead_letters.len(), 1, "{language:?}");
        assert_eq!(dead_letters[0].key_text(), "key-1");
        assert_eq!(
            dead_letters[0].header("sluice.reason").as_deref(),
            Some("lookup answered 404 Not Found"),
            "{language:?}"
        );
        assert_eq!(committed, [Some(5)], "{language:?}");

        // One request per message, in order; the recovering one twice, the
        // second after the delay its 429 asked for.
        let requests: Vec<SeenRequest> = service.requests().into_iter().skip(requests_before).collect();
        let bodies: Vec<&[u8]> = requests.iter().map(|request| request.body.as_slice()).collect();
        let mut expected: Vec<&[u8]> = values.iter().map(|value| value.as_bytes()).collect();
        expected.push(recovering.as_bytes());
        assert_eq!(bodies, expected, "{language:?}");
        let waited = requests[5].at - requests[4].at;
        assert!(
            waited >= Duration::from_millis(1_900),
            "{language:?}: retried after {waited:?}, not after the 2 s Retry-After"
        );
        requests_before += requests.len();
    }
}

#[test]
fn a_stage_without_the_grant_refuses_the_plugin_at_startup_naming_the_key() {
    let stage = StageFile::for_plugin(
        "127.0.0.1:1",
        "http-lookup",
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
    std::fs::copy(rust_plugin("http-lookup"), &staging).expect("stage the new version");
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
