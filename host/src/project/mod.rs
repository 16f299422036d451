//! Handler projects: the folder a plugin author works in, anywhere on disk.
//!
//! `sluice new` writes one from files carried inside the binary
//! ([`create_project`]): the handler, the SDK and the contract it speaks,
//! sample messages with their expected results and a stage file, so
//! nothing is fetched from sluice's own repository. `sluice build` turns a
//! project, or any folder holding a handler in a known language, into a
//! component checked against the world ([`build_project`]), with the
//! language's toolchain and the pinned tools kept in a [`ToolCache`].

mod build;
mod error;
mod inputs_hash;
mod language;
mod manifest;
mod scaffold;
mod templates;
mod tools;

pub use build::{BuildRequest, BuiltPlugin, build_project};
pub use error::ProjectError;
pub use inputs_hash::is_handler_source;
pub use language::Language;
pub use scaffold::{CreatedProject, NewProject, create_project};
pub use tools::ToolCache;
