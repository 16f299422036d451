//! Faults a test can cause on purpose in a running stage, for the failures
//! that no input and no broker can be made to produce on demand: a worker
//! that panics, a producer that fails fatally.
//!
//! Not for production use; hidden from the documentation. Disarmed, it
//! costs one relaxed atomic load per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::kafka::{SinkProducer, TopicPartition};

#[doc(hidden)]
#[derive(Default)]
pub struct FaultInjection {
    armed: AtomicBool,
    /// The worker taking this offset of this partition panics, once.
    panic_at: Mutex<Option<(TopicPartition, i64)>>,
    producer: Mutex<Option<Weak<SinkProducer>>>,
}

impl std::fmt::Debug for FaultInjection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FaultInjection")
            .field("armed", &self.armed)
            .finish_non_exhaustive()
    }
}

impl FaultInjection {
    /// Make the worker of `partition` panic when it takes `offset`.
    pub fn panic_worker_at(&self, partition: TopicPartition, offset: i64) {
        *self.panic_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((partition, offset));
        self.armed.store(true, Ordering::Release);
    }

    /// Make the stage's producer fail fatally, as a broken idempotent
    /// producer would. `false` while the stage has no producer yet.
    pub fn fail_producer(&self, reason: &str) -> bool {
        let producer = self
            .producer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .and_then(Weak::upgrade);
        match producer {
            Some(producer) => {
                producer.inject_fatal_error(reason);
                true
            }
            None => false,
        }
    }

    pub(crate) fn attach_producer(&self, producer: &Arc<SinkProducer>) {
        *self.producer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::downgrade(producer));
    }

    /// Panic if a test asked for a panic at one of these offsets.
    pub(crate) fn check_taken(&self, partition: &TopicPartition, offsets: impl Iterator<Item = i64>) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let mut panic_at = self.panic_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((target, offset)) = panic_at.clone() else {
            return;
        };
        if &target == partition && offsets.into_iter().any(|taken| taken == offset) {
            *panic_at = None;
            self.armed.store(false, Ordering::Release);
            drop(panic_at);
            panic!("injected worker panic at {partition} offset {offset}");
        }
    }
}
