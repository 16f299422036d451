//! Staged startup: a broker that is not up yet is waited for; credentials
//! that cannot work stop the stage within seconds, saying why.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::broker::{Broker, free_port};
use sluice_tests::http::{get, wait_for_status};
use sluice_tests::kafka::{Input, produce, read_topic};
use sluice_tests::process::kill_with_parent;
use sluice_tests::stage::StageFile;
use sluice_tests::tls::self_signed;

const TOPICS: [&str; 3] = ["in", "out", "dlq"];

#[test]
fn a_stage_started_before_its_broker_waits_for_it_and_then_runs() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let status_port = free_port();
    let address = format!("127.0.0.1:{status_port}");
    let extra = format!(
        "[kafka.create_topics]\npartitions = 2\n\n[observe]\nhttp_listen = \"{address}\"\n\n\
         [startup]\ninitial_backoff_ms = 200\nmax_backoff_ms = 1000\nmax_attempts = 30\n"
    );
    let stage = StageFile::for_plugin(&brokers, "uppercase", "late-broker", TOPICS, &extra);
    let process = stage.start("stage.log");
    assert!(
        process.wait_for_log("startup step failed; retrying", Duration::from_secs(30)),
        "log:\n{}",
        process.log()
    );
    // Not ready while it waits, but alive.
    wait_for_status(&address, "/healthz", 200, Duration::from_secs(10));
    assert_eq!(get(&address, "/readyz").0, 503);

    let _broker = Broker::start_on(port);
    assert!(
        process.wait_for_log("stage running", Duration::from_secs(60)),
        "log:\n{}",
        process.log()
    );
    produce(
        &brokers,
        "in",
        &(0..100)
            .map(|n| Input::text(n % 2, &format!("key-{n}"), &format!("value {n}")))
            .collect::<Vec<_>>(),
    );
    let outputs = read_topic(&brokers, "out", 100, Duration::from_secs(60), Duration::from_secs(1));
    assert_eq!(outputs.len(), 100, "log:\n{}", process.log());

    let (_, body) = get(&address, "/stats");
    let stats: Value = serde_json::from_str(&body).expect("JSON");
    let steps = stats["startup"].as_array().expect("startup steps");
    let names: Vec<&str> = steps.iter().map(|step| step["step"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "plugin loaded",
            "tls and sasl files",
            "kafka client settings",
            "broker metadata",
            "topics",
            "producer",
            "input partitions",
            "consumer subscribed"
        ]
    );
    let metadata = &steps[3];
    assert_eq!(metadata["outcome"], "done");
    assert!(metadata["attempts"].as_u64().unwrap() > 1, "{stats:#}");
    assert!(
        stats["init_attempts"].as_u64().unwrap() > steps.len() as u64,
        "{stats:#}"
    );
}

/// Run a stage that must refuse to start; returns its log after checking
/// it exited non-zero within seconds, without a retry loop.
fn refuses_to_start(brokers: &str, properties: &str) -> String {
    let stage = StageFile::for_plugin(brokers, "uppercase", "refused", TOPICS, properties);
    let started = Instant::now();
    let (status, log) = stage.run_to_exit(Duration::from_secs(30));
    assert!(!status.success(), "log:\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}; log:\n{log}",
        started.elapsed()
    );
    assert!(
        !log.contains("failed; retrying"),
        "a fatal cause is not retried; log:\n{log}"
    );
    log
}

fn tls_properties(ca: &str, certificate: &str, key: &str) -> String {
    format!(
        "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{ca}\"\n\
         \"ssl.certificate.location\" = \"{certificate}\"\n\"ssl.key.location\" = \"{key}\"\n"
    )
}

#[test]
fn credential_files_that_cannot_work_stop_the_stage_at_once() {
    let dir = tempfile::TempDir::new().expect("dir");
    let ca = self_signed(dir.path(), "ca", -1, 365);
    let good = self_signed(dir.path(), "client", -1, 365);
    let expired = self_signed(dir.path(), "expired", -30, -1);
    let other = self_signed(dir.path(), "other", -1, 365);
    let text = |path: &std::path::Path| path.display().to_string();
    // Nothing listens here: the checks come before any connection.
    let brokers = format!("127.0.0.1:{}", free_port());

    let missing = dir.path().join("missing.pem");
    let log = refuses_to_start(
        &brokers,
        &tls_properties(&text(&ca.certificate), &text(&missing), &text(&good.key)),
    );
    assert!(
        log.contains(&format!(
            "ssl.certificate.location = {}: no such file",
            missing.display()
        )),
        "log:\n{log}"
    );

    let log = refuses_to_start(
        &brokers,
        &tls_properties(&text(&ca.certificate), &text(&expired.certificate), &text(&expired.key)),
    );
    assert!(log.contains("the certificate `expired` expired on"), "log:\n{log}");
    assert!(log.contains("renew it"), "log:\n{log}");

    let log = refuses_to_start(
        &brokers,
        &tls_properties(&text(&ca.certificate), &text(&good.certificate), &text(&other.key)),
    );
    assert!(log.contains("does not belong to the certificate"), "log:\n{log}");

    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "not a certificate").expect("write");
    let log = refuses_to_start(
        &brokers,
        &tls_properties(&text(&not_pem), &text(&good.certificate), &text(&good.key)),
    );
    assert!(log.contains("ssl.ca.location"), "log:\n{log}");
    assert!(log.contains("not a PEM certificate"), "log:\n{log}");
}

/// `openssl s_server` as a TLS endpoint whose certificate the client's CA
/// did not sign.
struct TlsServer(Child);

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_broker_certificate_the_client_does_not_trust_stops_the_stage() {
    let dir = tempfile::TempDir::new().expect("dir");
    let server = self_signed(dir.path(), "broker", -1, 365);
    let unrelated_ca = self_signed(dir.path(), "unrelated-ca", -1, 365);
    let port = free_port();
    let mut command = Command::new("openssl");
    command
        .args(["s_server", "-quiet", "-accept", &port.to_string(), "-cert"])
        .arg(&server.certificate)
        .arg("-key")
        .arg(&server.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    kill_with_parent(&mut command);
    let _server = TlsServer(command.spawn().expect("openssl s_server starts"));
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(10), "s_server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    let properties = format!(
        "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{}\"\n",
        unrelated_ca.certificate.display()
    );
    let log = refuses_to_start(&format!("127.0.0.1:{port}"), &properties);
    assert!(log.contains("the TLS handshake with the brokers failed"), "log:\n{log}");
    assert!(log.contains("certificate verify failed"), "log:\n{log}");
}

#[test]
fn wrong_broker_credentials_stop_the_stage_at_once() {
    let broker = Broker::start_requiring_authentication();
    let properties = "[kafka.properties]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
                      \"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"sluice\"\n\
                      \"sasl.password\" = \"not-the-password\"\n";
    let log = refuses_to_start(&broker.bootstrap_servers(), properties);
    assert!(log.contains("cannot start (broker metadata)"), "log:\n{log}");
    assert!(
        log.contains("the brokers refused authentication; check sasl.mechanisms, sasl.username and sasl.password"),
        "log:\n{log}"
    );
    assert!(log.contains("SASL authentication error"), "log:\n{log}");
}
