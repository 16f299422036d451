//! The text form of `sluice diagnose`: one section per question an
//! operator asks, with the partition-count arithmetic spelled out so it
//! can be checked by hand.

use std::fmt::Write;

use super::diagnose::{Diagnosis, StageTopic};
use crate::kafka::{GroupReport, MemberAssignment};
use crate::observe::{PartitionSizing, SizingOutcome};

/// The whole report.
pub(super) fn render(diagnosis: &Diagnosis) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Stage {}, group {}", diagnosis.stage, diagnosis.group_id);
    brokers(&mut out, diagnosis);
    topics(&mut out, &diagnosis.topics);
    group(&mut out, &diagnosis.group_id, &diagnosis.group);
    partitions(&mut out, diagnosis);
    let dead_letter = &diagnosis.dead_letter;
    let _ = writeln!(out, "\nDead letters ({})", dead_letter.topic);
    if dead_letter.exists {
        let _ = writeln!(out, "  {}", plural(dead_letter.records, "record"));
    } else {
        let _ = writeln!(out, "  the topic is missing");
    }
    sizing(&mut out, &diagnosis.partition_sizing);
    out
}

fn brokers(out: &mut String, diagnosis: &Diagnosis) {
    let brokers = &diagnosis.brokers;
    let mut rows = vec![
        vec!["bootstrap servers".to_owned(), brokers.bootstrap_servers.clone()],
        vec![
            "reachable".to_owned(),
            format!("metadata in {} ms", brokers.metadata_milliseconds),
        ],
    ];
    for broker in &brokers.brokers {
        rows.push(vec![
            format!("broker {}", broker.id),
            format!("{}:{}", broker.host, broker.port),
        ]);
    }
    let _ = writeln!(out, "\nBrokers");
    table(out, &rows, &[]);
}

fn topics(out: &mut String, topics: &[StageTopic]) {
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|stage_topic| {
            let topic = &stage_topic.topic;
            let shape = if !topic.exists {
                "missing".to_owned()
            } else {
                let replication = topic
                    .replication_factor
                    .map_or("replication unknown".to_owned(), |factor| {
                        format!("replication {factor}")
                    });
                let mut shape = format!(
                    "exists, {}, {replication}",
                    plural(topic.partitions as i64, "partition")
                );
                if topic.under_replicated_partitions > 0 {
                    let _ = write!(shape, ", {} under-replicated", topic.under_replicated_partitions);
                }
                shape
            };
            vec![stage_topic.role.replace('_', " "), topic.name.clone(), shape]
        })
        .collect();
    let _ = writeln!(out, "\nTopics");
    table(out, &rows, &[]);
}

fn group(out: &mut String, group_id: &str, report: &GroupReport) {
    let _ = writeln!(out, "\nConsumer group {group_id}");
    let description = match report {
        GroupReport::NotFound => {
            let _ = writeln!(
                out,
                "  not found: the brokers do not list this group (no member has joined it, nothing is committed)"
            );
            return;
        }
        GroupReport::Unavailable { reason } => {
            let _ = writeln!(out, "  unavailable: {reason}");
            return;
        }
        GroupReport::Described(description) => description,
    };
    let protocol = match description.protocol.as_str() {
        "" => description.protocol_type.clone(),
        assignor => format!("{}, assignor {assignor}", description.protocol_type),
    };
    table(
        out,
        &[
            vec!["state".to_owned(), description.state.clone()],
            vec!["protocol".to_owned(), protocol],
            vec!["members".to_owned(), description.members.len().to_string()],
        ],
        &[],
    );
    for member in &description.members {
        let details: Vec<String> = [("client", &member.client_id), ("host", &member.client_host)]
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| format!("{name} {value}"))
            .collect();
        let _ = match details.is_empty() {
            true => writeln!(out, "    {}", member.member_id),
            false => writeln!(out, "    {} ({})", member.member_id, details.join(", ")),
        };
        let owns = match &member.assignment {
            MemberAssignment::NotReported => {
                "no assignment reported (rebalancing, or the broker does not report assignments)".to_owned()
            }
            MemberAssignment::Decoded { topics } => {
                let partitions: Vec<String> = topics
                    .iter()
                    .flat_map(|topic| {
                        topic
                            .partitions
                            .iter()
                            .map(move |partition| format!("{}/{partition}", topic.topic))
                    })
                    .collect();
                match partitions.is_empty() {
                    true => "no partitions assigned".to_owned(),
                    false => format!("partitions {}", partitions.join(", ")),
                }
            }
            MemberAssignment::Undecodable { bytes, reason } => {
                format!("an assignment of {bytes} bytes that cannot be read: {reason}")
            }
        };
        let _ = writeln!(out, "      {owns}");
    }
}

