//! The stage loop: message -> plugin -> verdict -> effects -> offset.
//!
//! The only module that knows both Kafka and Wasm. A consumer thread serves
//! the consumer group, commits, and supervises; one worker per assigned
//! partition takes records from that partition's own feed, calls the
//! plugin, produces outputs or dead-letter records, retries in place with
//! backoff, and reports which offsets are finished. Offsets are committed
//! only once everything a verdict asked for is acknowledged by the broker,
//! and never past an unfinished message.
//!
//! Start reading at `next_step` (what each verdict and each delivery
//! failure leads to, as pure functions) and `lanes` (which waiting
//! messages may go to the plugin next, per `stage.ordering`), then
//! `partition_worker` (the driver that carries those steps out) and
//! `consumer_loop` (assignment, commits, supervision, recreation). Shared
//! by every partition: `rate_limit`, `breaker` (stops calls while most
//! fail) and `degraded` (the `[health]` thresholds).

mod breaker;
mod claim_book;
mod consumer_errors;
mod consumer_loop;
mod counters;
mod dead_letter;
mod dedup_screen;
mod degraded;
mod deliveries_in_flight;
mod fault_injection;
mod in_flight_bytes;
mod instance_pool;
mod lanes;
mod memory_budget;
mod next_step;
mod offset_tracker;
mod partition_worker;
mod plugin_caller;
mod prefetch_sizing;
mod rate_limit;
mod recent_activity;
mod record_headers;
mod record_intake;
mod recreation_budget;
mod retry_policy;
mod second_buckets;
mod stage;
mod startup;
mod status;
mod supervision;

pub use counters::{StageCounters, StageSummary};
pub use dead_letter::{DeadLetterHeaderError, DeadLetterHeaders};
pub use fault_injection::FaultInjection;
pub use offset_tracker::OffsetTracker;
pub use record_headers::PLUGIN_VERSION_HEADER;
pub use retry_policy::RetryPolicy;
pub use stage::{Stage, StageError};
