use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::capability::{Capability, capabilities_imported};
use crate::plugin::{PluginRuntime, PluginSettings, WORLD};

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The plugin file (a WebAssembly component).
    plugin: PathBuf,
    /// A stage file: check the plugin against its grants, limits and
    /// config, as that stage would load it (without it, the plugin's
    /// capabilities are listed, not checked).
    #[arg(long, value_name = "STAGE_FILE")]
    stage: Option<PathBuf>,
}

/// Load the plugin exactly as a stage would (compile, check the world,
/// link, instantiate) and describe it.
pub(crate) fn run(runtime: &PluginRuntime, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let settings = match &args.stage {
        Some(stage) => PluginSettings::of_stage(&crate::config::load(stage)?.plugin),
        None => PluginSettings::default(),
    };
    let plugin = runtime.load_file(&args.plugin, settings)?;
    plugin
        .worker()
        .warm_up_blocking()
        .with_context(|| format!("{}: implements {WORLD} but cannot start", args.plugin.display()))?;
    println!("{}: ok, implements {WORLD}", args.plugin.display());
    println!("  name:    {}", plugin.name());
    println!("  version: {} (sha256 {})", plugin.version(), plugin.version().full());
    println!("  exports: {}", plugin.exports().join(", "));
    let capabilities = capabilities_imported(plugin.imports());
    match (capabilities.is_empty(), &args.stage) {
        (true, _) => println!("  capabilities: none (a pure transform)"),
        (false, stage) => {
            println!("  capabilities:");
            // One line per capability, with every import that asks for it.
            let mut grouped: Vec<(Capability, Vec<&str>)> = Vec::new();
            for (capability, import) in &capabilities {
                match grouped.iter_mut().find(|(seen, _)| seen == capability) {
                    Some((_, imports)) => imports.push(import),
                    None => grouped.push((*capability, vec![import])),
                }
            }
            for (capability, imports) in grouped {
                let status = match stage {
                    Some(stage) => format!("granted by {}", stage.display()),
                    None => format!("a stage must grant it: [{}]", capability.stage_key()),
                };
                println!("    {capability} ({}): {status}", imports.join(", "));
            }
        }
    }
    println!("  imports:");
    for import in plugin.imports() {
        println!("    {import}");
    }
    Ok(ExitCode::SUCCESS)
}
