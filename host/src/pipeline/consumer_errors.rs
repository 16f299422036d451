//! Deciding when the consumer is beyond librdkafka's own recovery.
//!
//! librdkafka reconnects, refetches and rejoins by itself, and most errors
//! it reports pass on their own. A consumer that reports nothing but errors
//! (other than brokers being unreachable, which it rides out by itself) for
//! a long run, or one fatal error, is in a state only a new consumer gets
//! out of (a fenced member, a partition whose fetches keep failing, a
//! client stuck on stale state): the stage then stops its workers, closes
//! the consumer and subscribes a new one, without restarting the process.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::ConsumerRecoverySection;
use crate::kafka::{ConsumerErrorKind, KafkaError};

/// The current run of consumer errors, fed from the consumer thread and the
/// partition workers.
///
/// A run is errors with no sign of health between them (a record fetched,
/// partitions assigned) and no quiet gap longer than `error_gap`; a gap
/// ends the run, so a stage seeing a rare error now and then, idle or not,
/// never adds them up to a recreation.
#[derive(Debug)]
pub(crate) struct ConsumerErrors {
    recreate_after: u32,
    error_gap: Duration,
    run: Mutex<ErrorRun>,
    /// Mirrors "the run is not empty", so the per-batch health signal is
    /// one atomic load on the hot path.
    in_run: AtomicBool,
}

#[derive(Debug, Default)]
struct ErrorRun {
    count: u32,
    first: Option<Instant>,
    last: Option<Instant>,
    last_error: String,
    fatal: bool,
}

impl ConsumerErrors {
    pub(crate) fn new(config: &ConsumerRecoverySection) -> Self {
        ConsumerErrors {
            recreate_after: config.recreate_after_errors,
            error_gap: Duration::from_secs(config.error_gap_seconds),
            run: Mutex::default(),
            in_run: AtomicBool::new(false),
        }
    }

    /// The consumer reported an error (from a poll or a partition's
    /// fetch). Connection trouble does not count: librdkafka reconnects by
    /// itself, and a new consumer would face the same absent brokers. A
    /// fatal error is enough on its own.
    pub(crate) fn record(&self, error: &KafkaError) {
        let kind = ConsumerErrorKind::of(error);
        if !kind.is_connectivity() {
            self.error_at(&error.to_string(), kind == ConsumerErrorKind::Fatal, Instant::now());
        }
    }

    fn error_at(&self, error: &str, fatal: bool, now: Instant) {
        let mut run = self.lock();
        if run.last.is_some_and(|last| now.duration_since(last) > self.error_gap) {
            *run = ErrorRun::default();
        }
        run.count += 1;
        run.first.get_or_insert(now);
        run.last = Some(now);
        run.last_error = error.to_owned();
        run.fatal |= fatal;
        self.in_run.store(true, Ordering::Relaxed);
    }

    /// The consumer did its job (records arrived, partitions were
    /// assigned): the run, if any, is over.
    pub(crate) fn healthy(&self) {
        if self.in_run.load(Ordering::Relaxed) {
            *self.lock() = ErrorRun::default();
            self.in_run.store(false, Ordering::Relaxed);
        }
    }

    /// Why the consumer should be recreated now, if it should.
    pub(crate) fn recreation_due(&self) -> Option<String> {
        self.recreation_due_at(Instant::now())
    }

    fn recreation_due_at(&self, now: Instant) -> Option<String> {
        let run = self.lock();
        let last = run.last?;
        if run.fatal {
            return Some(format!("fatal consumer error: {}", run.last_error));
        }
        let persistent =
            self.recreate_after > 0 && run.count >= self.recreate_after && now.duration_since(last) <= self.error_gap;
        persistent.then(|| {
            let over = run.first.map_or(Duration::ZERO, |first| last.duration_since(first));
            format!(
                "{} errors in a row over {:.1} s, the last: {}",
                run.count,
                over.as_secs_f64(),
                run.last_error
            )
        })
    }

    /// A new consumer starts with a clean slate.
    pub(crate) fn reset(&self) {
        *self.lock() = ErrorRun::default();
        self.in_run.store(false, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ErrorRun> {
        self.run.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::ConsumerErrors;
    use crate::config::ConsumerRecoverySection;

    fn errors(recreate_after_errors: u32, error_gap_seconds: u64) -> ConsumerErrors {
        ConsumerErrors::new(&ConsumerRecoverySection {
            recreate_after_errors,
            error_gap_seconds,
            ..ConsumerRecoverySection::default()
        })
    }

    #[test]
    fn a_run_of_errors_makes_recreation_due() {
        let errors = errors(3, 10);
        let start = Instant::now();
        for second in 0..2 {
            errors.error_at("fetch failed", false, start + Duration::from_secs(second));
        }
        assert_eq!(errors.recreation_due_at(start + Duration::from_secs(2)), None);
        errors.error_at("fetch failed again", false, start + Duration::from_secs(4));
        let due = errors
            .recreation_due_at(start + Duration::from_secs(4))
            .expect("three in a row");
        assert_eq!(due, "3 errors in a row over 4.0 s, the last: fetch failed again");
        errors.reset();
        assert_eq!(errors.recreation_due_at(start + Duration::from_secs(5)), None);
    }

    #[test]
    fn health_between_errors_ends_the_run() {
        let errors = errors(3, 10);
        let start = Instant::now();
        errors.error_at("a", false, start);
        errors.error_at("b", false, start);
        errors.healthy();
        errors.error_at("c", false, start);
        assert_eq!(errors.recreation_due_at(start), None);
    }

    #[test]
    fn rare_errors_far_apart_never_add_up() {
        let errors = errors(3, 10);
        let start = Instant::now();
        for minute in 0..10 {
            errors.error_at("blip", false, start + Duration::from_secs(60 * minute));
        }
        assert_eq!(errors.recreation_due_at(start + Duration::from_secs(540)), None);
    }

    #[test]
    fn brokers_being_away_is_not_a_broken_consumer() {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};

        let errors = errors(2, 10);
        for code in [
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::Resolve,
        ] {
            for _ in 0..5 {
                errors.record(&KafkaError::MessageConsumption(code));
            }
        }
        assert_eq!(errors.recreation_due(), None);
        errors.record(&KafkaError::MessageConsumption(RDKafkaErrorCode::InvalidMessage));
        errors.record(&KafkaError::MessageConsumption(RDKafkaErrorCode::InvalidMessage));
        assert!(
            errors
                .recreation_due()
                .is_some_and(|why| why.starts_with("2 errors in a row"))
        );
    }

    #[test]
    fn a_fatal_error_is_enough_and_zero_turns_counting_off() {
        let errors = errors(0, 10);
        let start = Instant::now();
        for _ in 0..100 {
            errors.error_at("fetch failed", false, start);
        }
        assert_eq!(errors.recreation_due_at(start), None, "0 never recreates on a count");
        errors.error_at("producer fenced", true, start);
        assert_eq!(
            errors.recreation_due_at(start).as_deref(),
            Some("fatal consumer error: producer fenced")
        );
    }
}
