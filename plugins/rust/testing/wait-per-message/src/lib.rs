//! Waits a fixed wall-clock time on every message (config `ms-per-message`,
//! default 20) and passes it through, like a handler waiting on a service
//! that answers in that time. Unlike `slow-per-message` it sleeps (a WASI
//! timer), using no CPU, so many calls at once overlap: what the key-order
//! bench measures concurrency with.

use std::time::Duration;

use sluice_plugin::{Handler, Message, Output, Verdict, config};

struct WaitPerMessage;

impl Handler for WaitPerMessage {
    fn handle(message: &Message) -> Verdict {
        let millis: u64 = match config::parse_or("ms-per-message", 20) {
            Ok(millis) => millis,
            Err(reason) => return Verdict::dead_letter(reason),
        };
        std::thread::sleep(Duration::from_millis(millis));
        Verdict::success([Output::from_message(message)])
    }
}

sluice_plugin::export_handler!(WaitPerMessage);
