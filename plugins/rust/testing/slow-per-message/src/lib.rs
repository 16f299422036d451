//! Spends a fixed wall-clock time on every message (config `ms-per-message`,
//! default 20) and passes it through, like a plugin doing real work per
//! message. Its `handle-batch` is the SDK's default, one `handle` per
//! message, so a batch takes that time per message. Proves the host gives a
//! batch call the per-message deadline for each message it carries.
//!
//! The time is spent busy, reading the monotonic clock, not asleep: a busy
//! guest is what the host's epoch deadline can interrupt, and what a slow
//! transform really looks like.

use std::time::{Duration, Instant};

use sluice_plugin::{Handler, Message, Output, Verdict, config};

struct SlowPerMessage;

impl Handler for SlowPerMessage {
    fn handle(message: &Message) -> Verdict {
        let millis: u64 = match config::parse_or("ms-per-message", 20) {
            Ok(millis) => millis,
            Err(reason) => return Verdict::dead_letter(reason),
        };
        let started = Instant::now();
        let mut spins: u64 = 0;
        while started.elapsed() < Duration::from_millis(millis) {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        Verdict::success([Output::from_message(message)])
    }
}

sluice_plugin::export_handler!(SlowPerMessage);
