//! Prometheus metrics: the process-wide recorder and the names sluice
//! records under.
//!
//! Recording goes through the `metrics` facade, so code that counts
//! something needs no handle; without an installed recorder (`sluice test`,
//! a library user with their own) recording costs nothing.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Messages finished, by outcome: `output`, `filtered`, `dead_lettered`,
/// `deduplicated`.
pub const MESSAGES_FINISHED: &str = "sluice_messages_finished_total";
pub const MESSAGES_RECEIVED: &str = "sluice_messages_received_total";
pub const OUTPUT_RECORDS: &str = "sluice_output_records_total";
pub const RETRIES: &str = "sluice_retries_total";
/// Plugin calls that failed, by kind: `trap`, `deadline`, `memory_limit`,
/// `contract_violation`, `host_panic`.
pub const FAILED_ATTEMPTS: &str = "sluice_failed_attempts_total";
pub const DELIVERY_FAILURES: &str = "sluice_delivery_failures_total";
pub const DEDUP_STORE_ERRORS: &str = "sluice_dedup_store_errors_total";
/// Messages whose dedup key another worker had claimed, so they waited for
/// its done-mark (or for its claim to run out) instead of being handled.
pub const DEDUP_CLAIM_WAITS: &str = "sluice_dedup_claim_waits_total";
/// Waiting messages whose key's claim ran out (its holder died or stalled)
/// and that were then claimed and handled here.
pub const DEDUP_CLAIM_TAKEOVERS: &str = "sluice_dedup_claim_takeovers_total";
/// Claims found gone or taken over when renewed: their messages may be
/// handled twice.
pub const DEDUP_CLAIMS_LOST: &str = "sluice_dedup_claims_lost_total";
/// `handle-batch` calls that failed, so their messages were handled again
/// one at a time, by the failure's kind (as [`FAILED_ATTEMPTS`]).
pub const BATCH_FALLBACKS: &str = "sluice_batch_fallbacks_total";
/// Hot reloads, by outcome: `loaded`, `rejected`, `rolled_back`.
pub const PLUGIN_RELOADS: &str = "sluice_plugin_reloads_total";
pub const PLUGIN_CALL_SECONDS: &str = "sluice_plugin_call_seconds";
/// From the input record's timestamp to the message being finished.
pub const END_TO_END_SECONDS: &str = "sluice_end_to_end_seconds";
/// Per partition: high watermark minus committed offset.
pub const CONSUMER_LAG: &str = "sluice_consumer_lag";
pub const INIT_ATTEMPTS: &str = "sluice_init_attempts_total";
pub const CONNECTION_ERRORS: &str = "sluice_connection_errors_total";
/// Consumers replaced after a run of persistent errors.
pub const CONSUMER_RECREATIONS: &str = "sluice_consumer_recreations_total";
/// Bytes of records taken and not yet finished, across partitions: the
/// in-flight share of `stage.memory_budget_mib` in use.
pub const IN_FLIGHT_BYTES: &str = "sluice_in_flight_bytes";
/// Plugin HTTP requests, by the granted origin pattern they matched
/// (`denied` when none) and outcome: `2xx`..`5xx`, `denied`, `limited`,
/// `refused` (an internal address), `timeout`, `too_large`, `error`.
pub const PLUGIN_HTTP_REQUESTS: &str = "sluice_plugin_http_requests_total";
/// Request body bytes plugins sent, by granted origin pattern.
pub const PLUGIN_HTTP_REQUEST_BYTES: &str = "sluice_plugin_http_request_bytes_total";
/// Response body bytes plugins read, by granted origin pattern.
pub const PLUGIN_HTTP_RESPONSE_BYTES: &str = "sluice_plugin_http_response_bytes_total";
/// Plugin HTTP requests from the plugin's call to the response head.
pub const PLUGIN_HTTP_SECONDS: &str = "sluice_plugin_http_request_seconds";
/// Plugin key-value operations, by operation and outcome: `ok`,
/// `denied` (a bucket not granted), `too_large`, `timeout`,
/// `unavailable`, `full` (the in-memory budget), `invalid` (not a counter).
pub const PLUGIN_KEYVALUE_OPERATIONS: &str = "sluice_plugin_keyvalue_operations_total";
/// Plugin key-value operations, from the call to the answer.
pub const PLUGIN_KEYVALUE_SECONDS: &str = "sluice_plugin_keyvalue_operation_seconds";
/// Partition workers that ended without being told to (a panic).
pub const WORKER_FAILURES: &str = "sluice_worker_failures_total";
/// `[stage] max_messages_per_second`, when set.
pub const RATE_LIMIT_PER_SECOND: &str = "sluice_rate_limit_messages_per_second";
/// Messages let through the rate limit to the plugin (retries included):
/// its rate is the stage's rate against the limit.
pub const RATE_LIMITED_MESSAGES: &str = "sluice_rate_limited_messages_total";
/// How long each message or batch waited for the rate limit.
pub const RATE_LIMIT_WAIT_SECONDS: &str = "sluice_rate_limit_wait_seconds";
/// 1 while the `[breaker]` is open or probing, 0 while closed.
pub const BREAKER_OPEN: &str = "sluice_breaker_open";
/// Breaker transitions, by the state entered (`open`, `closed`); a failed
/// probe counts as entering `open` again.
pub const BREAKER_TRANSITIONS: &str = "sluice_breaker_transitions_total";
/// 1 while a `[health]` threshold is crossed, 0 otherwise.
pub const DEGRADED: &str = "sluice_degraded";