fn partitions(out: &mut String, diagnosis: &Diagnosis) {
    let _ = writeln!(out, "\nInput partitions");
    if diagnosis.partitions.is_empty() {
        let _ = writeln!(out, "  none: no input topic exists");
        return;
    }
    let mut rows = vec![
        ["partition", "committed", "log start", "high watermark", "lag", ""]
            .map(str::to_owned)
            .to_vec(),
    ];
    for position in &diagnosis.partitions {
        rows.push(vec![
            format!("{}/{}", position.topic, position.partition),
            position.committed.map_or("-".to_owned(), |offset| offset.to_string()),
            position.log_start.to_string(),
            position.high_watermark.to_string(),
            position.lag.to_string(),
            match position.committed {
                None => "nothing committed".to_owned(),
                Some(_) => String::new(),
            },
        ]);
    }
    let totals = &diagnosis.totals;
    rows.push(vec![
        "total".to_owned(),
        totals.committed.to_string(),
        String::new(),
        totals.high_watermark.to_string(),
        totals.lag.to_string(),
        match totals.nothing_committed {
            0 => String::new(),
            count => format!("{count} of {} with nothing committed", totals.partitions),
        },
    ]);
    table(out, &rows, &[1, 2, 3, 4]);
}

fn sizing(out: &mut String, sizing: &PartitionSizing) {
    let _ = writeln!(out, "\nPartition count");
    let (Some(input_rate), Some(processing_rate)) = (sizing.input_rate, sizing.processing_rate) else {
        let _ = writeln!(out, "  not measured (--sample-seconds 0)");
        return;
    };
    let seconds = sizing.sample_seconds;
    let mut rows = vec![
        vec![
            "sampled".to_owned(),
            format!("{seconds:.1} s apart, headroom {}", sizing.headroom),
        ],
        vec![
            "input".to_owned(),
            format!(
                "{input_rate:.1} records/s ({} records in {seconds:.1} s)",
                sizing.input_records
            ),
        ],
        vec![
            "processed".to_owned(),
            format!(
                "{processing_rate:.1} records/s ({} records committed in {seconds:.1} s)",
                sizing.processed_records
            ),
        ],
        vec![
            "backlogged".to_owned(),
            format!(
                "{} of {} partitions had a backlog at both samples",
                sizing.backlogged_partitions, sizing.current_partitions
            ),
        ],
    ];
    if let Some(rate) = sizing.per_partition_rate {
        rows.push(vec![
            "per partition".to_owned(),
            format!(
                "{rate:.1} records/s ({} records / {} partitions / {seconds:.1} s)",
                sizing.backlogged_processed_records, sizing.backlogged_partitions
            ),
        ]);
    }
    let current = sizing.current_partitions;
    let conclusion = match sizing.outcome {
        SizingOutcome::Recommended { needed, partitions } => {
            let rate = sizing.per_partition_rate.unwrap_or_default();
            rows.push(vec![
                "needed".to_owned(),
                format!(
                    "ceil({input_rate:.1} × {} / {rate:.1}) = ceil({needed:.2}) = {}",
                    sizing.headroom,
                    needed.ceil()
                ),
            ]);
            match partitions > current {
                true => format!("{partitions} partitions (now {current})"),
                false => format!("{current} partitions, as now: enough, and Kafka cannot remove partitions"),
            }
        }
        SizingOutcome::NotSampled => "not measured (--sample-seconds 0)".to_owned(),
        SizingOutcome::NothingCommitted => "cannot be measured: no input partition had a committed offset at \
                                            both samples, so there is no processing rate"
            .to_owned(),
        SizingOutcome::NoInput => {
            "cannot be measured: no records arrived on the input during the sample; sample again under load".to_owned()
        }
        SizingOutcome::NoBacklog => format!(
            "cannot be measured: no partition had a backlog, so the stage keeps up with its input and its \
             capacity is not what limits it; the current {current} partitions are enough"
        ),
        SizingOutcome::NoProgress => "cannot be measured: partitions had a backlog but nothing was committed \
                                      on them during the sample; the stage is stopped, stalled or retrying"
            .to_owned(),
    };
    rows.push(vec!["recommended".to_owned(), conclusion]);
    table(out, &rows, &[]);
}

/// Rows as aligned columns indented by two spaces; columns listed in
/// `right_aligned` are aligned right (numbers). Trailing blanks are cut.
fn table(out: &mut String, rows: &[Vec<String>], right_aligned: &[usize]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            let width = widths[column];
            line.push_str("  ");
            if right_aligned.contains(&column) {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// `1 partition`, `2 partitions`.
fn plural(count: i64, noun: &str) -> String {
    match count {
        1 => format!("1 {noun}"),
        _ => format!("{count} {noun}s"),
    }
}
