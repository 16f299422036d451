//! What happens to a message next: the stage's decisions as pure functions
//! of what just happened to it, with no Kafka, no Wasm and no clock in
//! sight. The partition worker carries the steps out.
//!
//! Two moments need a decision: a plugin call came back
//! ([`after_plugin_call`]), and a record the verdict asked for could not be
//! delivered ([`after_delivery_failure`]). Every path ends in the message
//! being finished (outputs or dead letter acknowledged) or, only while the
//! dead-letter topic itself cannot be written, in the partition waiting
//! with backoff and saying why.

use std::time::Duration;

use super::retry_policy::RetryPolicy;
use crate::kafka::DeliveryFailureKind;
use crate::plugin::{Output, PluginFailure, Verdict};

/// The longest dead-letter reason written, in bytes: a plugin's reason is
/// its own text and may be any size, but the record carrying it must fit
/// the broker's limit once everything else is left out.
pub(crate) const MAX_REASON_BYTES: usize = 4096;

/// What to do after a plugin call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AfterCall {
    /// Produce these outputs; the message is finished once all are
    /// acknowledged.
    Produce(Vec<Output>),
    /// Nothing to produce: finished as it is.
    Filter,
    /// Write the message to the dead-letter topic with this reason.
    DeadLetter(String),
    /// Call the plugin again after this wait; the partition holds its
    /// place meanwhile.
    TryAgain { after: Duration, reason: String },
}

/// Decide what a plugin call's result leads to, for a message on its
/// `attempt` (1-based). A failed call (trap, deadline, memory) counts like
/// a retry; when the attempts run out, the last reason goes to the DLQ.
pub(crate) fn after_plugin_call(
    result: Result<Verdict, PluginFailure>,
    attempt: u32,
    retry: &RetryPolicy,
) -> AfterCall {
    let (reason, requested) = match result {
        Ok(Verdict::Success(outputs)) if outputs.is_empty() => return AfterCall::Filter,
        Ok(Verdict::Success(outputs)) => return AfterCall::Produce(outputs),
        Ok(Verdict::DeadLetter(reason)) => return AfterCall::DeadLetter(bounded_reason(reason)),
        Ok(Verdict::Retry(retry)) => {
            let requested = retry.requested_delay();
            (retry.reason, requested)
        }
        Err(failure) => (failure.reason, None),
    };
    if retry.allows_another_attempt(attempt) {
        AfterCall::TryAgain {
            after: retry.delay_after(attempt, requested),
            reason,
        }
    } else {
        AfterCall::DeadLetter(bounded_reason(format!("retries exhausted: {reason}")))
    }
}

/// Which of a message's records failed to be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordRole {
    /// The plugin's outputs.
    Outputs,
    /// The message's dead-letter record, with what it already leaves out.
    DeadLetter(Omission),
}

/// What a dead-letter record leaves out to fit the broker's size limit,
/// in the order things are given up: the value first (the source record
/// still has it), then the original headers, then the key. The `sluice.*`
/// headers saying why, and the original sizes, always stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) enum Omission {
    #[default]
    Nothing,
    Value,
    ValueAndHeaders,
    ValueHeadersAndKey,
}

impl Omission {
    /// The next thing to leave out, if anything is left.
    pub(crate) fn more(self) -> Option<Omission> {
        match self {
            Omission::Nothing => Some(Omission::Value),
            Omission::Value => Some(Omission::ValueAndHeaders),
            Omission::ValueAndHeaders => Some(Omission::ValueHeadersAndKey),
            Omission::ValueHeadersAndKey => None,
        }
    }

    pub(crate) fn omits_value(self) -> bool {
        self >= Omission::Value
    }

    pub(crate) fn omits_headers(self) -> bool {
        self >= Omission::ValueAndHeaders
    }

    pub(crate) fn omits_key(self) -> bool {
        self >= Omission::ValueHeadersAndKey
    }
}

