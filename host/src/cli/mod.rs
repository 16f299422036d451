//! The `sluice` command line: argument parsing and dispatch, nothing more.

mod build_plugin;
mod check;
mod dev_loop;
mod diagnose;
mod diagnose_text;
mod dlq;
mod dlq_listing;
mod expected_results;
mod jsonl;
mod new_project;
mod run_stage;
mod test_plugin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::observe::{self, LogFormat};
use crate::plugin::PluginRuntime;

/// Run Kafka pipeline stages whose message handlers are WebAssembly
/// components.
#[derive(Debug, Parser)]
#[command(name = "sluice", version)]
struct Cli {
    /// Log record format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// Directory for compiled plugins [default: ~/.cache/sluice/compiled].
    #[arg(long, env = "SLUICE_CACHE_DIR", global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Compile plugins on every load instead of caching them on disk.
    #[arg(long, global = true)]
    no_cache: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one pipeline stage from a stage file until SIGINT/SIGTERM.
    Run(run_stage::RunArgs),
    /// Check that a file is a plugin sluice can run, and show what it exports.
    Check(check::CheckArgs),
    /// Run a plugin over messages from a JSON Lines file, without Kafka:
    /// prints one JSON verdict per message, or compares them with expected
    /// ones (`--expect`).
    Test(test_plugin::TestArgs),
    /// Write a new handler project (Rust, Python or JavaScript) with the SDK,
    /// sample messages, expected results and a stage file.
    New(new_project::NewArgs),
    /// Build a handler project into a component, checked against the world.
    Build(build_plugin::BuildArgs),
    /// Build a handler project, run it as a stage on the embedded cluster
    /// over its sample messages, and rebuild and hot-reload it on every
    /// change, printing what the stage writes.
    Dev(dev_loop::DevArgs),
    /// Look at a stage's brokers, topics, consumer group, lag and dead
    /// letters without joining its group, and size its partitions.
    Diagnose(diagnose::DiagnoseArgs),
    /// Inspect a stage's dead letters, and replay chosen ones through it.
    Dlq(dlq::DlqArgs),
}

/// Entry point of the `sluice` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    observe::init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cache_dir = if cli.no_cache {
        None
    } else {
        cli.cache_dir.or_else(PluginRuntime::default_cache_dir)
    };
    match cli.command {
        Command::Run(args) => run_stage::run(cache_dir, args),
        Command::Check(args) => check::run(&PluginRuntime::new(cache_dir.as_deref())?, args),
        Command::Test(args) => test_plugin::run(&PluginRuntime::new(cache_dir.as_deref())?, args),
        Command::New(args) => new_project::run(args),
        Command::Build(args) => build_plugin::run(&PluginRuntime::new(cache_dir.as_deref())?, args),
        Command::Dev(args) => dev_loop::run(cache_dir, args),
        Command::Diagnose(args) => diagnose::run(args),
        Command::Dlq(args) => dlq::run(args),
    }
}
