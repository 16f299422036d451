//! `sluice dlq inspect` and `sluice dlq replay`: look at a stage's dead
//! letters, and put chosen ones back through the stage.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::dlq_listing;
use crate::config::{self, StageConfig};
use crate::dlq::{
    ChunkBounds, DeadLetterOffset, DeadLetterRecord, DeadLetters, DoneMarks, ReplayPlanner, Replayer, Selection,
    SkippedDeadLetter, StageKafka,
};
use crate::kafka::EndedBy;

#[derive(Debug, clap::Args)]
pub(crate) struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// List the stage's dead letters: why each failed, where it came from,
    /// its key, value and headers. Reads the dead-letter topic from the
    /// beginning to where it ended when the command started; joins no
    /// consumer group and commits nothing.
    Inspect(InspectArgs),
    /// Produce chosen dead letters back to their source topic (same
    /// partition, original key, value and headers, plus a
    /// `sluice.replayed-from` header), after clearing their dedup
    /// done-marks so the stage handles them again. Goes in chunks of at most
    /// 1000 records or 16 MiB: each chunk's marks are cleared, then its
    /// records produced and acknowledged, before the next is read.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    #[command(flatten)]
    choice: Choice,
    /// One JSON object per record (JSON Lines), nothing shortened.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ReplayArgs {
    #[command(flatten)]
    choice: Choice,
    /// Show what would be replayed; produce nothing, clear nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replay dead letters that the stage shrunk to fit the broker's size
    /// limit (`sluice.omitted`) with what they still hold, instead of
    /// skipping them: the copy lacks the value, headers or key left out.
    #[arg(long)]
    allow_incomplete: bool,
    /// Most records produced at once (memory bound; for tests).
    #[arg(long, hide = true, default_value_t = ChunkBounds::DEFAULT.records, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    chunk_records: usize,
    /// Most bytes of records produced at once (memory bound; for tests).
    #[arg(long, hide = true, default_value_t = ChunkBounds::DEFAULT.bytes, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    chunk_bytes: usize,
}

/// The stage and which of its dead letters a command is about.
#[derive(Debug, clap::Args)]
struct Choice {
    /// The stage file (TOML), as given to `sluice run`. `SLUICE_*`
    /// environment variables override its keys.
    stage: PathBuf,
    /// Only dead letters whose reason (`sluice.reason`) contains TEXT.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Only dead letters read from this topic (`sluice.source.topic`).
    #[arg(long, value_name = "TOPIC")]
    source_topic: Option<String>,
    /// Only dead letters read from this partition of their source topic.
    #[arg(long, value_name = "PARTITION")]
    source_partition: Option<i32>,
    /// Only dead letters written by this stage (`sluice.stage`), for a
    /// dead-letter topic shared by stages.
    #[arg(long, value_name = "STAGE")]
    from_stage: Option<String>,
    /// Exactly this record of the dead-letter topic, as `inspect` prints
    /// it. Repeat for more.
    #[arg(long = "offset", value_name = "PARTITION:OFFSET")]
    offsets: Vec<DeadLetterOffset>,
    /// Stop after this many matching records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// How long to wait for the brokers to answer, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// With nothing arriving for this long, take the dead-letter topic as
    /// read to its end (a last resort: the end is normally known from the
    /// partitions' high watermarks and end-of-partition events), in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
}

impl Choice {
    fn selection(&self) -> Selection {
        Selection {
            reason_contains: self.reason.clone(),
            source_topic: self.source_topic.clone(),
            source_partition: self.source_partition,
            stage: self.from_stage.clone(),
            offsets: self.offsets.clone(),
        }
    }

    /// Load the stage file and reach its brokers.
    fn open(&self) -> anyhow::Result<(StageConfig, StageKafka)> {
        let config = config::load(&self.stage)?;
        let kafka = StageKafka::connect(&config, Duration::from_secs(self.timeout))?;
        Ok((config, kafka))
    }

    /// Read every matching dead letter, handing each to `matched` as it
    /// arrives. Nothing is kept here, so what a command holds is what its
    /// `matched` keeps: `inspect` prints and drops each record.
    fn read(
        &self,
        config: &StageConfig,
        kafka: &StageKafka,
        mut matched: impl FnMut(DeadLetterRecord) -> anyhow::Result<()>,
    ) -> anyhow::Result<Reading> {
        let mut dead_letters = kafka.dead_letters(Duration::from_secs(self.idle_timeout))?;
        let selection = self.selection();
        let mut reading = Reading {
            topic: config.kafka.dead_letter_topic.clone(),
            ..Reading::default()
        };
        for record in dead_letters.by_ref() {
            let record = record?;
            reading.read += 1;
            if selection.matches(&record) {
                reading.matched += 1;
                matched(record)?;
                if self.limit.is_some_and(|limit| reading.matched >= limit) {
                    reading.stopped_at_limit = true;
                    break;
                }
            }
        }
        reading.note_idle_partitions(&dead_letters);
        Ok(reading)
    }
}

