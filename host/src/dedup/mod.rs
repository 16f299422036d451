//! Deduplication: remembering which messages are done, so a message seen
//! again (produced twice, or redelivered after a crash) is skipped.
//!
//! The pipeline asks [`DedupStore::done`] before calling the plugin and
//! calls [`DedupStore::mark_done`] only once the message's outputs or
//! dead-letter record are acknowledged, so a skipped message is always one
//! that was finished. Both take a whole batch of keys: one round trip each.
//!
//! This module knows neither Kafka nor Wasm: messages reach it through the
//! [`Identifiable`] view the pipeline provides.

mod key;
mod memory_store;
mod redis_store;
mod store;

pub use key::{DedupKey, Identifiable, KeyMaker};
pub use memory_store::MemoryStore;
pub use redis_store::RedisStore;
pub use store::{DedupStore, StoreError, open_store};