/// What to do after a record of a message failed delivery (librdkafka has
/// already retried it as long as `message.timeout.ms` allows).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AfterDeliveryFailure {
    /// Produce the failed records again after this wait. The plugin is not
    /// asked again: its verdict stands.
    Reproduce { after: Duration },
    /// The outputs cannot be delivered: dead-letter the source message
    /// with this reason instead.
    DeadLetterSource(String),
    /// Write the dead-letter record again, leaving out more.
    Shrink(Omission),
    /// The dead-letter topic cannot be written: the partition waits, says
    /// why, commits nothing past this message, and tries again after this
    /// wait.
    Blocked { after: Duration, reason: String },
    /// The producer is beyond use; the stage must stop (uncommitted
    /// messages are handled again by whoever consumes next).
    StopStage(String),
}

/// Decide what a delivery failure leads to. `failures` counts this
/// message's delivery failures so far, this one included.
pub(crate) fn after_delivery_failure(
    role: RecordRole,
    kind: DeliveryFailureKind,
    error: &str,
    topic: &str,
    failures: u32,
    retry: &RetryPolicy,
) -> AfterDeliveryFailure {
    let wait = retry.delay_after(failures, None);
    match (role, kind) {
        (_, DeliveryFailureKind::ProducerFatal) => AfterDeliveryFailure::StopStage(error.to_owned()),
        (RecordRole::Outputs, DeliveryFailureKind::Transient) if retry.allows_another_attempt(failures) => {
            AfterDeliveryFailure::Reproduce { after: wait }
        }
        (RecordRole::Outputs, DeliveryFailureKind::Transient) => {
            AfterDeliveryFailure::DeadLetterSource(bounded_reason(format!(
                "output to {topic} failed delivery {failures} times, the last: {error}"
            )))
        }
        (RecordRole::Outputs, DeliveryFailureKind::RecordTooLarge) => AfterDeliveryFailure::DeadLetterSource(
            bounded_reason(format!("output to {topic} is too large to deliver: {error}")),
        ),
        (RecordRole::Outputs, DeliveryFailureKind::Permanent) => AfterDeliveryFailure::DeadLetterSource(
            bounded_reason(format!("output to {topic} cannot be delivered: {error}")),
        ),
        (RecordRole::DeadLetter(omission), DeliveryFailureKind::RecordTooLarge) => match omission.more() {
            Some(next) => AfterDeliveryFailure::Shrink(next),
            None => AfterDeliveryFailure::Blocked {
                after: wait,
                reason: format!("the dead-letter record is too large even without value, headers and key: {error}"),
            },
        },
        (RecordRole::DeadLetter(_), DeliveryFailureKind::Transient | DeliveryFailureKind::Permanent) => {
            AfterDeliveryFailure::Blocked {
                after: wait,
                reason: format!("the dead-letter topic {topic} cannot be written: {error}"),
            }
        }
    }
}