/// How reading the dead-letter topic went.
#[derive(Debug, Default)]
struct Reading {
    topic: String,
    read: u64,
    matched: u64,
    stopped_at_limit: bool,
    /// Partitions whose end was only the idle timeout.
    idle_partitions: Vec<i32>,
}

impl Reading {
    fn note_idle_partitions(&mut self, dead_letters: &DeadLetters) {
        self.idle_partitions = dead_letters
            .ended_by()
            .into_iter()
            .filter(|(_, ended_by)| *ended_by == EndedBy::IdleTimeout)
            .map(|(partition, _)| partition)
            .collect();
    }

    /// `matched 3 of 10 dead letters in orders-dlq`, with what qualifies it.
    fn summary(&self) -> String {
        let mut summary = format!(
            "matched {} of {} dead letters in {}",
            self.matched, self.read, self.topic
        );
        if self.stopped_at_limit {
            summary.push_str(" (stopped at --limit)");
        }
        if !self.idle_partitions.is_empty() {
            let partitions: Vec<String> = self.idle_partitions.iter().map(ToString::to_string).collect();
            summary.push_str(&format!(
                " (partition {} gave no end signal within --idle-timeout; records past that may be missing)",
                partitions.join(", ")
            ));
        }
        summary
    }
}

pub(crate) fn run(args: DlqArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DlqCommand::Inspect(args) => inspect(args),
        DlqCommand::Replay(args) => replay(args),
    }
}

/// Prints each record as it is read, flushed so that a pipe sees it at
/// once, and keeps none.
fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let (config, kafka) = args.choice.open()?;
    let mut stdout = std::io::stdout().lock();
    let reading = args.choice.read(&config, &kafka, |record| {
        if args.json {
            writeln!(stdout, "{}", dlq_listing::json_entry(&record))?;
        } else {
            writeln!(stdout, "{}", dlq_listing::text_entry(&record))?;
        }
        stdout.flush()?;
        Ok(())
    })?;
    eprintln!("{}", reading.summary());
    Ok(ExitCode::SUCCESS)
}

/// Streams: each matching dead letter is planned as it is read, printed,
/// and handed to a [`Replayer`], which holds at most one chunk; what stays
/// are counters.
fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let (config, kafka) = args.choice.open()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The Redis client needs a runtime to exist in, even before it connects.
    let _in_runtime = runtime.enter();
    let marks = DoneMarks::for_stage(&config)?;
    if !args.dry_run && matches!(marks, DoneMarks::InStageMemory) {
        tracing::warn!(
            "the stage keeps its dedup marks in its own memory (no dedup.redis_url), which replay cannot reach: a \
             running stage skips a replayed message whose key it still remembers; restart the stage to make it forget"
        );
    }
    let planner = ReplayPlanner::for_stage(&config).allowing_incomplete(args.allow_incomplete);
    let bounds = ChunkBounds {
        records: args.chunk_records,
        bytes: args.chunk_bytes,
    };
    let mut replayer = (!args.dry_run).then(|| Replayer::new(&kafka, &marks, bounds));
    let dlq_topic = &config.kafka.dead_letter_topic;
    let verb = if args.dry_run { "would replay" } else { "replay" };
    let mut tally = ReplayTally::default();
    let reading = args.choice.read(&config, &kafka, |record| {
        match planner.plan(record) {
            Ok(replay) => {
                let incomplete = replay
                    .incomplete
                    .as_ref()
                    .map(|incomplete| format!(" ({incomplete})"))
                    .unwrap_or_default();
                println!(
                    "{verb} {dlq_topic} {} -> {}/{}{incomplete}",
                    replay.at, replay.record.topic, replay.partition
                );
                tally.planned += 1;
                tally.incomplete += u64::from(replay.incomplete.is_some());
                tally.marks_to_clear += u64::from(replay.done_mark.is_some());
                if let Some(replayer) = &mut replayer
                    && runtime.block_on(replayer.add(replay))?
                {
                    eprintln!("so far {} replayed and acknowledged", replayer.so_far().replayed);
                }
            }
            Err(skip) => {
                println!("skip {dlq_topic} {}: {}", skip.at, skip.why);
                tally.skipped.add(&skip);
            }
        }
        Ok(())
    })?;

    let Some(replayer) = replayer else {
        eprintln!("{}", reading.summary());
        println!(
            "dry run: would replay {} of {} matched ({}){}",
            tally.planned,
            reading.matched,
            tally.counts(),
            marks_note(&marks, tally.marks_to_clear, true)
        );
        return Ok(ExitCode::SUCCESS);
    };
    let outcome = runtime.block_on(replayer.finish())?;
    eprintln!("{}", reading.summary());
    let marks_done = match marks {
        DoneMarks::Store(_) => format!("; cleared {} done-marks", outcome.marks_cleared),
        _ => marks_note(&marks, tally.marks_to_clear, false),
    };
    println!(
        "replayed {} of {} matched ({}){marks_done}",
        outcome.replayed,
        reading.matched,
        tally.counts(),
    );
    Ok(ExitCode::SUCCESS)
}

