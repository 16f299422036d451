use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::plugin::{PluginRuntime, PluginSettings, WORLD};

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The plugin file (a WebAssembly component).
    plugin: PathBuf,
}

/// Load the plugin exactly as a stage would (compile, check the world,
/// link, instantiate) and describe it.
pub(crate) fn run(runtime: &PluginRuntime, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let plugin = runtime.load_file(&args.plugin, PluginSettings::default())?;
    plugin
        .worker()
        .warm_up()
        .with_context(|| format!("{}: implements {WORLD} but cannot start", args.plugin.display()))?;
    println!("{}: ok, implements {WORLD}", args.plugin.display());
    println!("  name:    {}", plugin.name());
    println!("  version: {} (sha256 {})", plugin.version(), plugin.version().full());
    println!("  exports: {}", plugin.exports().join(", "));
    println!("  imports:");
    for import in plugin.imports() {
        println!("    {import}");
    }
    Ok(ExitCode::SUCCESS)
}
