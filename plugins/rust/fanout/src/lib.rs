//! Emits several copies of each message, alternating between two topics:
//! copy 0 to `topic-a`, copy 1 to `topic-b`, copy 2 to `topic-a`, ...
//!
//! Plugin config: `copies` (default 4), `topic-a` (default `fanout-a`),
//! `topic-b` (default `fanout-b`). Each copy carries a `fanout-copy` header
//! with its index, so consumers can tell the copies apart.

use sluice_plugin::{Handler, Message, Output, Verdict, config};

struct Fanout;

impl Handler for Fanout {
    fn handle(message: &Message) -> Verdict {
        let copies: u32 = match config::parse_or("copies", 4) {
            Ok(copies) => copies,
            Err(reason) => return Verdict::dead_letter(reason),
        };
        let topics = [
            config::get_or("topic-a", "fanout-a"),
            config::get_or("topic-b", "fanout-b"),
        ];
        Verdict::success((0..copies).map(|copy| {
            Output::from_message(message)
                .to_topic(topics[copy as usize % 2].clone())
                .with_header("fanout-copy", copy.to_string())
        }))
    }
}

sluice_plugin::export_handler!(Fanout);
