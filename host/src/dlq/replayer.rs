//! Putting planned dead letters back: clear their done-marks, produce
//! them, and report success only once the broker acknowledged every one.

use std::sync::Arc;

use super::error::DlqError;
use super::replay_plan::PlannedReplay;
use crate::config::{DedupKeyKind, StageConfig};
use crate::dedup::{DedupKey, DedupStore, open_store};
use crate::kafka::SinkProducer;

/// Where the stage keeps the done-marks a replay must clear. The pipeline
/// marks a message done once its dead letter is acknowledged, so without
/// clearing, the stage would skip the replayed copy as a duplicate.
pub enum DoneMarks {
    /// The stage has no `[dedup]`: nothing to clear.
    NotDeduplicating,
    /// `coordinates` keys: a replayed copy has new coordinates, so no mark
    /// can match it.
    ByCoordinates,
    /// Marks live in the running stage's memory, out of reach.
    InStageMemory,
    /// Redis, shared with the stage.
    Store(Arc<dyn DedupStore>),
}

impl DoneMarks {
    /// The stage's store, when a replay can and must clear marks in it.
    /// Connecting is lazy: an unreachable Redis shows up when clearing.
    pub fn for_stage(config: &StageConfig) -> Result<Self, DlqError> {
        let Some(dedup) = &config.dedup else {
            return Ok(DoneMarks::NotDeduplicating);
        };
        if dedup.key == DedupKeyKind::Coordinates {
            return Ok(DoneMarks::ByCoordinates);
        }
        if dedup.redis_url.is_none() {
            return Ok(DoneMarks::InStageMemory);
        }
        let store = open_store(dedup).map_err(|source| DlqError::Store {
            store: "Redis".to_owned(),
            source,
        })?;
        Ok(DoneMarks::Store(store))
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayOutcome {
    /// Records produced and acknowledged.
    pub replayed: usize,
    /// Done-marks that existed and were removed.
    pub marks_cleared: u64,
}

/// Clear the done-marks of `replays` (all in one round trip, before
/// anything is produced, so a store error replays nothing), then produce
/// every record and wait for every acknowledgement.
pub async fn replay(
    replays: &[PlannedReplay],
    producer: &SinkProducer,
    marks: &DoneMarks,
) -> Result<ReplayOutcome, DlqError> {
    let mut marks_cleared = 0;
    if let DoneMarks::Store(store) = marks {
        let keys: Vec<DedupKey> = replays.iter().filter_map(|replay| replay.done_mark.clone()).collect();
        marks_cleared = store.forget(&keys).await.map_err(|source| DlqError::Store {
            store: store.describe(),
            source,
        })?;
    }

    let mut deliveries = Vec::with_capacity(replays.len());
    for replay in replays {
        deliveries.push(producer.enqueue_to_partition(&replay.record, replay.partition).await);
    }
    let results = futures::future::join_all(deliveries).await;
    let failures: Vec<String> = replays
        .iter()
        .zip(&results)
        .filter_map(|(replay, result)| result.as_ref().err().map(|error| format!("{} ({error})", replay.at)))
        .collect();
    if !failures.is_empty() {
        return Err(DlqError::Delivery {
            failed: failures.len(),
            total: replays.len(),
            acknowledged: replays.len() - failures.len(),
            details: failures.join(", "),
        });
    }
    Ok(ReplayOutcome {
        replayed: replays.len(),
        marks_cleared,
    })
}
