//! Which of a partition's waiting messages may go to the plugin next, so
//! that the order the stage promises (`stage.ordering`) holds while
//! several calls of one partition run at once.
//!
//! Every message belongs to a lane: the whole partition, its key, or only
//! itself. A lane hands out its messages in offset order and, while any of
//! them is held (in a call, waiting out a retry, waiting to be produced
//! again), none after it. Lanes that are free go oldest head first, so the
//! lowest unfinished offset, which bounds the commit, moves on first.
//!
//! Pure bookkeeping, no I/O: the partition worker drives it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::config::MessageOrder;
use crate::plugin::Message;

/// What keeps messages in order with each other.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    /// `ordering = "partition"`: one lane for everything.
    Partition,
    /// `ordering = "key"`: messages with these key bytes.
    Key(Vec<u8>),
    /// `ordering = "none"`, and keyless messages under `"key"`: the
    /// message at this offset alone.
    Alone(i64),
}

impl Lane {
    /// The lane `message` belongs to under `order`. A keyless message
    /// under `"key"` is alone: its producer's partitioner did not keep
    /// keyless records together either, so there is no order between
    /// them to keep. An empty key is a key like any other.
    pub(crate) fn of(order: MessageOrder, message: &Message) -> Lane {
        match (order, &message.key) {
            (MessageOrder::Partition, _) => Lane::Partition,
            (MessageOrder::Key, Some(key)) => Lane::Key(key.clone()),
            (MessageOrder::Key, None) | (MessageOrder::None, _) => Lane::Alone(message.offset),
        }
    }
}

#[derive(Debug, Default)]
struct LaneQueue {
    waiting: VecDeque<Message>,
    /// Messages of this lane handed out and not yet released.
    holds: usize,
}

/// A partition's messages that are taken but not yet handed to the plugin.
#[derive(Debug)]
pub(crate) struct Lanes {
    order: MessageOrder,
    lanes: HashMap<Lane, LaneQueue>,
    /// Free lanes with waiting messages, by their first message's offset.
    ready: BTreeMap<i64, Lane>,
    waiting: usize,
}

impl Lanes {
    pub(crate) fn new(order: MessageOrder) -> Self {
        Lanes {
            order,
            lanes: HashMap::new(),
            ready: BTreeMap::new(),
            waiting: 0,
        }
    }

    /// The lane `message` belongs to here.
    pub(crate) fn lane_of(&self, message: &Message) -> Lane {
        Lane::of(self.order, message)
    }

    /// Messages waiting to be handed out.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Whether [`take`](Self::take) would hand out anything.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Queue a newly taken message behind the earlier ones of its lane.
    pub(crate) fn push(&mut self, message: Message) {
        let lane = Lane::of(self.order, &message);
        let offset = message.offset;
        let queue = self.lanes.entry(lane.clone()).or_default();
        queue.waiting.push_back(message);
        self.waiting += 1;
        if queue.holds == 0 && queue.waiting.len() == 1 {
            self.ready.insert(offset, lane);
        }
    }

