//! Records as owned data, so they can cross threads and outlive the
//! consumer's buffers.
//!
//! # Headers as Kafka has them
//!
//! Kafka stores a header name as bytes, and any producer can write one that
//! is not UTF-8 (`kcat -H "$(printf 'x\xff')=v"` does). sluice and the plugin
//! contract carry names as text, and rdkafka's own header accessors go
//! further: they unwrap the name's UTF-8 conversion, so such a record would
//! panic the partition's worker and stall its partition for good. Headers
//! are therefore read straight from librdkafka ([`raw_headers`]) and turned
//! into text by one pure function ([`headers_from_raw`]):
//!
//! - a UTF-8 name is kept as it is;
//! - a name that is not UTF-8 is passed on lossily (each invalid sequence
//!   becomes U+FFFD, as [`String::from_utf8_lossy`] does), and right after
//!   it comes one extra header, [`RAW_HEADER_NAME_HEADER`]
//!   (`sluice.raw-header-name`), whose value is the original name's bytes.
//!   Nothing is lost: an output or dead letter that copies the headers
//!   carries both, and a consumer downstream can restore the name;
//! - a null header value reads as an empty one, since the contract has no
//!   null header value.
//!
//! Two limits come from librdkafka's API: it hands a header name out as a C
//! string, so a name with a NUL byte reads only up to that byte; and a header
//! block it cannot parse (malformed on the wire, or more than 100,000
//! headers) reads as no headers, with a warning naming the record.

use std::ffi::CStr;
use std::fmt;
use std::sync::Arc;

use rdkafka::Message;
use rdkafka::bindings::{rd_kafka_header_cnt, rd_kafka_header_get_all, rd_kafka_headers_t, rd_kafka_message_headers};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaRespErr;

/// The header that follows a header whose name is not UTF-8, holding that
/// name's original bytes (the name itself is passed on lossily).
pub const RAW_HEADER_NAME_HEADER: &str = "sluice.raw-header-name";

/// A header as librdkafka holds it: the name's bytes, and the value (`None`
/// when it is null).
pub type RawHeader<'a> = (&'a [u8], Option<&'a [u8]>);

/// One partition of one topic: the unit of ordering, assignment and commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.topic, self.partition)
    }
}

/// A record read from an input topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: TopicPartition,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, when the record has a timestamp.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In the order the producer wrote them, as [`headers_from_raw`] makes
    /// them text: a null value is empty, a name that is not UTF-8 is lossy
    /// and followed by its original bytes in `sluice.raw-header-name`.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ConsumedRecord {
    pub(crate) fn from_message(message: &BorrowedMessage<'_>, partition: TopicPartition) -> Self {
        let headers = match raw_headers(message) {
            Ok(raw) => headers_from_raw(raw),
            Err(error) => {
                tracing::warn!(%partition, offset = message.offset(), %error, "librdkafka cannot parse the record's headers; it goes on without them");
                Vec::new()
            }
        };
        ConsumedRecord {
            partition,
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// Bytes this record keeps in memory while the stage holds it: what the
    /// memory budget counts it as. The fixed part stands for the record's
    /// own fields and allocations, so empty records count too.
    pub fn size_in_memory(&self) -> u64 {
        const FIXED: usize = 128;
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 48)
            .sum();
        let bytes = FIXED + self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len) + headers;
        bytes as u64
    }
}

