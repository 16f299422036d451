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
    /// Replays go a chunk at a time, so an error may come after earlier
    /// chunks went through: `replayed_before` of them were acknowledged.
    #[error("cannot replay to the source topics: {source}; {}", nothing_more(.replayed_before))]
    SourceTopics { source: ProbeError, replayed_before: u64 },
    #[error("cannot clear done-marks in {store}: {source}; {}", nothing_more(.replayed_before))]
    Store {
        store: String,
        source: StoreError,
        replayed_before: u64,
    },
    #[error("cannot create the producer: {0}")]
    Producer(KafkaError),
    /// `total` counts every record produced, in earlier chunks and in the
    /// one that failed; `acknowledged` those the broker took.
    #[error(
        "{failed} of {total} replayed records were not acknowledged by the broker: {details}; the other {acknowledged} \
         were. To retry only the failed ones, pass their --offset{}",
        stopped_short(.stopped_early)
    )]
    Delivery {
        failed: u64,
        total: u64,
        acknowledged: u64,
        /// The failed dead letters (`PARTITION:OFFSET`) with their errors.
        details: String,
        /// More matching dead letters may follow in the topic: the replay
        /// stopped at the chunk that failed, before reading them.
        stopped_early: bool,
    },
}

/// What was replayed before an error that stopped a replay.
fn nothing_more(replayed_before: &u64) -> String {
    if *replayed_before == 0 {
        "nothing was replayed".to_owned()
    } else {
        format!("{replayed_before} dead letters had been replayed and acknowledged before; nothing after them was")
    }
}

fn stopped_short(stopped_early: &bool) -> &'static str {
    if *stopped_early {
        ". The replay stopped there: dead letters not yet read from the topic were not looked at"
    } else {
        ""
    }
}
