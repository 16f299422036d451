//! Leaks a fixed amount of memory on every call (config `leak-kib`, default
//! 1024) and passes the message through, like a guest runtime that never
//! frees a little of each call. Proves the host retires an instance that
//! creeps towards the memory cap before it gets there, so no call fails.

use sluice_plugin::{Handler, Message, Output, Verdict, config};

struct Leaky;

impl Handler for Leaky {
    fn handle(message: &Message) -> Verdict {
        let kib = match config::parse_or("leak-kib", 1024_usize) {
            Ok(kib) => kib,
            Err(reason) => return Verdict::dead_letter(reason),
        };
        // Touch every byte so the pages are really allocated, then forget them.
        std::mem::forget(std::hint::black_box(vec![1u8; kib * 1024]));
        Verdict::success([Output::from_message(message)])
    }
}

sluice_plugin::export_handler!(Leaky);
