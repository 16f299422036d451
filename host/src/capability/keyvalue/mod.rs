//! Key-value state for plugins (`wasi:keyvalue` store, atomics and batch):
//! named buckets the stage grants, in its Redis or in memory, with values
//! bounded and every failure a value the plugin acts on.

mod backend;
mod grant;
mod host;
mod memory_entries;
mod redis_entries;

pub use backend::{BackendError, KeyPage, KeyValueBackend};
pub use grant::{BackendKind, KeyValueGrant, KeyValueGrantSettings, RedisAddress};
pub use host::{KeyValueAccess, KeyValueView, add_to_linker};