/// Latency buckets in seconds: from a fast Rust call (well under a
/// millisecond) to a message that waited out retries.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The Prometheus recorder, installed on first use. `None` when another
/// global recorder was installed first, in which case metrics go there.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(install).as_ref()
}

fn install() -> Option<PrometheusHandle> {
    let builder = [
        PLUGIN_CALL_SECONDS,
        END_TO_END_SECONDS,
        PLUGIN_HTTP_SECONDS,
        PLUGIN_KEYVALUE_SECONDS,
        RATE_LIMIT_WAIT_SECONDS,
    ]
    .into_iter()
    .try_fold(PrometheusBuilder::new(), |builder, name| {
        builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), &LATENCY_BUCKETS)
    })
    .expect("latency buckets are not empty");
    match builder.install_recorder() {
        Ok(handle) => {
            describe();
            start_upkeep(handle.clone());
            Some(handle)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot install the Prometheus recorder; /metrics stays empty");
            None
        }
    }
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The recorder keeps every histogram sample until it is folded into the
/// buckets, which otherwise happens only when `/metrics` is scraped: a
/// stage nobody scrapes would grow by a few bytes per message for ever.
/// Folding on a timer bounds that to a few seconds' worth.
fn start_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("sluice-metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(error) = started {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; histogram samples are folded only when /metrics is scraped");
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(MESSAGES_RECEIVED, "Messages consumed from the input topics");
    describe_counter!(MESSAGES_FINISHED, "Messages finished (committable), by outcome");
    describe_counter!(OUTPUT_RECORDS, "Output records acknowledged by the broker");
    describe_counter!(RETRIES, "Times a message was tried again");
    describe_counter!(FAILED_ATTEMPTS, "Plugin calls that failed, by kind");
    describe_counter!(
        PLUGIN_HTTP_REQUESTS,
        "HTTP requests plugins made, by granted origin and outcome"
    );
    describe_counter!(
        PLUGIN_HTTP_REQUEST_BYTES,
        Unit::Bytes,
        "Request body bytes plugins sent, by granted origin"
    );
    describe_counter!(
        PLUGIN_HTTP_RESPONSE_BYTES,
        Unit::Bytes,
        "Response body bytes plugins read, by granted origin"
    );
    describe_histogram!(
        PLUGIN_HTTP_SECONDS,
        Unit::Seconds,
        "Plugin HTTP requests: from the call to the response head"
    );
    describe_counter!(
        PLUGIN_KEYVALUE_OPERATIONS,
        "Key-value operations plugins made, by operation and outcome"
    );
    describe_histogram!(
        PLUGIN_KEYVALUE_SECONDS,
        Unit::Seconds,
        "Plugin key-value operations: from the call to the answer"
    );
    describe_counter!(
        BATCH_FALLBACKS,
        "Batch plugin calls that failed, their messages then handled one by one, by kind"
    );
    describe_counter!(
        DELIVERY_FAILURES,
        "Records the broker refused after the producer's retries"
    );
    describe_counter!(DEDUP_STORE_ERRORS, "Dedup store calls that failed");
    describe_counter!(
        DEDUP_CLAIM_WAITS,
        "Messages that waited because another worker had claimed their dedup key"
    );
    describe_counter!(
        DEDUP_CLAIM_TAKEOVERS,
        "Waiting messages handled here after the other worker's claim ran out"
    );
    describe_counter!(
        DEDUP_CLAIMS_LOST,
        "Claims found expired or taken over when renewed (their messages may be handled twice)"
    );
    describe_counter!(PLUGIN_RELOADS, "Hot reloads of the plugin, by outcome");
    describe_gauge!(BREAKER_OPEN, "1 while the failure-flood breaker is open or probing");
    describe_counter!(BREAKER_TRANSITIONS, "Breaker transitions, by the state entered");
    describe_gauge!(DEGRADED, "1 while a [health] threshold is crossed");
    describe_counter!(INIT_ATTEMPTS, "Attempts at each startup step, retries included");
    describe_counter!(CONNECTION_ERRORS, "Errors reaching the brokers");
    describe_counter!(
        CONSUMER_RECREATIONS,
        "Consumers closed and created afresh after persistent errors"
    );
    describe_counter!(
        WORKER_FAILURES,
        "Partition workers that ended without being told to stop"
    );
    describe_gauge!(
        RATE_LIMIT_PER_SECOND,
        "The stage's limit on messages handed to the plugin per second"
    );
    describe_counter!(
        RATE_LIMITED_MESSAGES,
        "Messages let through the rate limit to the plugin, retries included"
    );
    describe_histogram!(
        RATE_LIMIT_WAIT_SECONDS,
        Unit::Seconds,
        "Time a message or batch waited for the rate limit"
    );
    describe_histogram!(PLUGIN_CALL_SECONDS, Unit::Seconds, "Duration of one plugin call");
    describe_histogram!(
        END_TO_END_SECONDS,
        Unit::Seconds,
        "From the input record's timestamp to its message being finished"
    );
    describe_gauge!(CONSUMER_LAG, "High watermark minus committed offset, per partition");
    describe_gauge!(
        IN_FLIGHT_BYTES,
        Unit::Bytes,
        "Bytes of records taken and not yet finished (the in-flight share of the memory budget in use)"
    );
}
