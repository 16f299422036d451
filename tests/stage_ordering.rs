//! `stage.ordering = "key"` against a real broker (tansu) and a real HTTP
//! service that answers slowly: messages of one key are handled and
//! produced in their input order, different keys at once (up to the cap),
//! a retrying key holds back only itself, a SIGKILL mid-run loses nothing
//! and never leaves a commit past an unfinished message, and hundreds of
//! calls waiting at once hold no thread each.
//!
//! The handler is `enrich-http`, which looks each message's `id` up on the
//! service: the service sees the order the plugin handled messages in, and
//! how many it was asked at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_tests::broker::Broker;
use sluice_tests::kafka::{Input, Record, committed_offsets, create_topics, produce, read_topic, wait_for_commits};
use sluice_tests::lookup_service::{LookupService, SeenRequest};
use sluice_tests::stage::{StageFile, StageSpec};
use sluice_tests::timing::thread_count;
use sluice_tests::{rust_plugin, shared_plugin_cache};

const LIMIT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(2);
const PARTITIONS: i32 = 2;

/// A stage running `enrich-http` against `service` with `stage_keys` added
/// to its `[stage]` table.
fn stage_file(
    brokers: &str,
    group: &str,
    topics: [&str; 3],
    service: &LookupService,
    stage_keys: &str,
    extra: &str,
) -> StageFile {
    let plugin = rust_plugin("enrich-http");
    let spec = StageSpec {
        brokers,
        plugin: &plugin,
        group,
        input: topics[0],
        output: topics[1],
        dead_letter: topics[2],
        extra: &format!(
            "[plugin.config]\nlookup-url = \"{url}\"\n\n[plugin.capabilities.http]\nallowed_origins = [\"{origin}\"]\nallowed_addresses = [\"127.0.0.1\"]\n\n{extra}",
            url = service.lookup_url(),
            origin = service.origin(),
        ),
    };
    StageFile::new(&spec.to_toml_with_stage_keys(stage_keys)).sharing_cache(&shared_plugin_cache())
}

fn topics(brokers: &str, prefix: &str) -> [String; 3] {
    let topics = [prefix.to_owned(), format!("{prefix}-out"), format!("{prefix}-dlq")];
    create_topics(brokers, &[&topics[0], &topics[1], &topics[2]], PARTITIONS);
    topics
}

/// `{"id":"<key>.<n>"}` for the n-th message of `key`.
fn record(key: &str, n: usize) -> String {
    format!("{{\"id\":\"{key}.{n}\"}}")
}

/// The id an output (or a request) is about: `<key>.<n>`.
fn id_of(record: &Record) -> String {
    let value: serde_json::Value = serde_json::from_slice(record.value.as_deref().unwrap_or_default()).expect("JSON");
    value["id"].as_str().expect("an id").to_owned()
}

fn split_id(id: &str) -> (String, usize) {
    let (key, n) = id.rsplit_once('.').expect("<key>.<n>");
    (key.to_owned(), n.parse().expect("a number"))
}

/// `count` messages over `keys` keys, the keys spread over the partitions;
/// returns each id's (partition, offset).
fn produce_keyed(brokers: &str, topic: &str, count: usize, keys: usize) -> HashMap<String, (i32, i64)> {
    let mut per_key = vec![0; keys];
    let mut next_offset = vec![0i64; PARTITIONS as usize];
    let mut placed = HashMap::new();
    let inputs: Vec<Input> = (0..count)
        .map(|n| {
            // Not round-robin: neighbours share keys, so a key's messages
            // are often queued behind each other.
            let key_index = (n * 7 + n / 3) % keys;
            let key = format!("k{key_index}");
            let partition = (key_index % PARTITIONS as usize) as i32;
            let seq = per_key[key_index];
            per_key[key_index] += 1;
            let id = format!("{key}.{seq}");
            placed.insert(id, (partition, next_offset[partition as usize]));
            next_offset[partition as usize] += 1;
            Input::text(partition, &key, &record(&key, seq))
        })
        .collect();
    produce(brokers, topic, &inputs);
    placed
}

/// Per key, the sequence numbers in the order `ids` lists them.
fn per_key_order<'a>(ids: impl Iterator<Item = &'a str>) -> BTreeMap<String, Vec<usize>> {
    let mut order: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for id in ids {
        let (key, n) = split_id(id);
        order.entry(key).or_default().push(n);
    }
    order
}

