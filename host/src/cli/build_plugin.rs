use std::path::PathBuf;
use std::process::ExitCode;

use crate::plugin::PluginRuntime;
use crate::project::{BuildRequest, Language, ToolCache, build_project};

#[derive(Debug, clap::Args)]
pub(crate) struct BuildArgs {
    /// The project folder [default: the current one].
    #[arg(default_value = ".")]
    dir: PathBuf,

    /// The handler's language, when the folder holds markers of several.
    #[arg(long, value_enum)]
    lang: Option<Language>,

    /// Where to write the component [default: DIR/dist/<name>.wasm].
    #[arg(long, short)]
    output: Option<PathBuf>,

    #[command(flatten)]
    tools: ToolsArgs,
}

/// Where the pinned build tools are kept.
#[derive(Debug, clap::Args)]
pub(crate) struct ToolsArgs {
    /// Folder for the build tools sluice installs (componentize-py, jco)
    /// [default: ~/.cache/sluice/tools].
    #[arg(long, env = "SLUICE_TOOLS_DIR", value_name = "DIR")]
    tools_dir: Option<PathBuf>,
}

impl ToolsArgs {
    pub(crate) fn cache(&self) -> anyhow::Result<ToolCache> {
        let dir = self
            .tools_dir
            .clone()
            .or_else(ToolCache::default_dir)
            .ok_or_else(|| anyhow::anyhow!("no home folder for the tool cache; set SLUICE_TOOLS_DIR"))?;
        Ok(ToolCache::new(dir))
    }
}

/// Build the project and print the component's path, size and hash.
pub(crate) fn run(runtime: &PluginRuntime, args: BuildArgs) -> anyhow::Result<ExitCode> {
    let tools = args.tools.cache()?;
    let built = build_project(BuildRequest {
        dir: args.dir,
        language: args.lang,
        output: args.output,
        tools: &tools,
        runtime,
    })?;
    println!("{}", describe(&built));
    Ok(ExitCode::SUCCESS)
}

/// One line: what was built (or found unchanged), how big, which version.
pub(crate) fn describe(built: &crate::project::BuiltPlugin) -> String {
    let what = match built.rebuilt {
        true => "built",
        false => "unchanged",
    };
    format!(
        "{what} {} ({}, {:.1} MiB, sha256 {}) in {:.1} s",
        built.path.display(),
        built.language,
        built.size as f64 / (1024.0 * 1024.0),
        built.sha256,
        built.elapsed.as_secs_f64()
    )
}
