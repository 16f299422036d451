//! The failure-flood breaker against a real broker (tansu) and a real HTTP
//! service that goes down mid-stream: the breaker opens, `/readyz` and
//! `/stats` say so, nothing is dead-lettered because of the outage, the
//! service comes back, the stage resumes by itself, and every message is
//! output exactly once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sluice_tests::broker::{Broker, free_port};
use sluice_tests::http::{get, stats_when, wait_for_status};
use sluice_tests::kafka::{Input, create_topics, produce, read_topic, wait_for_commits};
use sluice_tests::lookup_service::LookupService;
use sluice_tests::stage::{StageFile, StageSpec};
use sluice_tests::{rust_plugin, shared_plugin_cache};

const LIMIT: Duration = Duration::from_secs(120);
const MESSAGES: usize = 2_000;

#[test]
fn an_outage_of_the_service_opens_the_breaker_and_dead_letters_nothing() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    let service = LookupService::start();
    service.set_delay(Duration::from_millis(20));
    let topics = ["outage", "outage-out", "outage-dlq"];
    create_topics(&brokers, &topics, 1);
    let inputs: Vec<Input> = (0..MESSAGES)
        .map(|n| Input::text(0, &format!("k{}", n % 50), &format!("{{\"id\":\"m{n}\"}}")))
        .collect();
    produce(&brokers, topics[0], &inputs);
    let port = free_port();
    let plugin = rust_plugin("enrich-http");
    // Without the breaker, five attempts 200, 400, 800 and 1600 ms apart
    // (3 s) would dead-letter every message in flight during a 4 s outage.
    let toml = StageSpec {
        brokers: &brokers,
        plugin: &plugin,
        group: "outage",
        input: topics[0],
        output: topics[1],
        dead_letter: topics[2],
        extra: &format!(
            "[plugin.config]\nlookup-url = \"{url}\"\n\n\
             [plugin.capabilities.http]\nallowed_origins = [\"{origin}\"]\nallowed_addresses = [\"127.0.0.1\"]\n\n\
             [retry]\nmax_attempts = 5\ninitial_backoff_ms = 200\nmax_backoff_ms = 1600\njitter = 0.0\n\n\
             [breaker]\nfailure_share = 0.5\nwindow_seconds = 1\nmin_attempts = 5\nprobe_backoff_ms = 300\nmax_probe_backoff_ms = 1200\n\n\
             [health]\nwindow_seconds = 5\nmax_failure_share = 0.2\n\n\
             [observe]\nhttp_listen = \"127.0.0.1:{port}\"\n",
            url = service.lookup_url(),
            origin = service.origin(),
        ),
    }
    .to_toml_with_stage_keys("ordering = \"key\"\nmax_concurrency_per_partition = 4\nconcurrency = 4\n");
    let stage = StageFile::new(&toml).sharing_cache(&shared_plugin_cache());
    let address = format!("127.0.0.1:{port}");

    let process = stage.start("stage.log");
    read_topic(&brokers, topics[1], 100, LIMIT, Duration::ZERO);
    let ready: serde_json::Value = serde_json::from_str(&get(&address, "/readyz").1).expect("JSON");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["degraded"], serde_json::json!([]), "{ready}");
    // Both gauges are there from the start, not only after a change.
    let metrics = get(&address, "/metrics").1;
    assert!(metrics.contains("sluice_breaker_open 0"), "{metrics}");
    assert!(metrics.contains("sluice_degraded 0"), "{metrics}");

    service.set_down(true);
    let went_down = Instant::now();
    let body = wait_for_status(&address, "/readyz", 503, Duration::from_secs(10));
    let opened_after = went_down.elapsed();
    let not_ready: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let reason = not_ready["reason"].as_str().expect("a reason");
    assert!(reason.contains("the breaker is open"), "{reason}");
    assert!(reason.contains("attempts failed in the last 1 s"), "{reason}");
    let degraded = not_ready["degraded"].as_array().expect("degraded reasons");
    assert!(
        degraded.iter().any(|reason| reason
            .as_str()
            .unwrap()
            .contains("attempts failed in the last 5 s (limit 20%)")),
        "{not_ready}"
    );
    let stats = stats_when(&address, Duration::from_secs(5), |stats| {
        stats["breaker"]["state"] != "closed"
    });
    assert_eq!(stats["breaker"]["times_opened"], 1, "{stats:#}");
    // While open, probes are all the service sees: one at a time, on a
    // backoff growing to 1.2 s.
    std::thread::sleep(Duration::from_secs(2));
    let asked_while_open = service.requests().len();
    std::thread::sleep(Duration::from_secs(2));
    let probes = service.requests().len() - asked_while_open;
    assert!((1..=3).contains(&probes), "{probes} requests in 2 s while open");

    service.set_down(false);
    let outputs = read_topic(&brokers, topics[1], MESSAGES, LIMIT, Duration::from_secs(2));
    let body = wait_for_status(&address, "/readyz", 200, Duration::from_secs(10));
    let ready: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(ready["ready"], true);
    let ids: Vec<String> = outputs
        .iter()
        .map(|record| {
            let value: serde_json::Value = serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
            value["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        ids.len(),
        MESSAGES,
        "every message output once; log:\n{}",
        process.log()
    );
    assert_eq!(unique.len(), MESSAGES);
    let dead_letters = read_topic(&brokers, topics[2], 0, Duration::from_secs(2), Duration::ZERO);
    assert_eq!(dead_letters.len(), 0, "the outage dead-lettered nothing");
    assert_eq!(
        wait_for_commits(
            &brokers,
            "outage",
            topics[0],
            &[Some(MESSAGES as i64)],
            Duration::from_secs(30)
        ),
        [Some(MESSAGES as i64)]
    );
    let stats = stats_when(&address, Duration::from_secs(5), |stats| {
        stats["breaker"]["state"] == "closed"
    });
    assert_eq!(stats["dead_lettered"], 0);
    let log = process.log();
    assert_eq!(log.matches("breaker opened").count(), 1, "{log}");
    assert_eq!(log.matches("breaker closed").count(), 1, "{log}");
    assert!(log.contains("the stage is degraded"), "{log}");
    let metrics = get(&address, "/metrics").1;
    assert!(metrics.contains("sluice_breaker_open 0"), "{metrics}");
    assert!(
        metrics.contains("sluice_breaker_transitions_total{to=\"closed\"} 1"),
        "{metrics}"
    );
    eprintln!("the breaker opened {opened_after:?} after the service went down; {probes} probes in 2 s while open");
}
