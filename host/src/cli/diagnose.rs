//! `sluice diagnose`: what an operator needs to know about a stage's
//! brokers, topics, group, lag and dead letters, read without disturbing
//! the running group, plus a partition count sized from sampled rates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::diagnose_text;
use crate::config::{self, StageConfig};
use crate::kafka::{
    self, BrokersReport, ClusterInspector, GroupReport, PartitionPosition, PartitionWatermarks, TopicReport,
};
use crate::observe::{PartitionSample, PartitionSizing, SampledOffsets, size_partitions};

#[derive(Debug, clap::Args)]
pub(crate) struct DiagnoseArgs {
    /// The stage file (TOML) whose brokers, credentials, group and topics
    /// to look at; `SLUICE_*` environment overrides apply as for `run`.
    stage: PathBuf,

    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,

    /// Seconds between the two offset samples that measure input and
    /// processing rates; 0 skips the measurement.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    sample_seconds: u64,

    /// Capacity to spare in the recommended partition count: 1.5 sizes for
    /// half again the measured input rate.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.5, value_parser = parse_headroom)]
    headroom: f64,

    /// Longest wait for any one answer from the brokers.
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_seconds: u64,
}

fn parse_headroom(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(factor) if factor.is_finite() && factor >= 1.0 => Ok(factor),
        _ => Err(format!(
            "expected a number of at least 1 (1.5 = 50% spare), got {text:?}"
        )),
    }
}

/// Everything `diagnose` found; the JSON output is exactly this.
#[derive(Debug, Serialize)]
pub(super) struct Diagnosis {
    pub stage: String,
    pub group_id: String,
    pub brokers: BrokersReport,
    pub topics: Vec<StageTopic>,
    pub group: GroupReport,
    /// Input partitions as of the last sample.
    pub partitions: Vec<PartitionPosition>,
    pub totals: LagTotals,
    pub dead_letter: DeadLetterDepth,
    pub partition_sizing: PartitionSizing,
}

/// A topic and what the stage uses it for.
#[derive(Debug, Serialize)]
pub(super) struct StageTopic {
    /// `input`, `output` or `dead_letter`.
    pub role: &'static str,
    #[serde(flatten)]
    pub topic: TopicReport,
}

/// Sums over the input partitions.
#[derive(Debug, Serialize)]
pub(super) struct LagTotals {
    pub partitions: usize,
    /// Partitions where the group has committed nothing.
    pub nothing_committed: usize,
    /// Sum of the committed offsets that exist.
    pub committed: i64,
    pub high_watermark: i64,
    pub lag: i64,
}

/// Records waiting in the dead-letter topic.
#[derive(Debug, Serialize)]
pub(super) struct DeadLetterDepth {
    pub topic: String,
    pub exists: bool,
    /// Sum of high minus low watermark over its partitions.
    pub records: i64,
    pub partitions: Vec<PartitionWatermarks>,
}

/// Gather the diagnosis and print it. Fails (non-zero exit) only when the
/// stage file is unusable or the brokers cannot be read; a lagging or
/// broken stage is a diagnosis, exit 0.
pub(crate) fn run(args: DiagnoseArgs) -> anyhow::Result<ExitCode> {
    let config = config::load(&args.stage)?;
    if config.kafka.is_embedded() {
        bail!(
            "{}: kafka.brokers is `embedded`, a cluster that lives inside `sluice run` only; \
             diagnose a stage whose brokers it can reach",
            args.stage.display()
        );
    }
    let mut properties = config.kafka.properties.clone();
    properties.extend(config.kafka.consumer_properties.clone());
    properties.extend(config.kafka.producer_properties.clone());
    for warning in kafka::check_client_files(&properties, config.startup.certificate_warning_days)? {
        tracing::warn!("{warning}");
    }
    let inspector = ClusterInspector::connect(
        &config.kafka,
        &config.kafka.brokers,
        Duration::from_secs(args.timeout_seconds),
    )
    .with_context(|| format!("cannot diagnose stage `{}`", config.stage.name))?;

    let diagnosis = diagnose(&config, &inspector, &args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diagnosis)?);
    } else {
        print!("{}", diagnose_text::render(&diagnosis));
    }
    Ok(ExitCode::SUCCESS)
}

fn diagnose(config: &StageConfig, inspector: &ClusterInspector, args: &DiagnoseArgs) -> anyhow::Result<Diagnosis> {
    let kafka_config = &config.kafka;
    let mut topics: Vec<StageTopic> = kafka_config
        .input_topics
        .iter()
        .map(|name| StageTopic {
            role: "input",
            topic: inspector.topic(name),
        })
        .collect();
    topics.push(StageTopic {
        role: "output",
        topic: inspector.topic(&kafka_config.output_topic),
    });
    let dead_letter_topic = inspector.topic(&kafka_config.dead_letter_topic);
    topics.push(StageTopic {
        role: "dead_letter",
        topic: dead_letter_topic.clone(),
    });

    let first_sample_at = Instant::now();
    let first = input_positions(config, inspector)?;
    let dead_letter_partitions = inspector.watermarks(&dead_letter_topic.name)?;
    let (last, sample_seconds) = if args.sample_seconds > 0 {
        let sample = Duration::from_secs(args.sample_seconds);
        tracing::info!(seconds = args.sample_seconds, "sampling offsets to measure rates");
        std::thread::sleep(sample.saturating_sub(first_sample_at.elapsed()));
        let second_sample_at = Instant::now();
        let last = input_positions(config, inspector)?;
        (last, (second_sample_at - first_sample_at).as_secs_f64())
    } else {
        (first.clone(), 0.0)
    };

    // Described last, so the members are as current as the offsets shown.
    let group = inspector.group();
    let samples: Vec<PartitionSample> = first
        .iter()
        .zip(&last)
        .map(|(start, end)| PartitionSample {
            start: sampled(start),
            end: sampled(end),
        })
        .collect();
    Ok(Diagnosis {
        stage: config.stage.name.clone(),
        group_id: kafka_config.group_id.clone(),
        brokers: inspector.brokers().clone(),
        topics,
        group,
        totals: totals(&last),
        partitions: last,
        dead_letter: DeadLetterDepth {
            topic: dead_letter_topic.name,
            exists: dead_letter_topic.exists,
            records: dead_letter_partitions.iter().map(PartitionWatermarks::records).sum(),
            partitions: dead_letter_partitions,
        },
        partition_sizing: size_partitions(&samples, sample_seconds, args.headroom),
    })
}

/// Every input partition's position, topic by topic.
fn input_positions(config: &StageConfig, inspector: &ClusterInspector) -> anyhow::Result<Vec<PartitionPosition>> {
    let mut positions = Vec::new();
    for topic in &config.kafka.input_topics {
        positions.extend(inspector.positions(topic)?);
    }
    Ok(positions)
}

fn sampled(position: &PartitionPosition) -> SampledOffsets {
    SampledOffsets {
        committed: position.committed,
        high_watermark: position.high_watermark,
    }
}

fn totals(positions: &[PartitionPosition]) -> LagTotals {
    LagTotals {
        partitions: positions.len(),
        nothing_committed: positions.iter().filter(|position| position.committed.is_none()).count(),
        committed: positions.iter().filter_map(|position| position.committed).sum(),
        high_watermark: positions.iter().map(|position| position.high_watermark).sum(),
        lag: positions.iter().map(|position| position.lag).sum(),
    }
}
