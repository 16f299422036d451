//! `uppercase` as its next release might look: the same upper-casing, then
//! the suffix ` [v2]`, so a test can tell each output's version from its
//! value as well as from its `sluice.plugin.version` header. The hot-reload
//! tests swap it in for `uppercase` while messages flow.

use sluice_plugin::{Handler, Message, Output, Verdict};

struct UppercaseSuffix;

impl Handler for UppercaseSuffix {
    fn handle(message: &Message) -> Verdict {
        match message.value_str() {
            Some(Ok(text)) => Verdict::success([Output::replacing_value(
                message,
                format!("{} [v2]", text.to_uppercase()),
            )]),
            Some(Err(error)) => Verdict::dead_letter(format!("value is not valid UTF-8: {error}")),
            None => Verdict::success([Output::from_message(message)]),
        }
    }
}

sluice_plugin::export_handler!(UppercaseSuffix);
