//! Dead letters after the fact: reading a stage's dead-letter topic while
//! the stage runs, choosing records, and putting them back through the
//! stage once its plugin is fixed (`sluice dlq`; showing them is the CLI's).
//!
//! Records flow through one at a time, from the topic to the screen or to
//! a [`Replayer`] that produces them in bounded chunks, so no command
//! holds more than a chunk however many dead letters it selects.
//!
//! Knows the pipeline's dead-letter headers and dedup keys, and uses
//! `kafka` for reading and producing; `kafka` knows nothing of this.

mod dead_letter_record;
mod error;
mod replay_plan;
mod replayer;
mod selection;
mod stage_kafka;

pub use dead_letter_record::{DeadLetterOffset, DeadLetterRecord, OmittedPart};
pub use error::DlqError;
pub use replay_plan::{
    IncompleteReplay, PlannedReplay, REPLAYED_FROM_HEADER, ReplayPlanner, SkipReason, SkippedDeadLetter,
};
pub use replayer::{ChunkBounds, DoneMarks, ReplayOutcome, Replayer};
pub use selection::Selection;
pub use stage_kafka::{DeadLetters, StageKafka};
