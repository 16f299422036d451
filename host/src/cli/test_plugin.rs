use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::jsonl;
use crate::plugin::{Message, PluginLimits, PluginRuntime, PluginSettings, PluginWorker};

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
    /// `plugin.limits.deadline_ms`).
    #[arg(long, value_name = "MS", default_value_t = PluginLimits::default().deadline_ms,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    deadline_ms: u64,

    /// Memory cap per instance in MiB (1 to 4096, as
    /// `plugin.limits.memory_mib`).
    #[arg(long, value_name = "MIB", default_value_t = PluginLimits::default().memory_mib,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    memory_mib: u64,
}

fn parse_config_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Feed every message through the plugin and print one result line each.
/// Results are streamed, so `-` works interactively.
pub(crate) fn run(runtime: &PluginRuntime, args: TestArgs) -> anyhow::Result<ExitCode> {
    let settings = PluginSettings {
        limits: PluginLimits {
            memory_mib: args.memory_mib,
            deadline_ms: args.deadline_ms,
            ..PluginLimits::default()
        },
        config: args.config.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let plugin = runtime.load_file(&args.plugin, settings)?;
    let input: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.input).with_context(|| format!("cannot open input {}", args.input.display()))?;
        Box::new(BufReader::new(file))
    };

    let mut worker = plugin.worker();
    let mut out = io::stdout().lock();
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
            write_results(&mut worker, &pending, args.batch.is_some(), &mut out)?;
            pending.clear();
        }
    }
    write_results(&mut worker, &pending, args.batch.is_some(), &mut out)?;
    Ok(ExitCode::SUCCESS)
}

fn write_results(
    worker: &mut PluginWorker,
    messages: &[Message],
    batched: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let results: Vec<_> = if batched {
        match worker.handle_batch(messages) {
            Ok(verdicts) => verdicts.into_iter().map(Ok).collect(),
            Err(failure) => vec![Err(failure); messages.len()],
        }
    } else {
        messages.iter().map(|message| worker.handle(message)).collect()
    };
    for (message, result) in messages.iter().zip(&results) {
        writeln!(out, "{}", jsonl::result_line(message, result))?;
    }
    out.flush()?;
    Ok(())
}
