//! `sluice dlq inspect` and `sluice dlq replay`: look at a stage's dead
//! letters, and put chosen ones back through the stage.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::dlq_listing;
use crate::config::{self, StageConfig};
use crate::dlq::{
    self, DeadLetterOffset, DeadLetterRecord, DeadLetters, DoneMarks, PlannedReplay, ReplayPlanner, Selection,
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
    /// done-marks so the stage handles them again.
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

    /// Read every matching dead letter, handing each to `matched`.
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

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let (config, kafka) = args.choice.open()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The Redis client needs a runtime to exist in, even before it connects.
    let _in_runtime = runtime.enter();
    let marks = DoneMarks::for_stage(&config)?;
    let mut chosen = Vec::new();
    let reading = args.choice.read(&config, &kafka, |record| {
        chosen.push(record);
        Ok(())
    })?;
    let planner = ReplayPlanner::for_stage(&config);
    let mut replays: Vec<PlannedReplay> = Vec::new();
    let mut skipped: Vec<SkippedDeadLetter> = Vec::new();
    for record in &chosen {
        match planner.plan(record) {
            Ok(replay) => replays.push(replay),
            Err(skip) => skipped.push(skip),
        }
    }
    let verb = if args.dry_run { "would replay" } else { "replay" };
    for replay in &replays {
        println!(
            "{verb} {} {} -> {}/{}",
            config.kafka.dead_letter_topic, replay.at, replay.record.topic, replay.partition
        );
    }
    for skip in &skipped {
        println!("skip {} {}: {}", config.kafka.dead_letter_topic, skip.at, skip.why);
    }
    eprintln!("{}", reading.summary());

    let marks_to_clear = replays.iter().filter(|replay| replay.done_mark.is_some()).count();
    if args.dry_run {
        println!(
            "dry run: would replay {} of {} matched ({}){}",
            replays.len(),
            reading.matched,
            skipped_note(&skipped),
            marks_note(&marks, marks_to_clear, true)
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let DoneMarks::InStageMemory = marks {
        tracing::warn!(
            "the stage keeps its dedup marks in its own memory (no dedup.redis_url), which replay cannot reach: a \
             running stage skips a replayed message whose key it still remembers; restart the stage to make it forget"
        );
    }
    let outcome = if replays.is_empty() {
        dlq::ReplayOutcome {
            replayed: 0,
            marks_cleared: 0,
        }
    } else {
        let mut topics: Vec<&str> = replays.iter().map(|replay| replay.record.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        runtime.block_on(async {
            kafka.check_topics(&topics).await?;
            dlq::replay(&replays, &kafka.producer()?, &marks).await
        })?
    };
    let marks_done = match marks {
        DoneMarks::Store(_) => format!("; cleared {} done-marks", outcome.marks_cleared),
        _ => marks_note(&marks, marks_to_clear, false),
    };
    println!(
        "replayed {} of {} matched ({}){marks_done}",
        outcome.replayed,
        reading.matched,
        skipped_note(&skipped),
    );
    Ok(ExitCode::SUCCESS)
}

fn skipped_note(skipped: &[SkippedDeadLetter]) -> String {
    if skipped.is_empty() {
        return "0 skipped".to_owned();
    }
    let mut reasons: Vec<&str> = skipped.iter().map(|skip| skip.why.as_str()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    format!("{} skipped: {}", skipped.len(), reasons.join("; "))
}

fn marks_note(marks: &DoneMarks, marks_to_clear: usize, dry_run: bool) -> String {
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
