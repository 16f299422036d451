//! Looks each message up in an HTTP service and outputs the answer: the
//! shape of a geocoder, an enricher or a model-serving caller.
//!
//! The stage must grant the service's origin (`[plugin.capabilities.http]`
//! in the stage file); without that grant sluice refuses to load this
//! plugin, since it imports `wasi:http/outgoing-handler`.
//!
//! Plugin config:
//! - `lookup-url`: where each message's value is POSTed, e.g.
//!   `https://api.example.com/v1/lookup`.
//!
//! The answer decides the verdict, which is the point of the example:
//! - 2xx: success, the response body replaces the value;
//! - 429 or 5xx, or the service cannot be reached: retry, after the
//!   server's `Retry-After` (in seconds) when it sends one, else with the
//!   stage's backoff; after its last attempt the stage dead-letters;
//! - any other status: dead-letter, since the same request gets the same
//!   answer;
//! - a request the stage's grant refuses: dead-letter, naming the refusal.

use std::time::Duration;

use sluice_plugin::{Handler, Message, Output, Verdict, config};
use wstd::http::{Client, ErrorCode, Request, StatusCode};

struct HttpLookup;

impl Handler for HttpLookup {
    fn handle(message: &Message) -> Verdict {
        let Some(url) = config::get("lookup-url") else {
            return Verdict::dead_letter("http-lookup: set `lookup-url` under [plugin.config]");
        };
        let value = message.value.clone().unwrap_or_default();
        let answer = wstd::runtime::block_on(async move {
            let request = Request::post(url).body(value)?;
            let mut response = Client::new().send(request).await?;
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.body_mut().contents().await?.to_vec();
            Ok::<_, wstd::http::Error>((response.status(), retry_after, body))
        });
        match answer {
            Ok((status, _, body)) if status.is_success() => Verdict::success([Output::replacing_value(message, body)]),
            Ok((status, retry_after, _)) if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                let reason = format!("lookup answered {status}");
                match retry_after {
                    Some(delay) => Verdict::retry_after(reason, delay),
                    None => Verdict::retry(reason),
                }
            }
            Ok((status, _, _)) => Verdict::dead_letter(format!("lookup answered {status}")),
            Err(error) => match error.downcast_ref::<ErrorCode>() {
                Some(
                    code @ (ErrorCode::HttpRequestDenied
                    | ErrorCode::DestinationIpProhibited
                    | ErrorCode::HttpResponseBodySize(_)),
                ) => Verdict::dead_letter(format!("lookup refused by the stage: {code:?}")),
                _ => Verdict::retry(format!("lookup failed: {error:#}")),
            },
        }
    }
}

sluice_plugin::export_handler!(HttpLookup);