fn expected_offsets(placed: &HashMap<String, (i32, i64)>) -> Vec<Option<i64>> {
    (0..PARTITIONS)
        .map(|partition| Some(placed.values().filter(|(p, _)| *p == partition).count() as i64))
        .collect()
}

#[test]
fn key_order_keeps_each_keys_order_and_runs_keys_at_once_up_to_the_cap() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let service = LookupService::start();
    service.set_delay(Duration::from_millis(20));
    let topics = topics(&brokers, "keyed");
    let topics = [topics[0].as_str(), topics[1].as_str(), topics[2].as_str()];
    let placed = produce_keyed(&brokers, topics[0], 2_000, 60);
    let cap = 8;
    let stage = stage_file(
        &brokers,
        "keyed",
        topics,
        &service,
        &format!("ordering = \"key\"\nmax_concurrency_per_partition = {cap}\nconcurrency = 64"),
        "",
    );

    let started = Instant::now();
    let process = stage.start("stage.log");
    let outputs = read_topic(&brokers, topics[1], 2_000, LIMIT, SETTLE);
    let took = started.elapsed();
    let committed = wait_for_commits(
        &brokers,
        "keyed",
        topics[0],
        &expected_offsets(&placed),
        Duration::from_secs(30),
    );

    let ids: Vec<String> = outputs.iter().map(id_of).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), 2_000, "log:\n{}", process.log());
    assert_eq!(unique.len(), 2_000, "no output twice");
    // A key lives on one partition, so its outputs are in one partition's
    // order: the order read back.
    for (key, order) in per_key_order(ids.iter().map(String::as_str)) {
        let expected: Vec<usize> = (0..order.len()).collect();
        assert_eq!(order, expected, "outputs of {key} out of their input order");
    }
    // The plugin asked the service in each key's order too.
    let requested: Vec<String> = service
        .requests()
        .iter()
        .map(|request| String::from_utf8(request.subject()).expect("UTF-8"))
        .collect();
    assert_eq!(requested.len(), 2_000);
    for (key, order) in per_key_order(requested.iter().map(String::as_str)) {
        let expected: Vec<usize> = (0..order.len()).collect();
        assert_eq!(order, expected, "lookups of {key} out of their input order");
    }
    let at_once = service.max_at_once();
    assert!(
        at_once > 1 && at_once <= cap * PARTITIONS as usize,
        "{at_once} lookups at once; the cap is {cap} per partition"
    );
    assert_eq!(committed, expected_offsets(&placed));
    assert!(read_topic(&brokers, topics[2], 0, Duration::from_secs(1), Duration::ZERO).is_empty());
    eprintln!(
        "2000 messages of 60 keys, 20 ms per lookup: {took:?}, at most {at_once} lookups at once (cap {} in all)",
        cap * PARTITIONS as usize
    );
}

