//! W3C Trace Context (`traceparent`) carried from input records to the
//! records a stage produces, so one message can be followed across stages.

use std::fmt;

/// The header name, as the W3C spec spells it.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// A parsed `traceparent`: version 00, a 16-byte trace id, an 8-byte span
/// (parent) id and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// Parse a header value. Anything malformed, an all-zero id, or the
    /// forbidden version `ff` is `None`: the spec says to ignore such a
    /// header and start a new trace.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        let text = std::str::from_utf8(value).ok()?.trim();
        let mut parts = text.split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let span_id = parts.next()?;
        let flags = parts.next()?;
        // Version 00 has exactly four parts; later versions may append
        // more, which a 00 reader keeps ignoring.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let mut parsed = TraceParent {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        decode_lower_hex(trace_id, &mut parsed.trace_id)?;
        decode_lower_hex(span_id, &mut parsed.span_id)?;
        let mut flag_byte = [0u8; 1];
        decode_lower_hex(flags, &mut flag_byte)?;
        parsed.flags = flag_byte[0];
        if parsed.trace_id == [0; 16] || parsed.span_id == [0; 8] {
            return None;
        }
        Some(parsed)
    }

    /// A new trace, for a record that arrived without one. Not sampled:
    /// sluice does not export spans itself, it only lets a tracing system
    /// downstream connect the records.
    pub fn new_root() -> TraceParent {
        TraceParent {
            trace_id: random_nonzero(),
            span_id: random_nonzero(),
            flags: 0,
        }
    }

    /// The context to put on a record this stage produces: same trace, a
    /// fresh span id for this stage's handling, same flags.
    pub fn child(&self) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            span_id: random_nonzero(),
            flags: self.flags,
        }
    }

    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex::encode(self.span_id)
    }

    /// The header value, written straight into its bytes: a stage writes
    /// one per output record, so no intermediate strings.
    pub fn to_header_value(&self) -> Vec<u8> {
        // `00-` 32 hex `-` 16 hex `-` 2 hex.
        let mut value = Vec::with_capacity(55);
        value.extend_from_slice(b"00-");
        push_lower_hex(&mut value, &self.trace_id);
        value.push(b'-');
        push_lower_hex(&mut value, &self.span_id);
        value.push(b'-');
        push_lower_hex(&mut value, &[self.flags]);
        value
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.to_header_value();
        formatter.write_str(std::str::from_utf8(&value).map_err(|_| fmt::Error)?)
    }
}

/// Append `bytes` as lower-case hex, as the spec writes it.
fn push_lower_hex(into: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        into.push(DIGITS[usize::from(byte >> 4)]);
        into.push(DIGITS[usize::from(byte & 0x0f)]);
    }
}

/// The spec allows only lower-case hex.
fn decode_lower_hex(text: &str, into: &mut [u8]) -> Option<()> {
    if text.len() != into.len() * 2 || text.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return None;
    }
    hex::decode_to_slice(text, into).ok()
}

fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let bytes: [u8; N] = rand::random();
        if bytes != [0; N] {
            return bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TraceParent;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_round_trips() {
        let parsed = TraceParent::parse(EXAMPLE.as_bytes()).expect("valid");
        assert_eq!(parsed.to_string(), EXAMPLE);
        assert_eq!(parsed.to_header_value(), EXAMPLE.as_bytes());
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id(), "00f067aa0ba902b7");
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_new_span() {
        let parent = TraceParent::parse(EXAMPLE.as_bytes()).expect("valid");
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
        assert!(child.to_string().ends_with("-01"));
        assert_eq!(TraceParent::parse(child.to_string().as_bytes()), Some(child));
    }

    #[test]
    fn malformed_headers_are_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(TraceParent::parse(&[0xff, 0xfe]), None);
    }

    #[test]
    fn a_later_version_with_more_fields_is_read_as_00() {
        let parsed =
            TraceParent::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future").expect("readable");
        assert_eq!(parsed.to_string(), EXAMPLE);
    }

    #[test]
    fn a_new_root_is_a_valid_unsampled_trace() {
        let root = TraceParent::new_root();
        assert!(root.to_string().ends_with("-00"));
        assert_eq!(TraceParent::parse(root.to_string().as_bytes()), Some(root));
    }
}
