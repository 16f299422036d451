//! Upper-cases each message's value, keeping its key and headers.
//!
//! A value that is not UTF-8 cannot be upper-cased, and retrying will not
//! change that, so it goes straight to the dead-letter topic. Tombstones
//! pass through untouched.

use sluice_plugin::{Handler, Message, Output, Verdict};

struct Uppercase;

impl Handler for Uppercase {
    fn handle(message: &Message) -> Verdict {
        match message.value_str() {
            Some(Ok(text)) => Verdict::success([Output::replacing_value(message, text.to_uppercase())]),
            Some(Err(error)) => Verdict::dead_letter(format!("value is not valid UTF-8: {error}")),
            None => Verdict::success([Output::from_message(message)]),
        }
    }
}

sluice_plugin::export_handler!(Uppercase);
