//! Allocates without bound when the value equals the marker (config
//! `marker`, default `HOG`); passes every other message through. Proves the
//! host's memory cap stops a plugin before it takes the process down.

use sluice_plugin::{Handler, Message, Output, Verdict, config};

struct MemoryHog;

impl Handler for MemoryHog {
    fn handle(message: &Message) -> Verdict {
        let marker = config::get_or("marker", "HOG");
        if message.value.as_deref() == Some(marker.as_bytes()) {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page so the allocation is real, not lazily elided.
                hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
        }
        Verdict::success([Output::from_message(message)])
    }
}

sluice_plugin::export_handler!(MemoryHog);
