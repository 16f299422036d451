//! Watching a running stage: logs, Prometheus metrics, health and stats
//! endpoints, the trace context carried across stages, and sizing its
//! partitions from sampled offsets.
//!
//! Nothing here knows Kafka or plugins: the stage feeds [`Health`],
//! [`PartitionBoard`] and the metrics, and answers the endpoints through
//! [`StatusSource`].

mod health;
mod http;
mod latency;
mod log_throttle;
mod logging;
pub mod metrics;
mod partition_sizing;
mod partitions;
mod trace_context;

pub use health::{Health, StartupStep};
pub use http::{StatusServer, StatusSource};
pub use latency::{LatencyHistogram, LatencySummary};
pub use log_throttle::LogThrottle;
pub use logging::{LogFormat, init_logging};
pub use partition_sizing::{PartitionSample, PartitionSizing, SampledOffsets, SizingOutcome, size_partitions};
pub use partitions::{PartitionBoard, PartitionReport};
pub use trace_context::{TRACEPARENT_HEADER, TraceParent};
