//! Panics (a Wasm trap) when the value equals the marker (config `marker`,
//! default `TRAP`); passes every other message through. Proves the host
//! turns a trap into a failed attempt and recovers on a fresh instance.

use sluice_plugin::{Handler, Message, Output, Verdict, config};

struct TrapOnMarker;

impl Handler for TrapOnMarker {
    fn handle(message: &Message) -> Verdict {
        let marker = config::get_or("marker", "TRAP");
        if message.value.as_deref() == Some(marker.as_bytes()) {
            panic!("found the marker value {marker:?}");
        }
        Verdict::success([Output::from_message(message)])
    }
}

sluice_plugin::export_handler!(TrapOnMarker);
