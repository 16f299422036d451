//! The headers sluice sets on the records it produces: which plugin version
//! made them and the trace they belong to.

use super::dead_letter::DeadLetterHeaders;
use super::next_step::Omission;
use crate::kafka::OutgoingRecord;
use crate::observe::{TRACEPARENT_HEADER, TraceParent};
use crate::plugin::{Header, Message};

/// Header naming the plugin version that produced an output or
/// dead-letter record.
pub const PLUGIN_VERSION_HEADER: &str = "sluice.plugin.version";

/// The trace context of a message's records: a child of the message's own
/// `traceparent` (this stage's hop), or a new trace when it had none or a
/// malformed one, so every record sluice writes can be followed onwards.
pub(crate) fn trace_for(message: &Message) -> TraceParent {
    message
        .headers
        .iter()
        .rev()
        .find(|header| header.name == TRACEPARENT_HEADER)
        .and_then(|header| TraceParent::parse(&header.value))
        .map_or_else(TraceParent::new_root, |parent| parent.child())
}

/// An output's headers: the plugin's own (which often copy the input's),
/// with `sluice.plugin.version` and `traceparent` set by sluice.
pub(crate) fn output_headers(
    plugin_headers: Vec<Header>,
    version: &[u8],
    trace: &TraceParent,
) -> Vec<(String, Vec<u8>)> {
    let mut headers: Vec<(String, Vec<u8>)> = plugin_headers
        .into_iter()
        .filter(|header| !is_set_by_sluice(&header.name))
        .map(|header| (header.name, header.value))
        .collect();
    headers.push((PLUGIN_VERSION_HEADER.to_owned(), version.to_vec()));
    headers.push((TRACEPARENT_HEADER.to_owned(), trace.to_header_value()));
    headers
}

/// A dead-letter record's headers: the original ones (but its trace
/// context, which moves on to this hop), then the `sluice.*` headers saying
/// why.
pub(crate) fn dead_letter_headers(
    original: &[Header],
    why: &DeadLetterHeaders,
    trace: &TraceParent,
) -> Vec<(String, Vec<u8>)> {
    let mut headers: Vec<(String, Vec<u8>)> = original
        .iter()
        .filter(|header| header.name != TRACEPARENT_HEADER)
        .map(|header| (header.name.clone(), header.value.clone()))
        .collect();
    headers.extend(why.to_headers());
    headers.push((TRACEPARENT_HEADER.to_owned(), trace.to_header_value()));
    headers
}

/// A message's dead-letter record on `topic`: its key, value and original
/// headers (less what `omission` leaves out to fit the broker's limit,
/// with `sluice.omitted` and the original sizes saying so), then the
/// `sluice.*` headers saying why.
pub(crate) fn dead_letter_record(
    topic: &str,
    message: &Message,
    why: &DeadLetterHeaders,
    trace: &TraceParent,
    omission: Omission,
) -> OutgoingRecord {
    let kept_headers: &[Header] = if omission.omits_headers() {
        &[]
    } else {
        &message.headers
    };
    let mut headers = dead_letter_headers(kept_headers, why, trace);
    let mut omitted = Vec::new();
    let mut size = |part: &'static str, header: &str, bytes: usize| {
        omitted.push(part);
        headers.push((header.to_owned(), bytes.to_string().into_bytes()));
    };
    if omission.omits_value() {
        let bytes = message.value.as_ref().map_or(0, Vec::len);
        size("value", DeadLetterHeaders::ORIGINAL_VALUE_SIZE, bytes);
    }
    if omission.omits_headers() {
        let bytes = message
            .headers
            .iter()
            .map(|header| header.name.len() + header.value.len())
            .sum();
        size("headers", DeadLetterHeaders::ORIGINAL_HEADERS_SIZE, bytes);
    }
    if omission.omits_key() {
        let bytes = message.key.as_ref().map_or(0, Vec::len);
        size("key", DeadLetterHeaders::ORIGINAL_KEY_SIZE, bytes);
    }
    if !omitted.is_empty() {
        headers.push((DeadLetterHeaders::OMITTED.to_owned(), omitted.join(",").into_bytes()));
    }
    OutgoingRecord {
        topic: topic.to_owned(),
        key: if omission.omits_key() {
            None
        } else {
            message.key.clone()
        },
        value: if omission.omits_value() {
            None
        } else {
            message.value.clone()
        },
        headers,
    }
}

