use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log records are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per record.
    Text,
    /// One JSON object per record, for log shippers.
    Json,
}

/// Install the process-wide log subscriber, writing to stderr (stdout is
/// reserved for command output such as `sluice test` results).
///
/// The filter comes from `SLUICE_LOG`, then `RUST_LOG`, in `tracing`'s
/// directive syntax (`info`, `sluice=debug,rdkafka=warn`); default `info`.
/// Calling it twice keeps the first subscriber.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SLUICE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
