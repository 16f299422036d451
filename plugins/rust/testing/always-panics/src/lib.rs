//! A broken release: panics (a Wasm trap) on every message. The hot-reload
//! tests swap it in and expect the host to roll back to the version before.

use sluice_plugin::{Handler, Message, Verdict};

struct AlwaysPanics;

impl Handler for AlwaysPanics {
    fn handle(message: &Message) -> Verdict {
        panic!("this release is broken (message at offset {})", message.offset);
    }
}

sluice_plugin::export_handler!(AlwaysPanics);
