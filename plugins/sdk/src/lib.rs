//! Write [sluice](https://github.com/sluice-rs/sluice) message handlers in Rust.
//!
//! A plugin is one type implementing [`Handler`] plus one
//! [`export_handler!`] line; build it with
//! `cargo build --release --target wasm32-wasip2` and the resulting `.wasm`
//! is a component the sluice host can load.
//!
//! ```ignore
//! use sluice_plugin::{Handler, Message, Output, Verdict};
//!
//! struct Uppercase;
//!
//! impl Handler for Uppercase {
//!     fn handle(message: &Message) -> Verdict {
//!         match message.value_str() {
//!             Some(Ok(text)) => Verdict::success([Output::replacing_value(message, text.to_uppercase())]),
//!             Some(Err(error)) => Verdict::dead_letter(format!("value is not valid UTF-8: {error}")),
//!             None => Verdict::success([Output::from_message(message)]),
//!         }
//!     }
//! }
//!
//! sluice_plugin::export_handler!(Uppercase);
//! ```

mod handler;
mod types;

pub mod config;
pub mod keyvalue;
pub mod log;

pub use handler::Handler;
pub use types::{Header, Message, Output, RetryInfo, Verdict};

// Lets the generated bindings and `export_handler!` name this crate the same
// way from inside and outside it.
extern crate self as sluice_plugin;

/// Bindings generated from the sluice WIT contract. Plugin authors use the
/// re-exports at the crate root; this module is public for the
/// `export_handler!` macro.
#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code, shaped by the WIT
pub mod bindings {
    wit_bindgen::generate!({
        world: "message-handler",
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "::sluice_plugin::bindings",
        runtime_path: "::sluice_plugin::__private::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;
}