/// Calls that wait cost instances, not threads: 256 lookups in flight at
/// once (300 ms each) while the stage process keeps a few dozen threads.
/// Each call waiting on its response is a parked future on the plugin's
/// call threads; with a blocking thread per call the process would have
/// over 256.
#[test]
fn hundreds_of_waiting_calls_hold_no_thread_each() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let service = LookupService::start();
    service.set_delay(Duration::from_millis(300));
    let topics = topics(&brokers, "parked");
    let topics = [topics[0].as_str(), topics[1].as_str(), topics[2].as_str()];
    let messages = 1_500;
    produce_keyed(&brokers, topics[0], messages, messages);
    let stage = stage_file(
        &brokers,
        "parked",
        topics,
        &service,
        "ordering = \"key\"\nmax_concurrency_per_partition = 128\nconcurrency = 256",
        "",
    );

    let process = stage.start("stage.log");
    let pid = process.pid().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let peak_threads = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(thread_count(&pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let outputs = read_topic(&brokers, topics[1], messages, LIMIT, SETTLE);
    stop.store(true, Ordering::Relaxed);
    let peak_threads = peak_threads.join().expect("sampler");

    let unique: HashSet<String> = outputs.iter().map(id_of).collect();
    assert_eq!(outputs.len(), messages, "log:\n{}", process.log());
    assert_eq!(unique.len(), messages, "no output twice");
    assert!(read_topic(&brokers, topics[2], 0, Duration::from_secs(1), Duration::ZERO).is_empty());
    let at_once = service.max_at_once();
    assert!(
        (200..=256).contains(&at_once),
        "{at_once} lookups at once; 256 were allowed and 1,500 keys were waiting"
    );
    assert!(
        (1..64).contains(&peak_threads),
        "the stage process had {peak_threads} threads with {at_once} calls waiting at once"
    );
    eprintln!("{at_once} lookups at once, at most {peak_threads} threads in the stage process");
}

/// On partition 0: key `a` first asks a service that answers 503 with
/// `Retry-After: 2` once; `a`'s second message and 20 of other keys
/// follow. Returns the 22 outputs and the requests the service saw.
fn a_retry_among_others(prefix: &str, ordering: &str) -> (Vec<Record>, Vec<SeenRequest>) {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let service = LookupService::start();
    let topics = topics(&brokers, prefix);
    let topics = [topics[0].as_str(), topics[1].as_str(), topics[2].as_str()];
    let mut inputs = vec![
        Input::text(0, "a", "{\"id\":\"once:503:a\"}"),
        Input::text(0, "a", "{\"id\":\"a.1\"}"),
    ];
    for n in 0..20 {
        inputs.push(Input::text(
            0,
            &format!("k{}", n % 5),
            &format!("{{\"id\":\"k{}.{}\"}}", n % 5, n / 5),
        ));
    }
    produce(&brokers, topics[0], &inputs);
    let stage = stage_file(
        &brokers,
        prefix,
        topics,
        &service,
        &format!("ordering = \"{ordering}\"\nmax_concurrency_per_partition = 4\nconcurrency = 8"),
        "",
    );

    let process = stage.start("stage.log");
    let outputs = read_topic(&brokers, topics[1], 22, LIMIT, SETTLE);
    assert_eq!(outputs.len(), 22, "log:\n{}", process.log());
    let committed = wait_for_commits(&brokers, prefix, topics[0], &[Some(22), None], Duration::from_secs(30));
    assert_eq!(committed, [Some(22), None]);
    (outputs, service.requests())
}

/// How long before `later` was produced `earlier` was, in milliseconds.
fn produced_ahead(earlier: &Record, later: &Record) -> i64 {
    later.timestamp_ms.unwrap() - earlier.timestamp_ms.unwrap()
}

/// When the service was asked about `a`'s messages: the first try, the
/// retry and `a.1`, in the order it saw them.
fn requests_about_a(requests: &[SeenRequest]) -> Vec<(String, Instant)> {
    requests
        .iter()
        .map(|request| (String::from_utf8(request.subject()).unwrap(), request.at))
        .filter(|(subject, _)| subject == "once:503:a" || subject == "a.1")
        .collect()
}

#[test]
fn a_retrying_key_holds_back_only_its_own_later_messages() {
    let (outputs, requests) = a_retry_among_others("held", "key");
    let ids: Vec<String> = outputs.iter().map(id_of).collect();
    let position = |id: &str| ids.iter().position(|seen| seen == id).expect(id);
    assert!(position("once:503:a") < position("a.1"), "a's order: {ids:?}");
    // Every other key finished while `a` waited out its 2 s.
    let retried = &outputs[position("once:503:a")];
    for other in outputs.iter().filter(|record| record.key_text() != "a") {
        let ahead = produced_ahead(other, retried);
        assert!(
            ahead >= 1_000,
            "{} was produced {ahead} ms before a's retried output, not during its backoff",
            id_of(other)
        );
    }
    let about_a = requests_about_a(&requests);
    let subjects: Vec<&str> = about_a.iter().map(|(subject, _)| subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["once:503:a", "once:503:a", "a.1"],
        "a.1 waited for a's retry"
    );
    assert!(about_a[1].1 - about_a[0].1 >= Duration::from_millis(1_900));
}

#[test]
fn under_no_order_a_retry_holds_back_only_itself() {
    let (outputs, requests) = a_retry_among_others("alone", "none");
    let ids: Vec<String> = outputs.iter().map(id_of).collect();
    let position = |id: &str| ids.iter().position(|seen| seen == id).expect(id);
    // Even `a`'s own next message went ahead during the backoff.
    let retried = &outputs[position("once:503:a")];
    for other in outputs.iter().filter(|record| id_of(record) != "once:503:a") {
        let ahead = produced_ahead(other, retried);
        assert!(
            ahead >= 1_000,
            "{} was produced {ahead} ms before the retried output, not during its backoff",
            id_of(other)
        );
    }
    // `a`'s first try and `a.1` went at once (in either order); the
    // retry came 2 s later.
    let about_a = requests_about_a(&requests);
    let subjects: Vec<&str> = about_a.iter().map(|(subject, _)| subject.as_str()).collect();
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    assert_eq!(subjects[2], "once:503:a", "{subjects:?}");
    let a1_at = about_a
        .iter()
        .find(|(subject, _)| subject == "a.1")
        .expect("a.1 was looked up")
        .1;
    assert!(about_a[2].1 - a1_at >= Duration::from_millis(1_900), "a.1 did not wait");
}

#[test]
fn a_killed_key_ordered_stage_loses_nothing_and_never_commits_past_an_unfinished_message() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let service = LookupService::start();
    service.set_delay(Duration::from_millis(20));
    let topics = topics(&brokers, "killed");
    let topics = [topics[0].as_str(), topics[1].as_str(), topics[2].as_str()];
    let placed = produce_keyed(&brokers, topics[0], 3_000, 200);
    let stage_keys = "ordering = \"key\"\nmax_concurrency_per_partition = 16\nconcurrency = 64";
    // A short session, so the restarted member is not kept waiting for
    // the killed one's.
    let stage = stage_file(
        &brokers,
        "killed",
        topics,
        &service,
        stage_keys,
        "[kafka.consumer_properties]\n\"session.timeout.ms\" = 6000\n",
    );

    let mut process = stage.start("first.log");
    let before = read_topic(&brokers, topics[1], 1_200, LIMIT, Duration::ZERO);
    process.signal(libc::SIGKILL);
    process.wait(Duration::from_secs(10)).expect("killed");
    let committed = committed_offsets(&brokers, "killed", topics[0], PARTITIONS);
    // Everything below a committed offset has its output.
    let produced: HashSet<String> = read_topic(&brokers, topics[1], usize::MAX, Duration::from_secs(3), Duration::ZERO)
        .iter()
        .map(id_of)
        .collect();
    let mut covered = 0;
    for (id, (partition, offset)) in &placed {
        if let Some(committed) = committed[*partition as usize]
            && *offset < committed
        {
            covered += 1;
            assert!(
                produced.contains(id),
                "{id} at {partition}/{offset} is committed ({committed}) but has no output"
            );
        }
    }
    assert!(covered > 0, "something was committed before the kill: {committed:?}");

    // tansu keeps a killed member in the group until someone joins after
    // its session timed out, and one that joins earlier can be left with no
    // partitions for good (see stage_lifecycle.rs): wait the session out.
    std::thread::sleep(Duration::from_secs(7));
    let restarted = stage.start("second.log");
    assert_eq!(
        wait_for_commits(&brokers, "killed", topics[0], &expected_offsets(&placed), LIMIT),
        expected_offsets(&placed),
        "log:\n{}",
        restarted.log()
    );
    // Redelivered messages come out twice: read everything there is.
    let outputs = read_topic(&brokers, topics[1], usize::MAX, Duration::from_secs(5), Duration::ZERO);
    let ids: Vec<String> = outputs.iter().map(id_of).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    let missing: Vec<&String> = placed.keys().filter(|id| !unique.contains(id)).collect();
    assert!(missing.is_empty(), "lost {missing:?}; log:\n{}", restarted.log());
    // Per key, the first time each message appears is in input order
    // (a redelivery repeats a tail of a key's messages, never reorders).
    let mut first_seen: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for id in &ids {
        if seen.insert(id) {
            first_seen.push(id);
        }
    }
    for (key, order) in per_key_order(first_seen.into_iter()) {
        let expected: Vec<usize> = (0..order.len()).collect();
        assert_eq!(order, expected, "first outputs of {key} out of input order");
    }
    eprintln!(
        "killed after {} outputs, committed {committed:?}; {} outputs in all for 3000 inputs ({} duplicates)",
        before.len(),
        ids.len(),
        ids.len() - unique.len()
    );
}
