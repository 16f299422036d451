use std::path::PathBuf;
use std::process::ExitCode;

use crate::project::{Language, NewProject, create_project};

#[derive(Debug, clap::Args)]
pub(crate) struct NewArgs {
    /// The folder to create (or an empty one to fill).
    dir: PathBuf,

    /// The language to write the handler in.
    #[arg(long, value_enum)]
    lang: Language,

    /// The handler's name: its package name and the component's file name
    /// [default: the folder's name].
    #[arg(long)]
    name: Option<String>,
}

/// Write a standalone handler project and say what to do next.
pub(crate) fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    let project = NewProject {
        dir: args.dir,
        language: args.lang,
        name: args.name,
    };
    let created = create_project(&project)?;
    let dir = project.dir.display();
    println!(
        "created {dir}: a {} handler ({}) with the sluice-plugin SDK, sample messages and a stage file ({} files)",
        project.language,
        project.language.handler_file(),
        created.files.len()
    );
    println!("next:");
    println!("  cd {dir}");
    println!("  sluice build");
    println!(
        "  sluice test dist/{}.wasm --input messages.jsonl --expect expected.jsonl",
        created.name
    );
    println!("  sluice dev");
    Ok(ExitCode::SUCCESS)
}
