use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::expected_results;
use super::jsonl;
use crate::plugin::{Message, PluginRuntime, PluginSettings, PluginWorker};

#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// The plugin file (a WebAssembly component).
    plugin: PathBuf,

    /// JSON Lines file of messages, or `-` for stdin.
    #[arg(long, short, value_name = "FILE")]
    input: PathBuf,

    /// A plugin config value, as the stage file's `[plugin.config]` would
    /// give it. Repeat for more.
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = parse_config_pair)]
    config: Vec<(String, String)>,

    /// Call `handle-batch` with up to this many messages at a time instead
    /// of `handle` once per message.
    #[arg(long, value_name = "SIZE", value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,

    /// Per-call deadline in milliseconds (1 to 600000, as
    /// `plugin.limits.deadline_ms`; default the stage's, else 1000).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    deadline_ms: Option<u64>,

    /// Compare the results with the lines of this file (the format this
    /// command prints) instead of printing them; exit 1 with each differing
    /// field if any differ.
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,

    /// With --expect: write the results to that file instead of comparing.
    #[arg(long, requires = "expect")]
    update: bool,

    /// Memory cap per instance in MiB (1 to 4096, as
    /// `plugin.limits.memory_mib`; default the stage's, else 64).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=4096))]
    memory_mib: Option<u64>,

    /// Run the plugin as this stage file would: its `[plugin.config]`
    /// (`--config` adds to it), its limits, and its capability grants, so a
    /// handler that calls out reaches what the stage grants (its origins,
    /// its key-value buckets) and nothing else. Without it, every request
    /// and bucket is denied.
    #[arg(long, value_name = "FILE")]
    stage: Option<PathBuf>,
}

fn parse_config_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Feed every message through the plugin and print one result line each,
/// or, with `--expect`, compare them with the expected ones. Results are
/// streamed when printed, so `-` works interactively.
pub(crate) fn run(runtime: &PluginRuntime, args: TestArgs) -> anyhow::Result<ExitCode> {
    let mut settings = match &args.stage {
        Some(stage) => PluginSettings::of_stage(&crate::config::load(stage)?.plugin),
        None => PluginSettings::default(),
    };
    settings.config.extend(args.config.iter().cloned());
    if let Some(memory_mib) = args.memory_mib {
        settings.limits.memory_mib = memory_mib;
    }
    if let Some(deadline_ms) = args.deadline_ms {
        settings.limits.deadline_ms = deadline_ms;
    }
    let plugin = runtime.load_file(&args.plugin, settings)?;
    let input: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.input).with_context(|| format!("cannot open input {}", args.input.display()))?;
        Box::new(BufReader::new(file))
    };

    let mut worker = plugin.worker();
    let mut sink = match &args.expect {
        Some(_) => ResultSink::Collect(Vec::new()),
        None => ResultSink::Print(io::stdout().lock()),
    };
    let batch_size = args.batch.map_or(1, |size| size as usize);
    let mut pending: Vec<Message> = Vec::with_capacity(batch_size);
    let mut position = 0;
    for (index, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read input line {}", index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let message = match jsonl::parse_message(&line, position) {
            Ok(message) => message,
            Err(reason) => bail!("{}: line {}: {reason}", args.input.display(), index + 1),
        };
        position += 1;
        pending.push(message);
        if pending.len() == batch_size {
            write_results(&mut worker, &pending, args.batch.is_some(), &mut sink)?;
            pending.clear();
        }
    }
    write_results(&mut worker, &pending, args.batch.is_some(), &mut sink)?;
    match (sink, &args.expect) {
        (ResultSink::Collect(results), Some(path)) if args.update => update_expected(path, &results),
        (ResultSink::Collect(results), Some(path)) => check_expected(path, &results),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Where result lines go: out as they come, or kept for `--expect`.
enum ResultSink<'a> {
    Print(io::StdoutLock<'a>),
    Collect(Vec<serde_json::Value>),
}

fn check_expected(path: &Path, results: &[serde_json::Value]) -> anyhow::Result<ExitCode> {
    let expected = read_expected(path)?;
    let mismatches = expected_results::compare(&expected, results);
    let mut out = io::stdout().lock();
    if mismatches.is_empty() {
        writeln!(out, "ok: {} results as expected in {}", results.len(), path.display())?;
        return Ok(ExitCode::SUCCESS);
    }
    write!(out, "{}", expected_results::report(&mismatches))?;
    writeln!(
        out,
        "FAILED: {} of {} messages differ from {} (--update rewrites it with these results)",
        mismatches.len(),
        expected.len().max(results.len()),
        path.display()
    )?;
    Ok(ExitCode::FAILURE)
}

fn read_expected(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read expected results {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}: line {}: not a JSON result line", path.display(), index + 1))
        })
        .collect()
}

/// Write the results as the new expected file, replacing the old one only
/// once the new one is whole.
fn update_expected(path: &Path, results: &[serde_json::Value]) -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    for result in results {
        text.push_str(&result.to_string());
        text.push('\n');
    }
    let temporary = path.with_extension("jsonl.updating");
    std::fs::write(&temporary, text).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))?;
    println!("updated {}: {} results", path.display(), results.len());
    Ok(ExitCode::SUCCESS)
}

fn write_results(
    worker: &mut PluginWorker,
    messages: &[Message],
    batched: bool,
    sink: &mut ResultSink<'_>,
) -> anyhow::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let results: Vec<_> = if batched {
        match worker.handle_batch_blocking(messages) {
            Ok(verdicts) => verdicts.into_iter().map(Ok).collect(),
            Err(failure) => vec![Err(failure); messages.len()],
        }
    } else {
        messages.iter().map(|message| worker.handle_blocking(message)).collect()
    };
    for (message, result) in messages.iter().zip(&results) {
        let line = jsonl::result_line(message, result);
        match sink {
            ResultSink::Print(out) => writeln!(out, "{line}")?,
            ResultSink::Collect(lines) => lines.push(line),
        }
    }
    if let ResultSink::Print(out) = sink {
        out.flush()?;
    }
    Ok(())
}