/// `reason`, cut to [`MAX_REASON_BYTES`] at a character boundary.
pub(crate) fn bounded_reason(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES - '…'.len_utf8();
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
        reason.push('…');
    }
    reason
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plugin::{FailureKind, RetryInfo};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
        }
    }

    fn output() -> Output {
        Output {
            topic: None,
            key: None,
            value: Some(b"x".to_vec()),
            headers: Vec::new(),
        }
    }

    #[test]
    fn verdicts_lead_to_their_effects() {
        let retry = policy();
        assert_eq!(
            after_plugin_call(Ok(Verdict::Success(vec![output()])), 1, &retry),
            AfterCall::Produce(vec![output()])
        );
        assert_eq!(
            after_plugin_call(Ok(Verdict::Success(vec![])), 1, &retry),
            AfterCall::Filter
        );
        assert_eq!(
            after_plugin_call(Ok(Verdict::DeadLetter("bad".into())), 1, &retry),
            AfterCall::DeadLetter("bad".into())
        );
    }

    #[test]
    fn retries_and_failures_wait_then_run_out() {
        let retry = policy();
        let asked = || {
            Ok(Verdict::Retry(RetryInfo {
                reason: "busy".into(),
                delay_ms: Some(250),
            }))
        };
        assert_eq!(
            after_plugin_call(asked(), 1, &retry),
            AfterCall::TryAgain {
                after: Duration::from_millis(250),
                reason: "busy".into()
            }
        );
        let trap = || {
            Err(PluginFailure {
                kind: FailureKind::Trap,
                reason: "plugin trapped".into(),
            })
        };
        assert_eq!(
            after_plugin_call(trap(), 2, &retry),
            AfterCall::TryAgain {
                after: Duration::from_millis(200),
                reason: "plugin trapped".into()
            }
        );
        assert_eq!(
            after_plugin_call(trap(), 3, &retry),
            AfterCall::DeadLetter("retries exhausted: plugin trapped".into())
        );
        assert_eq!(
            after_plugin_call(asked(), 3, &retry),
            AfterCall::DeadLetter("retries exhausted: busy".into())
        );
    }

    #[test]
    fn transient_output_failures_reproduce_with_backoff_then_dead_letter() {
        let retry = policy();
        let decide = |failures| {
            after_delivery_failure(
                RecordRole::Outputs,
                DeliveryFailureKind::Transient,
                "Message timed out",
                "out",
                failures,
                &retry,
            )
        };
        assert_eq!(
            decide(1),
            AfterDeliveryFailure::Reproduce {
                after: Duration::from_millis(100)
            }
        );
        assert_eq!(
            decide(2),
            AfterDeliveryFailure::Reproduce {
                after: Duration::from_millis(200)
            }
        );
        assert_eq!(
            decide(3),
            AfterDeliveryFailure::DeadLetterSource(
                "output to out failed delivery 3 times, the last: Message timed out".into()
            )
        );
    }

    #[test]
    fn outputs_that_can_never_be_delivered_dead_letter_their_source_at_once() {
        let retry = policy();
        for (kind, expected) in [
            (
                DeliveryFailureKind::RecordTooLarge,
                "output to out is too large to deliver: too large",
            ),
            (
                DeliveryFailureKind::Permanent,
                "output to out cannot be delivered: too large",
            ),
        ] {
            assert_eq!(
                after_delivery_failure(RecordRole::Outputs, kind, "too large", "out", 1, &retry),
                AfterDeliveryFailure::DeadLetterSource(expected.into())
            );
        }
    }

    #[test]
    fn a_dead_letter_too_large_sheds_value_then_headers_then_key() {
        let retry = policy();
        let mut omission = Omission::Nothing;
        let mut seen = Vec::new();
        while let AfterDeliveryFailure::Shrink(next) = after_delivery_failure(
            RecordRole::DeadLetter(omission),
            DeliveryFailureKind::RecordTooLarge,
            "too large",
            "dlq",
            1,
            &retry,
        ) {
            seen.push(next);
            omission = next;
        }
        assert_eq!(
            seen,
            [Omission::Value, Omission::ValueAndHeaders, Omission::ValueHeadersAndKey]
        );
        assert!(matches!(
            after_delivery_failure(
                RecordRole::DeadLetter(omission),
                DeliveryFailureKind::RecordTooLarge,
                "too large",
                "dlq",
                1,
                &retry
            ),
            AfterDeliveryFailure::Blocked { .. }
        ));
    }

    #[test]
    fn an_unwritable_dead_letter_topic_blocks_the_partition_with_capped_backoff() {
        let retry = policy();
        for failures in [1, 5, 50, u32::MAX] {
            let AfterDeliveryFailure::Blocked { after, reason } = after_delivery_failure(
                RecordRole::DeadLetter(Omission::Nothing),
                DeliveryFailureKind::Permanent,
                "Broker: Topic authorization failed",
                "dlq",
                failures,
                &retry,
            ) else {
                panic!("blocks");
            };
            assert!(after <= Duration::from_secs(1), "capped: {after:?}");
            assert_eq!(
                reason,
                "the dead-letter topic dlq cannot be written: Broker: Topic authorization failed"
            );
        }
    }

    #[test]
    fn a_fatal_producer_stops_the_stage_whatever_the_record() {
        let retry = policy();
        for role in [RecordRole::Outputs, RecordRole::DeadLetter(Omission::Value)] {
            assert_eq!(
                after_delivery_failure(role, DeliveryFailureKind::ProducerFatal, "fenced", "t", 1, &retry),
                AfterDeliveryFailure::StopStage("fenced".into())
            );
        }
    }

    #[test]
    fn reasons_are_bounded_at_a_character_boundary() {
        let long = "é".repeat(5000);
        let bounded = bounded_reason(long);
        assert!(bounded.len() <= MAX_REASON_BYTES);
        assert!(bounded.ends_with('…'));
        assert_eq!(bounded_reason("short".into()), "short");
    }
}
