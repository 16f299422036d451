//! POSTs each message to a webhook: the shape of a mailer, a notifier or
//! any side effect that must happen once.
//!
//! Delivery to the plugin is at-least-once: after a crash, messages whose
//! offsets were not committed yet are handled again. So each request
//! carries an `Idempotency-Key` that is the same every time the same
//! message is handled, and a receiver that honours it acts once:
//! - the value of the header named by `idempotency-header`, when the
//!   message has it (an id its producer gave it, the same key the stage's
//!   `[dedup] key = "header"` uses);
//! - otherwise the message's coordinates, `<topic>/<partition>/<offset>`,
//!   which every redelivery of a record shares (the key `[dedup] key =
//!   "coordinates"` uses).
//!
//! The stage must grant the webhook's origin (`[plugin.capabilities.http]`).
//!
//! Plugin config:
//! - `webhook-url`: where each message's value is POSTed;
//! - `idempotency-header` (optional): the message header holding its id.
//!
//! Success only on 2xx, with the message passed through as the output.
//! 408, 429 and 5xx, or no answer: retry, after the server's `Retry-After`
//! (in seconds) when it sends one. Any other status: dead-letter, since
//! the same request gets the same answer.

use std::time::Duration;

use sluice_plugin::{Handler, Message, Output, Verdict, config};
use wstd::http::{Client, Request, StatusCode};

struct Webhook;

/// The key every delivery of `message` shares.
fn idempotency_key(message: &Message) -> Vec<u8> {
    if let Some(header) = config::get("idempotency-header")
        && let Some(id) = message.headers.iter().find(|candidate| candidate.name == header)
    {
        return id.value.clone();
    }
    format!("{}/{}/{}", message.topic, message.partition, message.offset).into_bytes()
}

impl Handler for Webhook {
    fn handle(message: &Message) -> Verdict {
        let Some(url) = config::get("webhook-url") else {
            return Verdict::dead_letter("webhook: set `webhook-url` under [plugin.config]");
        };
        let body = message.value.clone().unwrap_or_default();
        let key = idempotency_key(message);
        let answer = wstd::runtime::block_on(async move {
            let request = Request::post(url)
                .header("idempotency-key", key)
                .header("content-type", "application/octet-stream")
                .body(body)?;
            let response = Client::new().send(request).await?;
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Ok::<_, wstd::http::Error>((response.status(), retry_after))
        });
        match answer {
            Ok((status, _)) if status.is_success() => Verdict::success([Output::from_message(message)]),
            Ok((status, retry_after))
                if status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT =>
            {
                let reason = format!("webhook answered {status}");
                match retry_after {
                    Some(delay) => Verdict::retry_after(reason, delay),
                    None => Verdict::retry(reason),
                }
            }
            Ok((status, _)) => Verdict::dead_letter(format!("webhook answered {status}")),
            Err(error) => Verdict::retry(format!("webhook failed: {error:#}")),
        }
    }
}

sluice_plugin::export_handler!(Webhook);
