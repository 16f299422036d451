//! Why a `sluice dlq` command could not do its work.

use crate::dedup::StoreError;
use crate::kafka::{ClientFileError, KafkaError, ProbeError, TopicReadError};

/// Each message says what to fix, or what was and was not done.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(
        "the stage runs on the embedded cluster (kafka.brokers = \"embedded\"), which exists only inside its \
         `sluice run`; there is no dead-letter topic to reach from another process"
    )]
    Embedded,
    #[error(transparent)]
    ClientFiles(#[from] ClientFileError),
    #[error("cannot reach the brokers: {0}")]
    Brokers(#[from] ProbeError),
    #[error(transparent)]
    Read(#[from] TopicReadError),
    #[error("cannot replay to the source topics: {0}")]
    SourceTopics(ProbeError),
    #[error("cannot clear done-marks in {store}: {source}; nothing was replayed")]
    Store { store: String, source: StoreError },
    #[error("cannot create the producer: {0}")]
    Producer(KafkaError),
    #[error(
        "{failed} of {total} replayed records were not acknowledged by the broker: {details}; the other {acknowledged} \
         were. To retry only the failed ones, pass their --offset"
    )]
    Delivery {
        failed: usize,
        total: usize,
        acknowledged: usize,
        /// The failed dead letters (`PARTITION:OFFSET`) with their errors.
        details: String,
    },
}
