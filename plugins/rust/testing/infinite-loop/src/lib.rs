//! Never returns when the value equals the marker (config `marker`, default
//! `LOOP`); passes every other message through. Proves the host's per-call
//! deadline stops a runaway plugin.

use sluice_plugin::{Handler, Message, Output, Verdict, config};

struct InfiniteLoop;

impl Handler for InfiniteLoop {
    fn handle(message: &Message) -> Verdict {
        let marker = config::get_or("marker", "LOOP");
        if message.value.as_deref() == Some(marker.as_bytes()) {
            let mut spins: u64 = 0;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        Verdict::success([Output::from_message(message)])
    }
}

sluice_plugin::export_handler!(InfiniteLoop);
