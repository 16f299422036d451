//! One assigned partition's own queue of fetched records.
//!
//! Each partition is split off the consumer's shared queue, so a worker
//! takes its partition's records only when it has room for them. A worker
//! that is busy, or waiting out a retry, simply stops taking: librdkafka
//! then stops fetching that partition once its prefetch limits
//! (`queued.min.messages`, `queued.max.messages.kbytes`, which apply per
//! partition for split queues) are reached. Backpressure needs no pausing,
//! and one slow partition never holds up another.

use rdkafka::consumer::ConsumerContext;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::error::KafkaError;

use super::record::{ConsumedRecord, TopicPartition};

/// The records of one partition, fetched in the background by librdkafka.
pub struct PartitionFeed {
    partition: TopicPartition,
    queue: Option<Box<dyn FetchQueue>>,
}

impl PartitionFeed {
    pub(crate) fn split<C: ConsumerContext + 'static>(partition: TopicPartition, queue: PartitionQueue<C>) -> Self {
        PartitionFeed {
            partition,
            queue: Some(Box::new(queue)),
        }
    }

    /// A feed for a partition whose queue could not be split off: its
    /// records arrive on the consumer's shared queue instead, and the stage
    /// hands them over from there.
    pub(crate) fn shared(partition: TopicPartition) -> Self {
        PartitionFeed { partition, queue: None }
    }

    pub fn partition(&self) -> &TopicPartition {
        &self.partition
    }

    /// The next fetched record, if one is waiting. Never blocks.
    pub fn next_record(&self) -> Option<Result<ConsumedRecord, KafkaError>> {
        self.queue.as_ref()?.take_now(&self.partition)
    }

    /// Call `wake` (from a librdkafka thread) whenever records arrive in an
    /// empty queue, so a worker can wait for records instead of polling.
    pub fn wake_on_arrival(&mut self, wake: impl Fn() + Send + Sync + 'static) {
        if let Some(queue) = self.queue.as_mut() {
            queue.wake_on_arrival(Box::new(wake));
        }
    }
}

/// A split partition queue with its consumer's context type erased.
trait FetchQueue: Send + Sync {
    fn take_now(&self, partition: &TopicPartition) -> Option<Result<ConsumedRecord, KafkaError>>;
    fn wake_on_arrival(&mut self, wake: Box<dyn Fn() + Send + Sync>);
}

impl<C: ConsumerContext + 'static> FetchQueue for PartitionQueue<C> {
    fn take_now(&self, partition: &TopicPartition) -> Option<Result<ConsumedRecord, KafkaError>> {
        self.poll(std::time::Duration::ZERO)
            .map(|result| result.map(|message| ConsumedRecord::from_message(&message, partition.clone())))
    }

    fn wake_on_arrival(&mut self, wake: Box<dyn Fn() + Send + Sync>) {
        self.set_nonempty_callback(wake);
    }
}
