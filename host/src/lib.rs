//! sluice: a Kafka stream processor whose message handlers are WebAssembly
//! components.
//!
//! One process runs one pipeline stage. The library is organised by
//! concern, one module each; `plugin` is the Wasm side and knows nothing of
//! Kafka.

pub mod capability;
pub mod cli;
pub mod config;
pub mod dedup;
pub mod dlq;
pub mod kafka;
pub mod observe;
pub mod pipeline;
pub mod plugin;
pub mod project;
pub mod redis_connection;