    /// Up to `max` messages for one plugin call, each now held. Under
    /// `"partition"` they are the partition's next messages in order;
    /// otherwise the heads of the oldest free lanes, one per lane, so no
    /// call carries two messages that must be in order with each other.
    pub(crate) fn take(&mut self, max: usize) -> Vec<Message> {
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some((_, lane)) = self.ready.pop_first() else {
                break;
            };
            let queue = self.lanes.get_mut(&lane).expect("a ready lane has a queue");
            let count = match lane {
                Lane::Partition => max - taken.len(),
                _ => 1,
            };
            for _ in 0..count {
                let Some(message) = queue.waiting.pop_front() else {
                    break;
                };
                queue.holds += 1;
                self.waiting -= 1;
                taken.push(message);
            }
        }
        taken
    }

    /// Hold a message's lane once more (it waits to be produced again):
    /// nothing after it in its lane is handed out until it is released.
    pub(crate) fn hold(&mut self, lane: Lane) {
        let queue = self.lanes.entry(lane).or_default();
        queue.holds += 1;
        if let Some(head) = queue.waiting.front() {
            self.ready.remove(&head.offset);
        }
    }

    /// A message of `lane` no longer holds it: its verdict is carried out (or
    /// its records handed to the producer again).
    pub(crate) fn release(&mut self, lane: Lane) {
        let Some(queue) = self.lanes.get_mut(&lane) else {
            debug_assert!(false, "released a message whose lane was never held");
            return;
        };
        queue.holds = queue.holds.saturating_sub(1);
        self.settle(lane);
    }

    /// Messages handed out but not handled (their call stopped short):
    /// back at the front of their lanes, in order, and released.
    pub(crate) fn put_back(&mut self, messages: impl DoubleEndedIterator<Item = Message>) {
        let mut touched = Vec::new();
        for message in messages.rev() {
            let lane = Lane::of(self.order, &message);
            let queue = self.lanes.get_mut(&lane).expect("a message handed out has a lane");
            if let Some(head) = queue.waiting.front() {
                self.ready.remove(&head.offset);
            }
            queue.holds = queue.holds.saturating_sub(1);
            queue.waiting.push_front(message);
            self.waiting += 1;
            touched.push(lane);
        }
        for lane in touched {
            self.settle(lane);
        }
    }

    /// Mark `lane` ready if it is free and has messages, and forget it if
    /// it is free and empty, so a stream of distinct keys does not grow
    /// the map.
    fn settle(&mut self, lane: Lane) {
        let queue = self.lanes.get(&lane).expect("settled lanes exist");
        if queue.holds > 0 {
            return;
        }
        match queue.waiting.front() {
            Some(head) => {
                self.ready.insert(head.offset, lane);
            }
            None => {
                self.lanes.remove(&lane);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: i64, key: Option<&str>) -> Message {
        Message {
            topic: "in".to_owned(),
            partition: 0,
            offset,
            timestamp_ms: None,
            key: key.map(|key| key.as_bytes().to_vec()),
            value: Some(Vec::new()),
            headers: Vec::new(),
            attempt: 1,
        }
    }

    fn offsets(messages: &[Message]) -> Vec<i64> {
        messages.iter().map(|message| message.offset).collect()
    }

    fn lanes_with(order: MessageOrder, keys: &[Option<&str>]) -> Lanes {
        let mut lanes = Lanes::new(order);
        for (offset, key) in keys.iter().enumerate() {
            lanes.push(message(offset as i64, *key));
        }
        lanes
    }

    #[test]
    fn partition_order_hands_out_a_batch_and_then_waits_for_all_of_it() {
        let mut lanes = lanes_with(MessageOrder::Partition, &[Some("a"), Some("b"), None, Some("a")]);
        let first = lanes.take(3);
        assert_eq!(offsets(&first), [0, 1, 2]);
        assert!(lanes.take(3).is_empty(), "the partition is held while its batch is out");
        lanes.release(lanes.lane_of(&first[0]));
        lanes.release(lanes.lane_of(&first[1]));
        assert!(lanes.take(3).is_empty(), "one message of the batch is still out");
        lanes.release(lanes.lane_of(&first[2]));
        assert_eq!(offsets(&lanes.take(3)), [3]);
    }

    #[test]
    fn key_order_hands_out_one_message_per_key_oldest_first() {
        let mut lanes = lanes_with(
            MessageOrder::Key,
            &[Some("a"), Some("a"), Some("b"), Some("c"), Some("b")],
        );
        let call = lanes.take(10);
        assert_eq!(offsets(&call), [0, 2, 3], "one per key");
        assert!(lanes.take(10).is_empty());
        lanes.release(lanes.lane_of(&call[1]));
        assert_eq!(offsets(&lanes.take(10)), [4], "b's next, while a is still out");
        lanes.release(lanes.lane_of(&call[0]));
        assert_eq!(offsets(&lanes.take(10)), [1]);
        assert_eq!(lanes.waiting(), 0);
    }

    #[test]
    fn keyless_messages_under_key_order_are_each_alone() {
        let mut lanes = lanes_with(MessageOrder::Key, &[None, None, Some(""), Some("")]);
        assert_eq!(offsets(&lanes.take(10)), [0, 1, 2], "an empty key is still a key");
    }

    #[test]
    fn no_order_hands_out_everything() {
        let mut lanes = lanes_with(MessageOrder::None, &[Some("a"), Some("a"), Some("a")]);
        assert_eq!(offsets(&lanes.take(2)), [0, 1]);
        assert_eq!(offsets(&lanes.take(2)), [2]);
    }

    #[test]
    fn a_held_message_holds_back_only_its_own_lane() {
        let mut lanes = lanes_with(MessageOrder::Key, &[Some("a"), Some("b"), Some("a"), Some("b")]);
        let call = lanes.take(10);
        // a@0 waits out a retry (stays held); b@1 is done.
        lanes.release(lanes.lane_of(&call[1]));
        assert_eq!(offsets(&lanes.take(10)), [3]);
        lanes.release(lanes.lane_of(&call[0]));
        assert_eq!(offsets(&lanes.take(10)), [2]);
    }

    #[test]
    fn a_message_produced_again_holds_its_lane_until_released() {
        let mut lanes = lanes_with(MessageOrder::Key, &[Some("a"), Some("a")]);
        let first = lanes.take(10);
        lanes.release(lanes.lane_of(&first[0]));
        lanes.hold(lanes.lane_of(&first[0]));
        assert!(lanes.take(10).is_empty(), "a's records wait to be produced again");
        lanes.release(lanes.lane_of(&first[0]));
        assert_eq!(offsets(&lanes.take(10)), [1]);
    }

    #[test]
    fn messages_put_back_go_first_again_in_order() {
        let mut lanes = lanes_with(MessageOrder::Partition, &[Some("a"), Some("b"), Some("c"), Some("d")]);
        let call = lanes.take(3);
        lanes.release(lanes.lane_of(&call[0]));
        lanes.put_back(call.into_iter().skip(1));
        assert_eq!(offsets(&lanes.take(10)), [1, 2, 3]);

        let mut lanes = lanes_with(MessageOrder::Key, &[Some("a"), Some("b"), Some("a")]);
        let call = lanes.take(10);
        lanes.put_back(call.into_iter());
        assert_eq!(lanes.waiting(), 3);
        assert_eq!(offsets(&lanes.take(10)), [0, 1]);
    }

    #[test]
    fn free_empty_lanes_are_forgotten() {
        let mut lanes = Lanes::new(MessageOrder::Key);
        for offset in 0..1000 {
            lanes.push(message(offset, Some(&offset.to_string())));
            let taken = lanes.take(1);
            lanes.release(lanes.lane_of(&taken[0]));
        }
        assert!(lanes.lanes.is_empty());
        assert!(lanes.ready.is_empty());
    }
}