/// Every header of a consumed message, in order, read from librdkafka
/// directly: rdkafka's `Headers` accessors panic on a name that is not
/// UTF-8 (see the module documentation). No headers is `Ok` and empty; an
/// error means librdkafka could not parse the record's header block.
pub fn raw_headers<'a>(message: &'a BorrowedMessage<'_>) -> Result<Vec<RawHeader<'a>>, RDKafkaErrorCode> {
    let mut headers: *mut rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is the librdkafka message that `message`
    // wraps, alive and not freed while it is borrowed for `'a`.
    // `rd_kafka_message_headers` parses the message's header block on first
    // use (as rdkafka's own `headers()` does) and returns headers the
    // message owns: we never free them, and nothing adds or removes headers
    // of a consumed message, so they stay as they are for `'a`. For an index
    // below `rd_kafka_header_cnt`, `rd_kafka_header_get_all` points `name`
    // at a NUL-terminated copy of the name and `value` at `size` bytes (null
    // for a null value), both inside that header list. Every slice built
    // here therefore borrows memory that outlives `'a`, and is only read.
    unsafe {
        match rd_kafka_message_headers(message.ptr(), &mut headers) {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => {}
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__NOENT => return Ok(Vec::new()),
            error => return Err(error.into()),
        }
        let count = rd_kafka_header_cnt(headers);
        let mut raw = Vec::with_capacity(count);
        for index in 0..count {
            let mut name = std::ptr::null();
            let mut value = std::ptr::null();
            let mut size = 0;
            let found = rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size);
            if found != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(found.into());
            }
            let name = CStr::from_ptr(name).to_bytes();
            let value = (!value.is_null()).then(|| std::slice::from_raw_parts(value.cast::<u8>(), size));
            raw.push((name, value));
        }
        Ok(raw)
    }
}

/// Headers as sluice carries them, from headers as Kafka has them: names
/// that are UTF-8 unchanged, any other name lossily (U+FFFD for each invalid
/// sequence) followed at once by a [`RAW_HEADER_NAME_HEADER`] holding its
/// original bytes; a null value as an empty one. Order and duplicates are
/// kept.
pub fn headers_from_raw<'a>(raw: impl IntoIterator<Item = RawHeader<'a>>) -> Vec<(String, Vec<u8>)> {
    let raw = raw.into_iter();
    let mut headers = Vec::with_capacity(raw.size_hint().0);
    for (name, value) in raw {
        let value = value.unwrap_or_default().to_vec();
        match std::str::from_utf8(name) {
            Ok(name) => headers.push((name.to_owned(), value)),
            Err(_) => {
                headers.push((String::from_utf8_lossy(name).into_owned(), value));
                headers.push((RAW_HEADER_NAME_HEADER.to_owned(), name.to_vec()));
            }
        }
    }
    headers
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    /// `None` produces a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

#[cfg(test)]
mod tests {
    use super::{RAW_HEADER_NAME_HEADER, RawHeader, headers_from_raw};

    fn raw<'a>(name: &'a [u8], value: &'a [u8]) -> RawHeader<'a> {
        (name, Some(value))
    }

    fn null(name: &[u8]) -> RawHeader<'_> {
        (name, None)
    }

    fn text(name: &str, value: &[u8]) -> (String, Vec<u8>) {
        (name.to_owned(), value.to_vec())
    }

    #[test]
    fn utf8_names_pass_unchanged_in_order_with_duplicates() {
        let headers = headers_from_raw([
            raw(b"trace", b"t-1"),
            raw("caf\u{e9}".as_bytes(), b"\xff\x00 binary"),
            raw(b"trace", b"t-2"),
        ]);
        assert_eq!(
            headers,
            [
                text("trace", b"t-1"),
                text("caf\u{e9}", b"\xff\x00 binary"),
                text("trace", b"t-2"),
            ]
        );
        assert!(headers_from_raw([]).is_empty());
    }

    #[test]
    fn a_null_value_reads_as_empty() {
        let headers = headers_from_raw([null(b"null"), raw(b"empty", b"")]);
        assert_eq!(headers, [text("null", b""), text("empty", b"")]);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_lossy_and_followed_by_its_raw_bytes() {
        let headers = headers_from_raw([
            raw(b"before", b"1"),
            raw(b"x\xff", b"v"),
            null(b"\xff\xfe-\xc3"),
            raw(b"after", b"2"),
        ]);
        assert_eq!(
            headers,
            [
                text("before", b"1"),
                text("x\u{fffd}", b"v"),
                text(RAW_HEADER_NAME_HEADER, b"x\xff"),
                text("\u{fffd}\u{fffd}-\u{fffd}", b""),
                text(RAW_HEADER_NAME_HEADER, b"\xff\xfe-\xc3"),
                text("after", b"2"),
            ]
        );
    }

    #[test]
    fn a_header_already_named_like_the_raw_name_header_is_left_alone() {
        let headers = headers_from_raw([raw(RAW_HEADER_NAME_HEADER.as_bytes(), b"\xff")]);
        assert_eq!(headers, [text(RAW_HEADER_NAME_HEADER, b"\xff")]);
    }
}
