//! Uses every SDK helper, chosen by the message value, so the tests can hold
//! the Rust, Python (`plugins/python/testing/sdk-tour`) and JavaScript
//! (`plugins/js/testing/sdk-tour`) SDKs to the same output byte for byte.
//!
//! - `filter`, `retry`, `retry-later`, `dead-letter`: that verdict.
//! - `build`: a new output with a topic, a key and two headers (one binary).
//! - `header`: the text of the message's first `trace` header as the value.
//! - `key`: the message key as text as the value.
//! - `config`: the `greeting` setting and all settings as the value.
//! - anything else: the message passed through.

use std::time::Duration;

use sluice_plugin::{Handler, Message, Output, Verdict, config, log};

struct SdkTour;

impl Handler for SdkTour {
    fn handle(message: &Message) -> Verdict {
        let command = match message.value_str() {
            Some(Ok(text)) => text,
            _ => return Verdict::success([Output::from_message(message)]),
        };
        log::info(format!("sdk-tour: {command}"));
        match command {
            "filter" => Verdict::filter(),
            "retry" => Verdict::retry("asked to retry"),
            "retry-later" => Verdict::retry_after("asked to retry later", Duration::from_millis(250)),
            "dead-letter" => Verdict::dead_letter("asked to dead-letter"),
            "build" => Verdict::success([Output::new("built")
                .to_topic("elsewhere")
                .with_key("k-1")
                .with_header("h", "v")
                .with_header("h", [0xff_u8])]),
            "header" => Verdict::success([Output::new(message.header_str("trace").unwrap_or("no trace header"))]),
            "key" => Verdict::success([Output::new(match message.key_str() {
                Some(Ok(key)) => key,
                Some(Err(_)) => "key is not text",
                None => "no key",
            })]),
            "config" => {
                let settings: Vec<String> = config::entries()
                    .into_iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                let greeting = config::get_or("greeting", "no greeting");
                Verdict::success([Output::new(format!("{greeting}; {}", settings.join(",")))])
            }
            _ => Verdict::success([Output::from_message(message)]),
        }
    }
}

sluice_plugin::export_handler!(SdkTour);
