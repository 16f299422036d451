//! Deduplication: remembering which messages are done, so a message seen
//! again (produced twice, or redelivered after a crash) is skipped, and
//! which are being handled right now, so two copies seen at once on two
//! partitions (or two hosts) are not both handled.
//!
//! The pipeline [claims](DedupStore::claim) a message's key before calling
//! the plugin: one atomic step per key, so only one worker wins it. The
//! winner renews its claim while it works and calls
//! [`DedupStore::mark_done`] only once the message's outputs or dead-letter
//! record are acknowledged, so a skipped message is always one that was
//! finished. A copy that finds the key claimed elsewhere waits for the
//! done-mark, or for the claim's lease to run out if its holder died.
//! Every call takes a whole batch of keys: one round trip each.
//!
//! This module knows neither Kafka nor Wasm: messages reach it through the
//! [`Identifiable`] view the pipeline provides.

mod claim;
mod key;
mod memory_store;
mod redis_store;
mod store;

pub use claim::{ClaimHolder, ClaimOutcome, RenewOutcome};
pub use key::{DedupKey, Identifiable, KeyMaker};
pub use memory_store::MemoryStore;
pub use redis_store::RedisStore;
pub use store::{DedupStore, StoreError, open_store};
