//! Looks one field of each JSON message up at an HTTP service and adds the
//! answer to the message: the shape of a geocoder, a customer lookup or a
//! model-serving caller.
//!
//! The stage must grant the service's origin (`[plugin.capabilities.http]`
//! in the stage file); without that grant sluice refuses to load this
//! plugin, since it imports `wasi:http/outgoing-handler`.
//!
//! Plugin config:
//! - `lookup-url`: the service. The field's value is appended as one
//!   percent-encoded path segment: `https://geo.example.com/v1/places` and
//!   `"Zürich"` ask `GET https://geo.example.com/v1/places/Z%C3%BCrich`.
//! - `field` (default `id`): the member looked up, a string or a number.
//! - `into` (default `lookup`): the member the answer, which must be JSON,
//!   is stored under. The other members pass through untouched, in order.
//!
//! The answer decides the verdict, which is the point of the example:
//! - 2xx: success, the message with the answer added;
//! - 429 or 5xx, or the service cannot be reached: retry, after the
//!   server's `Retry-After` (in seconds) when it sends one, else with the
//!   stage's backoff; after its last attempt the stage dead-letters;
//! - 404: dead-letter, naming the value that was not found;
//! - any other status, or an answer that is not JSON: dead-letter, since
//!   the same request gets the same answer;
//! - a request the stage's grant refuses: dead-letter, naming the refusal.
//!
//! The Python and JavaScript versions (`plugins/python/enrich-http`,
//! `plugins/js/enrich-http`) give the same bytes out and the same reasons.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};
use sluice_plugin::{Handler, Message, Output, Verdict, config, log};
use wstd::http::{Body, Client, ErrorCode, Request, StatusCode};

/// Everything but letters, digits and `-._~` is encoded: what Python's
/// `quote(value, safe="")` leaves alone, so the three languages ask for the
/// same path.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

struct EnrichHttp;

impl Handler for EnrichHttp {
    fn handle(message: &Message) -> Verdict {
        let Some(base) = config::get("lookup-url") else {
            return Verdict::dead_letter("enrich-http: set `lookup-url` under [plugin.config]");
        };
        let field = config::get_or("field", "id");
        let into = config::get_or("into", "lookup");
        let mut object = match json_object(message) {
            Ok(object) => object,
            Err(reason) => return Verdict::dead_letter(reason),
        };
        let looked_up = match object.get(&field) {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Number(number)) => number.to_string(),
            Some(other) => {
                return Verdict::dead_letter(format!(
                    "enrich-http: field `{field}` must be a string or a number to look up, got {other}"
                ));
            }
            None => return Verdict::dead_letter(format!("enrich-http: field `{field}` is missing")),
        };
        let subject = format!("{field} {}", object[&field]);
        let url = format!(
            "{}/{}",
            base.trim_end_matches('/'),
            utf8_percent_encode(&looked_up, SEGMENT)
        );
        match look_up(url) {
            Ok(answer) if answer.status.is_success() => match serde_json::from_slice::<Value>(&answer.body) {
                Ok(found) => {
                    object.insert(into, found);
                    Verdict::success([Output::replacing_value(message, Value::Object(object).to_string())])
                }
                Err(_) => Verdict::dead_letter(format!(
                    "lookup of {subject} answered {} with a body that is not JSON",
                    answer.status
                )),
            },
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => {
                Verdict::dead_letter(format!("lookup of {subject} found nothing ({})", answer.status))
            }
            Ok(answer) if answer.status.is_server_error() || answer.status == StatusCode::TOO_MANY_REQUESTS => {
                let reason = format!("lookup of {subject} answered {}", answer.status);
                match answer.retry_after {
                    Some(delay) => Verdict::retry_after(reason, delay),
                    None => Verdict::retry(reason),
                }
            }
            Ok(answer) => Verdict::dead_letter(format!("lookup of {subject} answered {}", answer.status)),
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

/// The message's value as a JSON object, or why it is dead-lettered (in
/// the words `json-enrich` uses).
fn json_object(message: &Message) -> Result<Map<String, Value>, String> {
    let Some(bytes) = message.value.as_deref() else {
        return Err("invalid JSON: the record is a tombstone (no value)".to_owned());
    };
    let text = std::str::from_utf8(bytes).map_err(|error| format!("invalid JSON: the value is not UTF-8: {error}"))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(format!("invalid JSON: expected an object, got {}", kind(&other))),
        Err(error) => {
            log::debug(format!("offset {}: {error}", message.offset));
            Err("invalid JSON: the value is not well-formed JSON".to_owned())
        }
    }
}

/// What the service answered.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

fn look_up(url: String) -> Result<Answer, wstd::http::Error> {
    wstd::runtime::block_on(async move {
        let request = Request::get(url).body(Body::empty())?;
        let mut response = Client::new().send(request).await?;
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.body_mut().contents().await?.to_vec();
        Ok(Answer {
            status: response.status(),
            retry_after,
            body,
        })
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

sluice_plugin::export_handler!(EnrichHttp);
