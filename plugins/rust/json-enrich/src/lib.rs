//! Adds fields to JSON objects and routes each one to the topic it names.
//!
//! Plugin config:
//! - `add.<field> = <value>`: set `<field>` to `<value>` on every object. The
//!   value is parsed as JSON when it parses (`add.version = 3` is a number),
//!   and is a string otherwise (`add.env = prod`).
//! - `route-field` (default `route`): the field whose string value names the
//!   output topic. Without it the record goes to the stage's output topic.
//!
//! A value that is not a JSON object is dead-lettered: no number of retries
//! will make it valid. The reasons are worded the same in the Python and
//! JavaScript versions of this plugin (`plugins/python/json-enrich`,
//! `plugins/js/json-enrich`), so a parse error is "not well-formed JSON"
//! rather than serde_json's own message, which goes to the debug log.
//!
//! Output is compact JSON with the members in input order and every number
//! exactly as written (serde_json's `preserve_order` and
//! `arbitrary_precision`; the latter writes an exponent as `e` with a sign),
//! so nothing is rounded through a float.

use serde_json::{Map, Value};
use sluice_plugin::{Handler, Message, Output, Verdict, config, log};

/// Why a value that does not parse is dead-lettered, in all three languages.
const NOT_WELL_FORMED: &str = "invalid JSON: the value is not well-formed JSON";

struct JsonEnrich;

impl Handler for JsonEnrich {
    fn handle(message: &Message) -> Verdict {
        let Some(bytes) = message.value.as_deref() else {
            return Verdict::dead_letter("invalid JSON: the record is a tombstone (no value)");
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(error) => return Verdict::dead_letter(format!("invalid JSON: the value is not UTF-8: {error}")),
        };
        let mut object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(other) => {
                return Verdict::dead_letter(format!("invalid JSON: expected an object, got {}", kind(&other)));
            }
            Err(error) => {
                log::debug(format!("offset {}: {error}", message.offset));
                return Verdict::dead_letter(NOT_WELL_FORMED);
            }
        };
        add_configured_fields(&mut object);
        let route_field = config::get_or("route-field", "route");
        let topic = match object.get(&route_field) {
            None | Some(Value::Null) => None,
            Some(Value::String(topic)) if !topic.is_empty() => Some(topic.clone()),
            Some(other) => {
                return Verdict::dead_letter(format!(
                    "invalid JSON: field `{route_field}` must be a non-empty string naming a topic, got {other}"
                ));
            }
        };
        let enriched = Value::Object(object).to_string();
        let output = Output::replacing_value(message, enriched);
        Verdict::success([match topic {
            Some(topic) => output.to_topic(topic),
            None => output,
        }])
    }
}

fn add_configured_fields(object: &mut Map<String, Value>) {
    for (key, text) in config::entries() {
        if let Some(field) = key.strip_prefix("add.") {
            let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            object.insert(field.to_owned(), value);
        }
    }
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

sluice_plugin::export_handler!(JsonEnrich);
