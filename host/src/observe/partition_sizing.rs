//! How many input partitions a stage needs, from two samples of its
//! offsets taken some seconds apart.
//!
//! Input rate is how fast the high watermarks move; a partition's capacity
//! is how fast its committed offset moves, but only while it has a backlog
//! at both samples: a partition that keeps up is held back by its input,
//! not by what it can do, so it says nothing about capacity. Then
//!
//! ```text
//! partitions = ceil(input rate × headroom / per-partition rate)
//! ```
//!
//! never below the current count, since Kafka cannot take partitions away.
//! Pure arithmetic on plain numbers, so every case is unit-tested.

use serde::Serialize;

/// One input partition's offsets at one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampledOffsets {
    /// `None` while the group has committed nothing there.
    pub committed: Option<i64>,
    pub high_watermark: i64,
}

/// One input partition at the start and at the end of the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSample {
    pub start: SampledOffsets,
    pub end: SampledOffsets,
}

impl PartitionSample {
    /// Records committed during the sample, when there was a commit at both
    /// ends (a commit moved back by hand counts as none).
    fn processed(&self) -> Option<i64> {
        Some((self.end.committed? - self.start.committed?).max(0))
    }

    /// A backlog at both ends: work waited the whole time.
    fn backlogged(&self) -> bool {
        let lag = |offsets: SampledOffsets| offsets.committed.map(|committed| offsets.high_watermark - committed);
        matches!((lag(self.start), lag(self.end)), (Some(start), Some(end)) if start > 0 && end > 0)
    }
}

/// The measurement and what it concludes, with every number the
/// conclusion rests on, so it can be shown with the arithmetic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionSizing {
    pub sample_seconds: f64,
    pub headroom: f64,
    pub current_partitions: usize,
    /// Sum of the high watermarks at the start and at the end.
    pub high_watermarks_start: i64,
    pub high_watermarks_end: i64,
    /// Records written to the input during the sample.
    pub input_records: i64,
    /// Records committed during the sample, on partitions with a commit at
    /// both ends.
    pub processed_records: i64,
    /// `input_records / sample_seconds`; `None` when nothing was sampled.
    pub input_rate: Option<f64>,
    pub processing_rate: Option<f64>,
    /// Partitions with a backlog at both samples, and what they processed.
    pub backlogged_partitions: usize,
    pub backlogged_processed_records: i64,
    /// `backlogged_processed_records / backlogged_partitions / sample_seconds`.
    pub per_partition_rate: Option<f64>,
    pub outcome: SizingOutcome,
}

/// What the sample says about the partition count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SizingOutcome {
    /// `needed` = input rate × headroom / per-partition rate;
    /// `partitions` = ceil(needed), but at least the current count.
    Recommended { needed: f64, partitions: usize },
    /// No sample was taken (zero seconds).
    NotSampled,
    /// No input partition had a committed offset at both samples.
    NothingCommitted,
    /// No records arrived during the sample.
    NoInput,
    /// No partition had a backlog: the stage keeps up with its input.
    NoBacklog,
    /// Partitions had a backlog, yet none of it was committed: the stage
    /// is stopped, stalled or retrying.
    NoProgress,
}

