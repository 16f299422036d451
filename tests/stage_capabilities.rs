//! A stage whose plugin calls out, against a real broker (tansu) and a
//! real HTTP service: the service's answers become outputs and dead
//! letters, offsets are committed, and a stage without the grant refuses
//! the plugin at startup and at hot reload.

use std::time::Duration;

use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, create_topics, produce, read_topic, wait_for_commits};
use sluice_tests::lookup_service::LookupService;
use sluice_tests::rust_plugin;
use sluice_tests::stage::StageFile;

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
fn answers_become_outputs_and_dead_letters_and_every_offset_is_committed() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &["ids", "ids-found", "ids-dlq"], 1);
    let service = LookupService::start();
    let values = ["a", "status:404", "b", "c"];
    let inputs: Vec<Input> = values
        .iter()
        .enumerate()
        .map(|(n, value)| Input::text(0, &format!("key-{n}"), value))
        .collect();
    produce(&brokers, "ids", &inputs);
    let stage = StageFile::for_plugin(
        &brokers,
        "http-lookup",
        "lookup",
        ["ids", "ids-found", "ids-dlq"],
        &lookup_tables(&service),
    );

    let process = stage.start("stage.log");
    let outputs = read_topic(&brokers, "ids-found", 3, LIMIT, SETTLE);
    let dead_letters = read_topic(&brokers, "ids-dlq", 1, LIMIT, SETTLE);
    let committed = wait_for_commits(&brokers, "lookup", "ids", &[Some(4)], Duration::from_secs(30));

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
        ],
        "log:\n{}",
        process.log()
    );
    assert_eq!(dead_letters.len(), 1);
    assert_eq!(dead_letters[0].key_text(), "key-1");
    assert_eq!(
        dead_letters[0].header("sluice.reason").as_deref(),
        Some("lookup answered 404 Not Found")
    );
    assert_eq!(committed, [Some(4)]);
    let bodies: Vec<Vec<u8>> = service.requests().into_iter().map(|request| request.body).collect();
    assert_eq!(
        bodies,
        values.map(|value| value.as_bytes().to_vec()),
        "one request per message, in order"
    );
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
