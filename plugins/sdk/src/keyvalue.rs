//! Key-value state in buckets the stage grants (`wasi:keyvalue`), for
//! handlers that count, remember or cache.
//!
//! A plugin that calls anything here imports `wasi:keyvalue`, and its stage
//! must grant `[plugin.capabilities.keyvalue]`; one that does not call it
//! imports nothing and needs no grant. Every failure (the stage's Redis is
//! down, a timeout, a value over the grant's size cap, a bucket not
//! granted) is an [`Error`] to act on, typically with a retry verdict.
//!
//! ```ignore
//! use sluice_plugin::keyvalue::{self, Bucket};
//!
//! let bucket: Bucket = keyvalue::open("default")?;
//! let seen = keyvalue::increment(&bucket, "seen", 1)?;
//! ```

pub use self::bindings::wasi::keyvalue::atomics::increment;
pub use self::bindings::wasi::keyvalue::batch::{delete_many, get_many, set_many};
pub use self::bindings::wasi::keyvalue::store::{Bucket, Error, KeyResponse, open};

/// The standard interfaces, as the contract's `message-handler-io` world
/// imports them. A component keeps only the imports its code calls.
#[allow(clippy::too_many_arguments)] // generated code, shaped by the WIT
mod bindings {
    wit_bindgen::generate!({
        world: "wasi:keyvalue/imports",
        path: "wit",
        runtime_path: "::sluice_plugin::__private::wit_bindgen::rt",
    });
}
