//! The JSON Lines format of `sluice test`: messages in, verdicts out.
//!
//! Input, one message per line (every field optional):
//!
//! ```json
//! {"topic": "orders", "partition": 0, "offset": 7, "timestamp_ms": 1700000000000,
//!  "key": "k1", "value": "hello", "headers": {"trace-id": "abc"}, "attempt": 1}
//! ```
//!
//! Bytes that are not text are given as base64 under `key_base64` /
//! `value_base64`; a missing or `null` value is a tombstone. Headers are an
//! object of text values, or a list of `{"name", "value" | "value_base64"}`
//! when order, duplicates or binary values matter. `topic` defaults to
//! `test`, `partition` to 0, `offset` to the line's position among the
//! messages, `attempt` to 1.
//!
//! Output uses the same conventions, so an output can be fed back as input.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::plugin::{Header, Message, Output, PluginFailure, Verdict};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputMessage {
    topic: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
    timestamp_ms: Option<i64>,
    key: Option<String>,
    key_base64: Option<String>,
    value: Option<String>,
    value_base64: Option<String>,
    #[serde(default)]
    headers: InputHeaders,
    attempt: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InputHeaders {
    Map(Map<String, Value>),
    List(Vec<InputHeader>),
}

impl Default for InputHeaders {
    fn default() -> Self {
        InputHeaders::List(Vec::new())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputHeader {
    name: String,
    value: Option<String>,
    value_base64: Option<String>,
}

/// Parse one input line; `position` (0-based) is the default offset.
pub(crate) fn parse_message(line: &str, position: i64) -> Result<Message, String> {
    let input: InputMessage = serde_json::from_str(line).map_err(|error| error.to_string())?;
    let headers = match input.headers {
        InputHeaders::Map(map) => map
            .into_iter()
            .map(|(name, value)| match value {
                Value::String(text) => Ok(Header::new(name, text)),
                other => Err(format!(
                    "header `{name}` must be a string in the object form, got {other}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        InputHeaders::List(list) => list
            .into_iter()
            .map(|header| {
                let field = format!("header `{}`", header.name);
                let value = bytes_field(&field, header.value, header.value_base64)?
                    .ok_or_else(|| format!("{field} needs `value` or `value_base64`"))?;
                Ok(Header::new(header.name, value))
            })
            .collect::<Result<Vec<_>, String>>()?,
    };
    Ok(Message {
        topic: input.topic.unwrap_or_else(|| "test".to_owned()),
        partition: input.partition.unwrap_or(0),
        offset: input.offset.unwrap_or(position),
        timestamp_ms: input.timestamp_ms,
        key: bytes_field("key", input.key, input.key_base64)?,
        value: bytes_field("value", input.value, input.value_base64)?,
        headers,
        attempt: input.attempt.unwrap_or(1),
    })
}

fn bytes_field(name: &str, text: Option<String>, base64: Option<String>) -> Result<Option<Vec<u8>>, String> {
    match (text, base64) {
        (Some(_), Some(_)) => Err(format!("give {name} as text or as base64, not both")),
        (Some(text), None) => Ok(Some(text.into_bytes())),
        (None, Some(encoded)) => BASE64
            .decode(encoded.trim())
            .map(Some)
            .map_err(|error| format!("{name}_base64 is not valid base64: {error}")),
        (None, None) => Ok(None),
    }
}

/// The result line for one message.
pub(crate) fn result_line(message: &Message, result: &Result<Verdict, PluginFailure>) -> Value {
    let mut line = Map::new();
    line.insert("topic".into(), message.topic.clone().into());
    line.insert("partition".into(), message.partition.into());
    line.insert("offset".into(), message.offset.into());
    match result {
        Ok(Verdict::Success(outputs)) => {
            line.insert("verdict".into(), "success".into());
            line.insert("outputs".into(), outputs.iter().map(output_object).collect());
        }
        Ok(Verdict::Retry(retry)) => {
            line.insert("verdict".into(), "retry".into());
            line.insert("reason".into(), retry.reason.clone().into());
            if let Some(delay) = retry.delay_ms {
                line.insert("delay_ms".into(), delay.into());
            }
        }
        Ok(Verdict::DeadLetter(reason)) => {
            line.insert("verdict".into(), "dead-letter".into());
            line.insert("reason".into(), reason.clone().into());
        }
        Err(failure) => {
            line.insert("verdict".into(), "failed".into());
            line.insert("reason".into(), failure.reason.clone().into());
        }
    }
    Value::Object(line)
}

fn output_object(output: &Output) -> Value {
    let mut object = Map::new();
    object.insert("topic".into(), output.topic.clone().into());
    insert_bytes(&mut object, "key", output.key.as_deref());
    insert_bytes(&mut object, "value", output.value.as_deref());
    let headers = output
        .headers
        .iter()
        .map(|header| {
            let mut entry = Map::new();
            entry.insert("name".into(), header.name.clone().into());
            insert_bytes(&mut entry, "value", Some(&header.value));
            Value::Object(entry)
        })
        .collect();
    object.insert("headers".into(), headers);
    Value::Object(object)
}

/// Text when the bytes are UTF-8, else base64 under `<name>_base64`;
/// `null` when absent. Shared by every JSON sluice prints with record bytes
/// in it (`sluice test`, `sluice dlq inspect --json`).
pub(crate) fn insert_bytes(object: &mut Map<String, Value>, name: &str, bytes: Option<&[u8]>) {
    match bytes.map(std::str::from_utf8) {
        None => object.insert(name.into(), Value::Null),
        Some(Ok(text)) => object.insert(name.into(), text.into()),
        Some(Err(_)) => object.insert(
            format!("{name}_base64"),
            BASE64.encode(bytes.unwrap_or_default()).into(),
        ),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_missing_fields() {
        let message = parse_message(r#"{"value": "hi"}"#, 3).unwrap();
        assert_eq!(message, Message::new("test", 0, 3, Some(b"hi".to_vec())));
    }

    #[test]
    fn base64_and_header_forms_decode_to_exact_bytes() {
        let line = r#"{"key_base64": "/wA=", "value_base64": "AAEC", "headers": [{"name": "b", "value_base64": "//8="}, {"name": "a", "value": "x"}, {"name": "b", "value": "y"}]}"#;
        let message = parse_message(line, 0).unwrap();
        assert_eq!(message.key, Some(vec![0xff, 0x00]));
        assert_eq!(message.value, Some(vec![0, 1, 2]));
        assert_eq!(
            message.headers,
            vec![
                Header::new("b", vec![0xff, 0xff]),
                Header::new("a", "x"),
                Header::new("b", "y")
            ]
        );
    }

    #[test]
    fn object_headers_keep_their_written_order() {
        let message = parse_message(r#"{"headers": {"z": "1", "a": "2"}}"#, 0).unwrap();
        assert_eq!(message.headers, vec![Header::new("z", "1"), Header::new("a", "2")]);
    }

    #[test]
    fn contradictory_or_malformed_fields_are_rejected_with_the_field_named() {
        let both = parse_message(r#"{"value": "a", "value_base64": "YQ=="}"#, 0).unwrap_err();
        assert!(both.contains("value as text or as base64"), "{both}");
        let bad = parse_message(r#"{"value_base64": "***"}"#, 0).unwrap_err();
        assert!(bad.contains("value_base64 is not valid base64"), "{bad}");
        let unknown = parse_message(r#"{"vaule": "typo"}"#, 0).unwrap_err();
        assert!(unknown.contains("unknown field `vaule`"), "{unknown}");
    }

    #[test]
    fn binary_output_is_base64_and_tombstones_are_null() {
        let message = Message::new("in", 1, 2, None);
        let output = Output {
            topic: Some("out".into()),
            key: Some(vec![0xff]),
            value: None,
            headers: vec![Header::new("h", vec![0xfe])],
        };
        let line = result_line(&message, &Ok(Verdict::Success(vec![output])));
        assert_eq!(
            line.to_string(),
            r#"{"topic":"in","partition":1,"offset":2,"verdict":"success","outputs":[{"topic":"out","key_base64":"/w==","value":null,"headers":[{"name":"h","value_base64":"/g=="}]}]}"#
        );
    }

    mod properties {
        use proptest::prelude::*;
        use serde_json::{Map, Value};

        use super::super::{output_object, parse_message};
        use crate::plugin::{Header, Output};

        /// Any JSON value, nested a few levels.
        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                any::<String>().prop_map(Value::from),
                "(topic|partition|offset|timestamp_ms|key|key_base64|value|value_base64|headers|attempt|name)"
                    .prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                    prop::collection::btree_map(
                        "(topic|partition|offset|timestamp_ms|key|key_base64|value|value_base64|headers|attempt|name|[a-z]{1,6})",
                        inner,
                        0..6
                    )
                    .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
                ]
            })
        }

        fn any_bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
            prop_oneof![
                Just(None),
                prop::collection::vec(any::<u8>(), 0..24).prop_map(Some),
                any::<String>().prop_map(|text| Some(text.into_bytes())),
            ]
        }

        fn any_output() -> impl Strategy<Value = Output> {
            (
                prop::option::of("[a-z.-]{1,12}"),
                any_bytes(),
                any_bytes(),
                prop::collection::vec(("[a-z.-]{1,8}", any_bytes()), 0..4),
            )
                .prop_map(|(topic, key, value, headers)| Output {
                    topic,
                    key,
                    value,
                    headers: headers
                        .into_iter()
                        .map(|(name, value)| Header::new(name, value.unwrap_or_default()))
                        .collect(),
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any text at all: a message or a reason, never a panic.
            #[test]
            fn any_text_parses_or_says_why(line in any::<String>(), position in any::<i64>()) {
                if let Err(reason) = parse_message(&line, position) {
                    prop_assert!(!reason.is_empty());
                }
            }

            /// Any JSON, shaped like a message or not: never a panic.
            #[test]
            fn any_json_parses_or_says_why(value in any_json(), position in any::<i64>()) {
                if let Err(reason) = parse_message(&value.to_string(), position) {
                    prop_assert!(!reason.is_empty());
                }
            }

            /// An output line fed back as input gives the same bytes, text
            /// or binary, so `sluice test` output can chain into another run.
            #[test]
            fn outputs_read_back_as_the_same_message(output in any_output(), position in 0_i64..1000) {
                let line = Value::Object(match output_object(&output) {
                    Value::Object(object) => object,
                    other => panic!("an output is an object: {other}"),
                })
                .to_string();
                let message = parse_message(&line, position).map_err(TestCaseError::fail)?;
                prop_assert_eq!(message.topic, output.topic.unwrap_or_else(|| "test".to_owned()));
                prop_assert_eq!(message.offset, position);
                prop_assert_eq!(message.key, output.key);
                prop_assert_eq!(message.value, output.value);
                prop_assert_eq!(message.headers, output.headers);
            }
        }
    }
}