fn is_set_by_sluice(name: &str) -> bool {
    name == PLUGIN_VERSION_HEADER || name == TRACEPARENT_HEADER
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::{PLUGIN_VERSION_HEADER, dead_letter_record, output_headers, trace_for};
    use crate::observe::TraceParent;
    use crate::pipeline::DeadLetterHeaders;
    use crate::pipeline::next_step::Omission;
    use crate::plugin::{Header, Message};

    fn message_with(headers: Vec<Header>) -> Message {
        Message {
            topic: "in".to_owned(),
            partition: 0,
            offset: 7,
            timestamp_ms: None,
            key: None,
            value: None,
            headers,
            attempt: 1,
        }
    }

    fn header(name: &str, value: &str) -> Header {
        Header {
            name: name.to_owned(),
            value: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn outputs_continue_the_input_trace_with_a_new_span() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let message = message_with(vec![header("traceparent", parent)]);
        let trace = trace_for(&message);
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(trace.span_id(), "00f067aa0ba902b7");

        // The plugin copied the input's headers, version and trace included.
        let headers = output_headers(
            vec![
                header("traceparent", parent),
                header(PLUGIN_VERSION_HEADER, "forged"),
                header("x", "y"),
            ],
            b"v1",
            &trace,
        );
        let names: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["x", PLUGIN_VERSION_HEADER, "traceparent"]);
        assert_eq!(headers[1].1, b"v1");
        assert_eq!(headers[2].1, trace.to_string().into_bytes());
    }

    #[test]
    fn a_message_without_a_usable_trace_starts_one() {
        for headers in [vec![], vec![header("traceparent", "garbage")]] {
            let trace = trace_for(&message_with(headers));
            assert_eq!(TraceParent::parse(trace.to_string().as_bytes()), Some(trace));
        }
    }

    fn header_value<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .rev()
            .find(|(header, _)| header == name)
            .map(|(_, value)| std::str::from_utf8(value).unwrap())
    }

    #[test]
    fn a_shrunk_dead_letter_says_what_it_left_out_and_how_big_it_was() {
        let mut message = message_with(vec![header("id", "m-1"), header("traceparent", "x")]);
        message.key = Some(b"key".to_vec());
        message.value = Some(vec![0xff; 999_601]);
        let why = DeadLetterHeaders {
            reason: "not UTF-8".into(),
            source_topic: "in".into(),
            source_partition: 0,
            source_offset: 7,
            source_timestamp_ms: None,
            attempts: 1,
            stage: "s".into(),
            plugin_name: "p".into(),
            plugin_version: "v".into(),
            failed_at: UNIX_EPOCH,
        };
        let trace = TraceParent::new_root();

        let whole = dead_letter_record("dlq", &message, &why, &trace, Omission::Nothing);
        assert_eq!(whole.value, message.value);
        assert_eq!(header_value(&whole.headers, "id"), Some("m-1"));
        assert_eq!(header_value(&whole.headers, DeadLetterHeaders::OMITTED), None);

        let no_value = dead_letter_record("dlq", &message, &why, &trace, Omission::Value);
        assert_eq!(no_value.value, None);
        assert_eq!(no_value.key.as_deref(), Some(&b"key"[..]));
        assert_eq!(header_value(&no_value.headers, "id"), Some("m-1"));
        assert_eq!(
            header_value(&no_value.headers, DeadLetterHeaders::OMITTED),
            Some("value")
        );
        assert_eq!(
            header_value(&no_value.headers, DeadLetterHeaders::ORIGINAL_VALUE_SIZE),
            Some("999601")
        );

        let bare = dead_letter_record("dlq", &message, &why, &trace, Omission::ValueHeadersAndKey);
        assert_eq!((bare.key, bare.value), (None, None));
        assert_eq!(header_value(&bare.headers, "id"), None);
        assert_eq!(
            header_value(&bare.headers, DeadLetterHeaders::OMITTED),
            Some("value,headers,key")
        );
        assert_eq!(
            header_value(&bare.headers, DeadLetterHeaders::ORIGINAL_HEADERS_SIZE),
            Some("17")
        );
        assert_eq!(
            header_value(&bare.headers, DeadLetterHeaders::ORIGINAL_KEY_SIZE),
            Some("3")
        );
        assert_eq!(
            header_value(&bare.headers, DeadLetterHeaders::REASON),
            Some("not UTF-8")
        );
    }
}
