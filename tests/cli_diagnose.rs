//! `sluice diagnose`: exact offsets, lag and dead-letter depth on the mock
//! cluster (whose watermarks are exact), a partition count sized from a
//! sample with known progress, the group and its members' partitions on
//! tansu with running stages (which diagnose must not disturb), and fast,
//! clear failures when the brokers cannot be used.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};
use sluice_tests::broker::{Broker, free_port};
use sluice_tests::kafka::{Input, committed_offsets, create_topics, produce, wait_for_commits};
use sluice_tests::sluice_bin;
use sluice_tests::stage::StageFile;

const GROUP: &str = "diagnosed";
const TOPICS: [&str; 3] = ["in", "out", "dlq"];
const LIMIT: Duration = Duration::from_secs(120);

/// `sluice diagnose` with `args` after the stage file.
fn diagnose(stage: &Path, args: &[&str]) -> Output {
    Command::new(sluice_bin())
        .arg("diagnose")
        .arg(stage)
        .args(args)
        .env("SLUICE_LOG", "warn")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("sluice diagnose runs")
}

/// Run diagnose with `--json`, expecting success; returns the document.
fn diagnose_json(stage: &Path, args: &[&str]) -> Value {
    let output = diagnose(stage, &[&["--json"], args].concat());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "diagnose failed: {}\nstdout:\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not JSON ({error}):\n{stdout}"))
}

