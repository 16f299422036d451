//! Decoding a consumer group member's assignment: the opaque bytes
//! DescribeGroups returns are, for groups of protocol type `consumer`, a
//! ConsumerProtocolAssignment, and reading them is the only way to see
//! which partitions each member owns without joining the group.
//!
//! Layout (big-endian, every version from 0 on; later versions only add
//! fields at the end, so reading this prefix works for all of them):
//!
//! ```text
//! version           int16
//! assigned topics   int32 count, then per topic:
//!   topic           int16 length + UTF-8 bytes
//!   partitions      int32 count, then int32 each
//! user data         int32 length (-1: none) + bytes
//! ```

use serde::Serialize;

/// The partitions of one topic assigned to a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssignedTopic {
    pub topic: String,
    pub partitions: Vec<i32>,
}

/// Why assignment bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    #[error("the assignment ends inside its {field} (byte {at} of {length})")]
    Truncated {
        field: &'static str,
        at: usize,
        length: usize,
    },
    #[error("the assignment has a negative {field} ({value})")]
    Negative { field: &'static str, value: i64 },
    #[error("a topic name in the assignment is not UTF-8")]
    TopicNotUtf8,
}

/// Read a ConsumerProtocolAssignment. User data, which is the assignor's
/// own business, is checked for length and skipped.
pub fn decode_member_assignment(bytes: &[u8]) -> Result<Vec<AssignedTopic>, AssignmentError> {
    let mut reader = Reader { bytes, at: 0 };
    let version = reader.int16("version")?;
    if version < 0 {
        return Err(AssignmentError::Negative {
            field: "version",
            value: version.into(),
        });
    }
    let topic_count = reader.count("topic count")?;
    let mut topics = Vec::with_capacity(topic_count.min(1024));
    for _ in 0..topic_count {
        let name_length = reader.int16("topic name length")?;
        if name_length < 0 {
            return Err(AssignmentError::Negative {
                field: "topic name length",
                value: name_length.into(),
            });
        }
        let name = reader.take(name_length as usize, "topic name")?;
        let topic = String::from_utf8(name.to_vec()).map_err(|_| AssignmentError::TopicNotUtf8)?;
        let partition_count = reader.count("partition count")?;
        let mut partitions = Vec::with_capacity(partition_count.min(65_536));
        for _ in 0..partition_count {
            partitions.push(reader.int32("partition")?);
        }
        topics.push(AssignedTopic { topic, partitions });
    }
    // Some clients end the assignment here; when present, user data must
    // be whole (-1 means none).
    if reader.at < bytes.len() {
        let user_data_length = reader.int32("user data length")?;
        if user_data_length > 0 {
            reader.take(user_data_length as usize, "user data")?;
        }
    }
    Ok(topics)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize, field: &'static str) -> Result<&'a [u8], AssignmentError> {
        let end = self
            .at
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(AssignmentError::Truncated {
                field,
                at: self.at,
                length: self.bytes.len(),
            })?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn int16(&mut self, field: &'static str) -> Result<i16, AssignmentError> {
        let bytes = self.take(2, field)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn int32(&mut self, field: &'static str) -> Result<i32, AssignmentError> {
        let bytes = self.take(4, field)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// An array length, which may not be negative here (no null arrays).
    fn count(&mut self, field: &'static str) -> Result<usize, AssignmentError> {
        let value = self.int32(field)?;
        usize::try_from(value).map_err(|_| AssignmentError::Negative {
            field,
            value: value.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encode an assignment the way Kafka clients do.
    fn encode(version: i16, topics: &[(&str, &[i32])], user_data: Option<&[u8]>) -> Vec<u8> {
        let mut bytes = version.to_be_bytes().to_vec();
        bytes.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for partition in *partitions {
                bytes.extend(partition.to_be_bytes());
            }
        }
        match user_data {
            Some(data) => {
                bytes.extend((data.len() as i32).to_be_bytes());
                bytes.extend(data);
            }
            None => bytes.extend((-1i32).to_be_bytes()),
        }
        bytes
    }

    fn assigned(topic: &str, partitions: &[i32]) -> AssignedTopic {
        AssignedTopic {
            topic: topic.to_owned(),
            partitions: partitions.to_vec(),
        }
    }

    #[test]
    fn version_0_with_two_topics_and_no_user_data() {
        let bytes = encode(0, &[("orders", &[0, 2, 4]), ("payments", &[1])], None);
        assert_eq!(
            decode_member_assignment(&bytes),
            Ok(vec![assigned("orders", &[0, 2, 4]), assigned("payments", &[1])])
        );
    }

    #[test]
    fn later_versions_with_user_data_read_the_same() {
        let bytes = encode(3, &[("in", &[7])], Some(b"sticky-generation-4"));
        assert_eq!(decode_member_assignment(&bytes), Ok(vec![assigned("in", &[7])]));
    }

    #[test]
    fn an_empty_assignment_owns_nothing() {
        assert_eq!(decode_member_assignment(&encode(1, &[], Some(b""))), Ok(vec![]));
        assert_eq!(
            decode_member_assignment(&encode(0, &[("in", &[])], None)),
            Ok(vec![assigned("in", &[])])
        );
    }

    #[test]
    fn user_data_may_be_left_out() {
        let mut bytes = encode(0, &[("in", &[0, 1])], None);
        bytes.truncate(bytes.len() - 4);
        assert_eq!(decode_member_assignment(&bytes), Ok(vec![assigned("in", &[0, 1])]));
    }

    #[test]
    fn truncated_bytes_are_an_error_naming_the_field() {
        let bytes = encode(0, &[("orders", &[0, 1])], None);
        // Cut inside the second partition number.
        let cut = &bytes[..bytes.len() - 4 - 2];
        assert_eq!(
            decode_member_assignment(cut),
            Err(AssignmentError::Truncated {
                field: "partition",
                at: cut.len() - 2,
                length: cut.len()
            })
        );
        assert!(matches!(
            decode_member_assignment(&[0]),
            Err(AssignmentError::Truncated { field: "version", .. })
        ));
        assert!(matches!(
            decode_member_assignment(&bytes[..6]),
            Err(AssignmentError::Truncated {
                field: "topic name length",
                ..
            })
        ));
    }

    #[test]
    fn user_data_longer_than_the_bytes_is_an_error() {
        let mut bytes = encode(1, &[("in", &[0])], Some(b"abcdef"));
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(
            decode_member_assignment(&bytes),
            Err(AssignmentError::Truncated { field: "user data", .. })
        ));
    }

    #[test]
    fn negative_lengths_are_errors() {
        let mut bytes = encode(0, &[], None);
        bytes[2..6].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            decode_member_assignment(&bytes),
            Err(AssignmentError::Negative {
                field: "topic count",
                value: -1
            })
        );
        assert_eq!(
            decode_member_assignment(&(-1i16).to_be_bytes()),
            Err(AssignmentError::Negative {
                field: "version",
                value: -1
            })
        );
        let mut bytes = encode(0, &[("x", &[])], None);
        bytes[6..8].copy_from_slice(&(-2i16).to_be_bytes());
        assert_eq!(
            decode_member_assignment(&bytes),
            Err(AssignmentError::Negative {
                field: "topic name length",
                value: -2
            })
        );
    }

    #[test]
    fn a_topic_name_that_is_not_utf8_is_an_error() {
        let mut bytes = encode(0, &[("ab", &[0])], None);
        bytes[8] = 0xff;
        assert_eq!(decode_member_assignment(&bytes), Err(AssignmentError::TopicNotUtf8));
    }

    #[test]
    fn a_huge_count_in_a_short_buffer_fails_without_allocating_it() {
        let mut bytes = 0i16.to_be_bytes().to_vec();
        bytes.extend(i32::MAX.to_be_bytes());
        assert!(matches!(
            decode_member_assignment(&bytes),
            Err(AssignmentError::Truncated {
                field: "topic name length",
                ..
            })
        ));
    }
}
