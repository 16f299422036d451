//! Asks for a retry on its first N attempts at each message (config
//! `retries`, default 2), then passes the message through. With config
//! `delay-ms` set, each retry asks for that delay.

use std::time::Duration;

use sluice_plugin::{Handler, Message, Output, Verdict, config};

struct RetryNTimes;

impl Handler for RetryNTimes {
    fn handle(message: &Message) -> Verdict {
        let retries: u32 = match config::parse_or("retries", 2) {
            Ok(retries) => retries,
            Err(reason) => return Verdict::dead_letter(reason),
        };
        let delay_ms: Option<u64> = match config::get("delay-ms").map(|text| text.parse()) {
            None => None,
            Some(Ok(delay)) => Some(delay),
            Some(Err(error)) => return Verdict::dead_letter(format!("plugin config `delay-ms` is invalid: {error}")),
        };
        if message.attempt <= retries {
            let reason = format!("attempt {} of {} is set up to fail", message.attempt, retries + 1);
            return match delay_ms {
                Some(delay) => Verdict::retry_after(reason, Duration::from_millis(delay)),
                None => Verdict::retry(reason),
            };
        }
        Verdict::success([Output::from_message(message)])
    }
}

sluice_plugin::export_handler!(RetryNTimes);