/// Run diagnose in text form, expecting success; returns what it printed.
fn diagnose_text(stage: &Path, args: &[&str]) -> String {
    let output = diagnose(stage, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "diagnose failed: {}\nstdout:\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Commit `offsets` (partition, next offset) for the group on `in`,
/// standalone: the committing client never joins the group.
fn commit(brokers: &str, offsets: &[(i32, i64)]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .expect("committing client");
    let mut list = TopicPartitionList::new();
    for (partition, offset) in offsets {
        list.add_partition_offset("in", *partition, Offset::Offset(*offset))
            .expect("offset");
    }
    consumer.commit(&list, CommitMode::Sync).expect("commit");
}

/// `count` records on `topic`'s `partition`.
fn fill(brokers: &str, topic: &str, partition: i32, count: usize) {
    let inputs: Vec<Input> = (0..count)
        .map(|n| Input::text(partition, &format!("key-{n}"), "value"))
        .collect();
    produce(brokers, topic, &inputs);
}

/// A mock cluster with `in` (3 partitions: 10, 20 and 5 records), `out`
/// and `dlq` (2 partitions: 3 and 4 records); the group has committed 4 on
/// in/0, 20 on in/1 and nothing on in/2.
fn mock_cluster_with_lag() -> (MockCluster<'static, rdkafka::producer::DefaultProducerContext>, String) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("in", 3, 1).expect("in");
    cluster.create_topic("out", 1, 1).expect("out");
    cluster.create_topic("dlq", 2, 1).expect("dlq");
    let brokers = cluster.bootstrap_servers();
    fill(&brokers, "in", 0, 10);
    fill(&brokers, "in", 1, 20);
    fill(&brokers, "in", 2, 5);
    fill(&brokers, "dlq", 0, 3);
    fill(&brokers, "dlq", 1, 4);
    commit(&brokers, &[(0, 4), (1, 20)]);
    (cluster, brokers)
}

fn position(topic: &str, partition: i32, committed: Option<i64>, high_watermark: i64, lag: i64) -> Value {
    json!({
        "topic": topic,
        "partition": partition,
        "committed": committed,
        "log_start": 0,
        "high_watermark": high_watermark,
        "lag": lag,
    })
}

#[test]
fn exact_offsets_lag_and_dead_letters_on_the_mock_cluster() {
    let (_cluster, brokers) = mock_cluster_with_lag();
    let stage = StageFile::for_plugin(&brokers, "uppercase", GROUP, TOPICS, "");

    let report = diagnose_json(&stage.path, &["--sample-seconds", "1"]);
    println!("{report:#}");
    assert_eq!(report["stage"], "test-stage");
    assert_eq!(report["group_id"], GROUP);
    assert_eq!(report["brokers"]["bootstrap_servers"], brokers.as_str());
    assert_eq!(report["brokers"]["brokers"].as_array().map(Vec::len), Some(1));
    let topics: Vec<(String, String, bool, u64)> = report["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|topic| {
            (
                topic["role"].as_str().unwrap().to_owned(),
                topic["name"].as_str().unwrap().to_owned(),
                topic["exists"].as_bool().unwrap(),
                topic["partitions"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        topics,
        [
            ("input".to_owned(), "in".to_owned(), true, 3),
            ("output".to_owned(), "out".to_owned(), true, 1),
            ("dead_letter".to_owned(), "dlq".to_owned(), true, 2),
        ]
    );
    assert_eq!(report["topics"][0]["replication_factor"], 1);

    assert_eq!(
        report["partitions"],
        json!([
            position("in", 0, Some(4), 10, 6),
            position("in", 1, Some(20), 20, 0),
            position("in", 2, None, 5, 5),
        ])
    );
    assert_eq!(
        report["totals"],
        json!({"partitions": 3, "nothing_committed": 1, "committed": 24, "high_watermark": 35, "lag": 11})
    );
    assert_eq!(report["dead_letter"]["topic"], "dlq");
    assert_eq!(report["dead_letter"]["records"], 7);

    // The mock cluster does not implement ListGroups/DescribeGroups.
    assert_eq!(report["group"]["status"], "unavailable", "{report:#}");
    assert!(
        report["group"]["reason"]
            .as_str()
            .unwrap()
            .contains("ListGroups/DescribeGroups"),
        "{report:#}"
    );

    // Nothing moved during the one-second sample.
    let sizing = &report["partition_sizing"];
    assert!(sizing["sample_seconds"].as_f64().unwrap() >= 1.0, "{sizing:#}");
    assert_eq!(sizing["input_records"], 0);
    assert_eq!(sizing["outcome"]["kind"], "no_input");

    // Diagnosing committed nothing.
    assert_eq!(committed_offsets(&brokers, GROUP, "in", 3), [Some(4), Some(20), None]);
}

#[test]
fn the_text_report_has_every_section_with_the_numbers() {
    let (_cluster, brokers) = mock_cluster_with_lag();
    let stage = StageFile::for_plugin(&brokers, "uppercase", GROUP, TOPICS, "");
    let text = diagnose_text(&stage.path, &["--sample-seconds", "0"]);
    println!("{text}");
    for section in [
        "Stage test-stage, group diagnosed\n",
        "\nBrokers\n",
        "\nTopics\n",
        "\nConsumer group diagnosed\n",
        "\nInput partitions\n",
        "\nDead letters (dlq)\n",
        "\nPartition count\n",
    ] {
        assert!(text.contains(section), "no {section:?} in:\n{text}");
    }
    let line = |start: &str| {
        text.lines()
            .find(|line| line.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("bootstrap servers"), format!("bootstrap servers {brokers}"));
    assert_eq!(line("input "), "input in exists, 3 partitions, replication 1");
    assert_eq!(
        line("dead letter "),
        "dead letter dlq exists, 2 partitions, replication 1"
    );
    assert_eq!(line("in/0"), "in/0 4 0 10 6");
    assert_eq!(line("in/1"), "in/1 20 0 20 0");
    assert_eq!(line("in/2"), "in/2 - 0 5 5 nothing committed");
    assert_eq!(line("total"), "total 24 35 11 1 of 3 with nothing committed");
    assert_eq!(line("7 records"), "7 records");
    assert!(line("unavailable:").contains("ListGroups/DescribeGroups"));
    assert_eq!(line("not measured"), "not measured (--sample-seconds 0)");
}

#[test]
fn a_sample_with_known_input_and_progress_sizes_the_partitions() {
    let (_cluster, brokers) = mock_cluster_with_lag();
    let stage = StageFile::for_plugin(&brokers, "uppercase", GROUP, TOPICS, "");
    let mut child = Command::new(sluice_bin())
        .arg("diagnose")
        .arg(&stage.path)
        .args(["--json", "--sample-seconds", "4", "--headroom", "1.5"])
        .env("SLUICE_LOG", "info")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice diagnose starts");
    // Once the first sample is taken: 30 more records on in/0 and 10 of
    // its backlog committed; in/0 keeps a backlog at both samples.
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut logged = String::new();
    while !logged.contains("sampling offsets") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).expect("read stderr") > 0,
            "diagnose ended before sampling:\n{logged}"
        );
        logged.push_str(&line);
    }
    let started = Instant::now();
    fill(&brokers, "in", 0, 30);
    commit(&brokers, &[(0, 14)]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the changes must land inside the sample"
    );
    let output = child.wait_with_output().expect("diagnose ends");
    assert!(output.status.success(), "{logged}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let sizing = &report["partition_sizing"];
    println!("{sizing:#}");

    let seconds = sizing["sample_seconds"].as_f64().unwrap();
    assert!((4.0..6.0).contains(&seconds), "{sizing:#}");
    assert_eq!(sizing["input_records"], 30);
    assert_eq!(sizing["processed_records"], 10);
    assert_eq!(sizing["backlogged_partitions"], 1);
    assert_eq!(sizing["backlogged_processed_records"], 10);
    assert_eq!(sizing["current_partitions"], 3);
    // Consistent with the partitions it prints (the last sample).
    assert_eq!(sizing["high_watermarks_end"], report["totals"]["high_watermark"]);
    assert_eq!(sizing["high_watermarks_start"], 35);
    assert_eq!(report["totals"]["high_watermark"], 65);
    let rate = |name: &str| sizing[name].as_f64().unwrap();
    assert!((rate("input_rate") - 30.0 / seconds).abs() < 1e-9);
    assert!((rate("processing_rate") - 10.0 / seconds).abs() < 1e-9);
    assert!((rate("per_partition_rate") - 10.0 / seconds).abs() < 1e-9);
    // 30/s × 1.5 / 10/s per partition = 4.5 -> 5 partitions.
    assert_eq!(
        sizing["outcome"],
        json!({"kind": "recommended", "needed": 4.5, "partitions": 5})
    );
}

/// The member list of a described group: member id, and the partitions
/// of `in` it owns when the broker reports assignments.
fn members(report: &Value) -> Vec<(String, Option<BTreeSet<i64>>)> {
    report["group"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {report:#}"))
        .iter()
        .map(|member| {
            let assignment = &member["assignment"];
            let partitions = match assignment["kind"].as_str() {
                Some("decoded") => Some(
                    assignment["topics"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|topic| topic["topic"] == "in")
                        .flat_map(|topic| {
                            topic["partitions"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|p| p.as_i64().unwrap())
                        })
                        .collect(),
                ),
                Some("not_reported") => None,
                _ => panic!("assignment neither decoded nor absent: {member:#}"),
            };
            (member["member_id"].as_str().unwrap().to_owned(), partitions)
        })
        .collect()
}

/// Diagnose until `done` accepts the report (the group settles after a
/// join), or panic after `limit`.
fn diagnose_until(stage: &Path, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let report = diagnose_json(stage, &["--sample-seconds", "0"]);
        if done(&report) {
            return report;
        }
        assert!(started.elapsed() < limit, "never settled: {report:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn running_members_and_their_partitions_on_tansu_undisturbed() {
    let broker = Broker::start();
    let brokers = broker.bootstrap_servers();
    create_topics(&brokers, &TOPICS, 4);
    for partition in 0..4 {
        fill(&brokers, "in", partition, 10);
    }
    let file = StageFile::for_plugin(&brokers, "uppercase", GROUP, TOPICS, "");
    let first = file.start("first.log");
    assert!(
        first.wait_for_log("partitions assigned", LIMIT),
        "log:\n{}",
        first.log()
    );
    // tansu lists a group (ListGroups) only once it has committed offsets.
    assert_eq!(
        wait_for_commits(&brokers, GROUP, "in", &[Some(10); 4], LIMIT),
        [Some(10); 4],
        "log:\n{}",
        first.log()
    );

    let all: BTreeSet<i64> = (0..4).collect();
    let settled = |report: &Value, count: usize| {
        report["group"]["status"] == "described"
            && report["group"]["state"] == "Stable"
            && members(report).len() == count
    };
    let report = diagnose_until(&file.path, LIMIT, |report| settled(report, 1));
    println!("one member:\n{report:#}");
    assert_eq!(report["group"]["protocol_type"], "consumer");
    let (first_member, owned) = members(&report).remove(0);
    assert!(first_member.starts_with("rdkafka-"), "{first_member}");
    // tansu 0.6 sends no member assignments (decoding them is unit-tested
    // on the bytes librdkafka writes); where they are sent, the one member
    // owns every partition.
    assert!(owned.is_none() || owned == Some(all.clone()), "{report:#}");
    let text = diagnose_text(&file.path, &["--sample-seconds", "0"]);
    println!("{text}");
    assert!(text.contains("\n  state     Stable\n"), "{text}");
    assert!(text.contains("\n  members   1\n"), "{text}");
    assert!(text.contains(&format!("\n    {first_member}\n")), "{text}");

    // Diagnosing did not join the group: no rebalance reached the stage.
    std::thread::sleep(Duration::from_secs(3));
    let log = first.log();
    assert_eq!(log.matches("partitions assigned").count(), 1, "log:\n{log}");
    assert!(!log.contains("partitions revoked"), "log:\n{log}");

    let second = file.start("second.log");
    assert!(
        second.wait_for_log("partitions assigned", LIMIT),
        "log:\n{}",
        second.log()
    );
    let report = diagnose_until(&file.path, LIMIT, |report| settled(report, 2));
    println!("two members:\n{report:#}");
    let members = members(&report);
    assert_ne!(members[0].0, members[1].0);
    assert!(
        members.iter().any(|member| member.0 == first_member),
        "the first stage kept its membership: {members:?}"
    );
    if let (Some(one), Some(other)) = (&members[0].1, &members[1].1) {
        assert!(one.is_disjoint(other), "{members:?}");
        assert_eq!(one | other, all, "{members:?}");
    }
    let text = diagnose_text(&file.path, &["--sample-seconds", "0"]);
    println!("{text}");
    assert!(text.contains("\n  members   2\n"), "{text}");
    let member_lines = text.lines().filter(|line| line.starts_with("    rdkafka-")).count();
    assert_eq!(member_lines, 2, "{text}");
}

/// Run diagnose expecting it to fail within `limit`; returns its stderr.
fn fails_within(stage: &Path, args: &[&str], limit: Duration) -> String {
    let started = Instant::now();
    let output = diagnose(stage, args);
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "diagnose succeeded: {stderr}");
    assert!(elapsed < limit, "took {elapsed:?}: {stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout when it fails");
    stderr
}

#[test]
fn unreachable_brokers_fail_within_the_timeout_naming_the_address() {
    let brokers = format!("127.0.0.1:{}", free_port());
    let stage = StageFile::for_plugin(&brokers, "uppercase", GROUP, TOPICS, "");
    let stderr = fails_within(&stage.path, &["--timeout-seconds", "2"], Duration::from_secs(8));
    assert!(stderr.contains("cannot diagnose stage `test-stage`"), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read cluster metadata from {brokers}")),
        "{stderr}"
    );
}

#[test]
fn refused_credentials_fail_at_once_saying_what_to_check() {
    let broker = Broker::start_requiring_authentication();
    let properties = "[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
                      \"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"sluice\"\n\
                      \"sasl.password\" = \"not-the-password\"\n";
    let stage = StageFile::for_plugin(&broker.bootstrap_servers(), "uppercase", GROUP, TOPICS, properties);
    let stderr = fails_within(&stage.path, &["--timeout-seconds", "10"], Duration::from_secs(8));
    assert!(
        stderr.contains("the brokers refused authentication; check sasl.mechanisms, sasl.username and sasl.password"),
        "{stderr}"
    );
}

#[test]
fn a_stage_file_that_cannot_be_used_fails_saying_why() {
    let dir = tempfile::TempDir::new().expect("dir");
    let missing = dir.path().join("missing.toml");
    let stderr = fails_within(&missing, &[], Duration::from_secs(5));
    assert!(stderr.contains("missing.toml: no such file"), "{stderr}");

    let embedded = StageFile::for_plugin("embedded", "uppercase", GROUP, TOPICS, "");
    let stderr = fails_within(&embedded.path, &[], Duration::from_secs(5));
    assert!(stderr.contains("kafka.brokers is `embedded`"), "{stderr}");

    let stage = StageFile::for_plugin("127.0.0.1:9", "uppercase", GROUP, TOPICS, "");
    let output = diagnose(&stage.path, &["--headroom", "0.5"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("expected a number of at least 1"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
