//! Watching a running stage: logs, Prometheus metrics, health and stats
//! endpoints, and the trace context carried across stages.
//!
//! Nothing here knows Kafka or plugins: the stage feeds [`Health`],
//! [`PartitionBoard`] and the metrics, and answers the endpoints through
//! [`StatusSource`].

mod health;
mod http;
mod latency;
mod logging;
pub mod metrics;
mod partitions;
mod trace_context;

pub use health::{Health, StartupStep};
pub use http::{StatusServer, StatusSource};
pub use latency::{LatencyHistogram, LatencySummary};
pub use logging::{LogFormat, init_logging};
pub use partitions::{PartitionBoard, PartitionReport};
pub use trace_context::{TRACEPARENT_HEADER, TraceParent};