/// What a replay planned, counted as it goes.
#[derive(Debug, Default)]
struct ReplayTally {
    planned: u64,
    /// Planned replays of shrunk dead letters (with --allow-incomplete).
    incomplete: u64,
    marks_to_clear: u64,
    skipped: SkipTally,
}

impl ReplayTally {
    /// `0 skipped`, `2 skipped: <why>; <why>`, then `, 1 incomplete` when
    /// some replays are.
    fn counts(&self) -> String {
        let mut counts = self.skipped.to_string();
        if self.incomplete > 0 {
            counts.push_str(&format!(", {} incomplete", self.incomplete));
        }
        counts
    }
}

/// How many dead letters were skipped and the distinct kinds of reason,
/// up to [`SkipTally::KINDS`] of them: a reason may name what varies from
/// record to record (a malformed header's value), and the full reason of
/// each is on its own `skip` line anyway.
#[derive(Debug, Default)]
struct SkipTally {
    count: u64,
    kinds: BTreeSet<String>,
    more_kinds: bool,
}

impl SkipTally {
    const KINDS: usize = 8;

    fn add(&mut self, skip: &SkippedDeadLetter) {
        self.count += 1;
        let kind = skip.why.kind();
        if self.kinds.len() < Self::KINDS || self.kinds.contains(&kind) {
            self.kinds.insert(kind);
        } else {
            self.more_kinds = true;
        }
    }
}

impl fmt::Display for SkipTally {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return formatter.write_str("0 skipped");
        }
        let kinds: Vec<&str> = self.kinds.iter().map(String::as_str).collect();
        write!(formatter, "{} skipped: {}", self.count, kinds.join("; "))?;
        if self.more_kinds {
            formatter.write_str("; and other reasons, on the skip lines")?;
        }
        Ok(())
    }
}

fn marks_note(marks: &DoneMarks, marks_to_clear: u64, dry_run: bool) -> String {
    match marks {
        DoneMarks::NotDeduplicating => String::new(),
        DoneMarks::ByCoordinates => {
            "; no done-marks to clear (coordinates keys: a replayed copy has new ones)".to_owned()
        }
        DoneMarks::InStageMemory => "; done-marks NOT cleared: they live in the stage's memory".to_owned(),
        DoneMarks::Store(store) if dry_run => format!(
            "; would clear up to {marks_to_clear} done-marks in {}",
            store.describe()
        ),
        DoneMarks::Store(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::{DeadLetterOffset, OmittedPart, SkipReason};

    fn skip(why: SkipReason) -> SkippedDeadLetter {
        SkippedDeadLetter {
            at: DeadLetterOffset {
                partition: 0,
                offset: 0,
            },
            why,
        }
    }

    fn incomplete(size: u64) -> SkipReason {
        SkipReason::Incomplete(vec![OmittedPart {
            part: "value".into(),
            original_size: Some(size),
        }])
    }

    #[test]
    fn skipped_records_are_summed_up_by_kind_of_reason() {
        let mut tally = ReplayTally::default();
        assert_eq!(tally.counts(), "0 skipped");
        tally.skipped.add(&skip(incomplete(5)));
        tally.skipped.add(&skip(incomplete(6)));
        tally.skipped.add(&skip(SkipReason::NotAnInput {
            topic: "t".into(),
            stage: "s".into(),
        }));
        tally.incomplete = 1;
        assert_eq!(
            tally.counts(),
            "3 skipped: its source topic `t` is not an input topic of stage `s`; shrunk to fit the broker's size \
             limit (pass --allow-incomplete to replay what is left), 1 incomplete"
        );
    }

    #[test]
    fn the_kinds_of_reason_kept_are_bounded() {
        let mut tally = SkipTally::default();
        for n in 0..100 {
            tally.add(&skip(SkipReason::OtherStage {
                stage: format!("stage-{n:02}"),
                this_stage: "s".into(),
            }));
        }
        assert_eq!(tally.count, 100);
        assert_eq!(tally.kinds.len(), SkipTally::KINDS);
        assert!(
            tally
                .to_string()
                .starts_with("100 skipped: dead-lettered by stage `stage-00`"),
            "{tally}"
        );
        assert!(
            tally.to_string().ends_with("; and other reasons, on the skip lines"),
            "{tally}"
        );
    }
}