/// Measure rates over `sample_seconds` and size the partitions.
pub fn size_partitions(samples: &[PartitionSample], sample_seconds: f64, headroom: f64) -> PartitionSizing {
    let high_watermarks_start: i64 = samples.iter().map(|sample| sample.start.high_watermark).sum();
    let high_watermarks_end: i64 = samples.iter().map(|sample| sample.end.high_watermark).sum();
    let input_records = high_watermarks_end - high_watermarks_start;
    let processed_records: i64 = samples.iter().filter_map(PartitionSample::processed).sum();
    let committed_at_both_ends = samples.iter().any(|sample| sample.processed().is_some());
    let backlogged: Vec<&PartitionSample> = samples.iter().filter(|sample| sample.backlogged()).collect();
    let backlogged_processed_records: i64 = backlogged.iter().filter_map(|sample| sample.processed()).sum();

    let sampled = sample_seconds > 0.0;
    let per_second = |records: i64| sampled.then(|| records as f64 / sample_seconds);
    let per_partition_rate = (!backlogged.is_empty())
        .then(|| per_second(backlogged_processed_records).map(|rate| rate / backlogged.len() as f64))
        .flatten();

    let outcome = if !sampled {
        SizingOutcome::NotSampled
    } else if !committed_at_both_ends {
        SizingOutcome::NothingCommitted
    } else if input_records <= 0 {
        SizingOutcome::NoInput
    } else if backlogged.is_empty() {
        SizingOutcome::NoBacklog
    } else if backlogged_processed_records <= 0 {
        SizingOutcome::NoProgress
    } else {
        // input rate / per-partition rate, with the seconds cancelled out.
        let needed = input_records as f64 * headroom * backlogged.len() as f64 / backlogged_processed_records as f64;
        SizingOutcome::Recommended {
            needed,
            partitions: (needed.ceil() as usize).max(samples.len()).max(1),
        }
    };
    PartitionSizing {
        sample_seconds,
        headroom,
        current_partitions: samples.len(),
        high_watermarks_start,
        high_watermarks_end,
        input_records,
        processed_records,
        input_rate: per_second(input_records),
        processing_rate: per_second(processed_records),
        backlogged_partitions: backlogged.len(),
        backlogged_processed_records,
        per_partition_rate,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition going from (committed, high) to (committed, high).
    fn partition(start: (Option<i64>, i64), end: (Option<i64>, i64)) -> PartitionSample {
        PartitionSample {
            start: SampledOffsets {
                committed: start.0,
                high_watermark: start.1,
            },
            end: SampledOffsets {
                committed: end.0,
                high_watermark: end.1,
            },
        }
    }

    #[test]
    fn backlogged_partitions_give_the_per_partition_rate() {
        // 10 s: 1200 records in, two partitions with a backlog process 200
        // each (20/s per partition); a third kept up.
        let samples = [
            partition((Some(0), 1000), (Some(200), 1500)),
            partition((Some(50), 1000), (Some(250), 1500)),
            partition((Some(100), 100), (Some(300), 300)),
        ];
        let sizing = size_partitions(&samples, 10.0, 1.5);
        assert_eq!(sizing.input_records, 1200);
        assert_eq!(sizing.input_rate, Some(120.0));
        assert_eq!(sizing.processed_records, 600);
        assert_eq!(sizing.processing_rate, Some(60.0));
        assert_eq!(sizing.backlogged_partitions, 2);
        assert_eq!(sizing.backlogged_processed_records, 400);
        assert_eq!(sizing.per_partition_rate, Some(20.0));
        // 120 × 1.5 / 20 = 9
        assert_eq!(
            sizing.outcome,
            SizingOutcome::Recommended {
                needed: 9.0,
                partitions: 9
            }
        );
        assert_eq!(sizing.current_partitions, 3);
        assert_eq!((sizing.high_watermarks_start, sizing.high_watermarks_end), (2100, 3300));
    }

    #[test]
    fn the_need_is_rounded_up() {
        // 45 in per second, 10 per partition per second, headroom 1: 4.5 -> 5.
        let samples = [partition((Some(0), 100), (Some(10), 145))];
        let sizing = size_partitions(&samples, 1.0, 1.0);
        assert_eq!(
            sizing.outcome,
            SizingOutcome::Recommended {
                needed: 4.5,
                partitions: 5
            }
        );
    }

    #[test]
    fn never_below_the_current_count() {
        // Four partitions, one backlogged at 100/s; input 50/s needs 1.
        let samples = [
            partition((Some(0), 500), (Some(100), 540)),
            partition((Some(0), 0), (Some(10), 10)),
            partition((Some(0), 0), (Some(0), 0)),
            partition((Some(0), 0), (Some(0), 0)),
        ];
        let sizing = size_partitions(&samples, 1.0, 1.0);
        assert_eq!(sizing.per_partition_rate, Some(100.0));
        assert_eq!(
            sizing.outcome,
            SizingOutcome::Recommended {
                needed: 0.5,
                partitions: 4
            }
        );
    }

    #[test]
    fn no_backlog_means_the_stage_keeps_up() {
        let samples = [
            partition((Some(100), 100), (Some(160), 160)),
            partition((Some(40), 41), (Some(90), 90)),
        ];
        let sizing = size_partitions(&samples, 2.0, 1.5);
        assert_eq!(sizing.outcome, SizingOutcome::NoBacklog);
        assert_eq!(sizing.input_rate, Some(54.5));
        assert_eq!(sizing.processing_rate, Some(55.0));
        assert_eq!(sizing.backlogged_partitions, 0);
        assert_eq!(sizing.per_partition_rate, None);
    }

    #[test]
    fn zero_input_cannot_be_sized() {
        let samples = [partition((Some(10), 50), (Some(30), 50))];
        let sizing = size_partitions(&samples, 10.0, 1.5);
        assert_eq!(sizing.outcome, SizingOutcome::NoInput);
        assert_eq!(sizing.input_rate, Some(0.0));
        // The backlog's drain rate is still shown.
        assert_eq!(sizing.per_partition_rate, Some(2.0));
    }

    #[test]
    fn a_backlog_without_progress_is_a_stalled_stage() {
        let samples = [
            partition((Some(10), 50), (Some(10), 80)),
            partition((Some(0), 0), (Some(0), 5)),
        ];
        let sizing = size_partitions(&samples, 5.0, 1.5);
        assert_eq!(sizing.outcome, SizingOutcome::NoProgress);
        assert_eq!(sizing.input_rate, Some(7.0));
        assert_eq!(sizing.processing_rate, Some(0.0));
        assert_eq!(sizing.backlogged_partitions, 1);
        assert_eq!(sizing.per_partition_rate, Some(0.0));
    }

    #[test]
    fn nothing_committed_cannot_be_sized() {
        let samples = [partition((None, 0), (None, 100)), partition((None, 20), (Some(5), 40))];
        let sizing = size_partitions(&samples, 10.0, 1.5);
        assert_eq!(sizing.outcome, SizingOutcome::NothingCommitted);
        assert_eq!(sizing.input_records, 120);
        assert_eq!(sizing.processed_records, 0);
    }

    #[test]
    fn partitions_without_commits_are_left_out_of_the_capacity() {
        // Partition 0 has never committed (stuck); partition 1 drains 30/s.
        let samples = [
            partition((None, 100), (None, 130)),
            partition((Some(0), 500), (Some(300), 530)),
        ];
        let sizing = size_partitions(&samples, 10.0, 2.0);
        assert_eq!(sizing.backlogged_partitions, 1);
        assert_eq!(sizing.per_partition_rate, Some(30.0));
        // 6/s × 2 / 30 = 0.4 -> at least the 2 there are.
        assert_eq!(
            sizing.outcome,
            SizingOutcome::Recommended {
                needed: 0.4,
                partitions: 2
            }
        );
    }

    #[test]
    fn a_zero_second_sample_is_not_a_measurement() {
        let samples = [partition((Some(0), 10), (Some(0), 10))];
        let sizing = size_partitions(&samples, 0.0, 1.5);
        assert_eq!(sizing.outcome, SizingOutcome::NotSampled);
        assert_eq!(sizing.input_rate, None);
        assert_eq!(sizing.processing_rate, None);
        assert_eq!(sizing.per_partition_rate, None);
    }

    #[test]
    fn a_commit_moved_back_counts_as_no_progress() {
        let samples = [partition((Some(50), 100), (Some(20), 150))];
        let sizing = size_partitions(&samples, 1.0, 1.5);
        assert_eq!(sizing.processed_records, 0);
        assert_eq!(sizing.outcome, SizingOutcome::NoProgress);
    }

    #[test]
    fn no_partitions_at_all() {
        let sizing = size_partitions(&[], 10.0, 1.5);
        assert_eq!(sizing.outcome, SizingOutcome::NothingCommitted);
        assert_eq!(sizing.current_partitions, 0);
    }
}
