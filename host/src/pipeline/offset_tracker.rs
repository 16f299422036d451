//! Which offset of a partition is safe to commit, whatever order its
//! messages finish in.

use std::collections::BTreeSet;

/// Tracks the messages of one partition between "taken" and "finished".
///
/// The committed offset must never pass a message that is not finished, or
/// a crash would skip it. Messages finish out of order (a retried message
/// finishes after the ones behind it; acknowledgements arrive in any
/// order), so the safe offset is the lowest unfinished one; when all are
/// finished, the one after the highest seen.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    unfinished: BTreeSet<i64>,
    highest_taken: Option<i64>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        OffsetTracker::default()
    }

    /// A message at `offset` is now being worked on, until it is finished.
    /// Offsets normally arrive in order, but one that arrives late (or is
    /// delivered again) still holds the commit back until it is finished.
    pub fn take(&mut self, offset: i64) {
        self.unfinished.insert(offset);
        self.highest_taken = self.highest_taken.max(Some(offset));
    }

    /// The message at `offset` is finished: its outputs or dead-letter
    /// record are acknowledged (or it was filtered out or skipped).
    pub fn finish(&mut self, offset: i64) {
        self.unfinished.remove(&offset);
    }

    /// The offset to commit (the next one to read), or `None` before any
    /// message was taken.
    pub fn committable(&self) -> Option<i64> {
        match self.unfinished.first() {
            Some(lowest) => Some(*lowest),
            None => self.highest_taken.map(|highest| highest + 1),
        }
    }

    /// Messages taken and not yet finished.
    pub fn unfinished(&self) -> usize {
        self.unfinished.len()
    }
}

#[cfg(test)]
mod tests {
    use super::OffsetTracker;

    #[test]
    fn nothing_taken_means_nothing_to_commit() {
        assert_eq!(OffsetTracker::new().committable(), None);
    }

    #[test]
    fn in_order_completion_commits_past_the_last_message() {
        let mut tracker = OffsetTracker::new();
        for offset in 0..3 {
            tracker.take(offset);
        }
        for offset in 0..3 {
            tracker.finish(offset);
        }
        assert_eq!(tracker.committable(), Some(3));
    }

    #[test]
    fn out_of_order_completion_never_passes_an_unfinished_message() {
        let mut tracker = OffsetTracker::new();
        for offset in 10..15 {
            tracker.take(offset);
        }
        tracker.finish(14);
        tracker.finish(12);
        tracker.finish(11);
        assert_eq!(tracker.committable(), Some(10), "10 is still unfinished");
        tracker.finish(10);
        assert_eq!(tracker.committable(), Some(13), "13 is still unfinished");
        tracker.finish(13);
        assert_eq!(tracker.committable(), Some(15));
        assert_eq!(tracker.unfinished(), 0);
    }

    #[test]
    fn a_message_retried_while_later_ones_finish_holds_the_commit_back() {
        let mut tracker = OffsetTracker::new();
        tracker.take(0);
        tracker.take(1);
        tracker.take(2);
        tracker.finish(1);
        tracker.finish(2);
        // 0 is retried: taken again, still unfinished.
        tracker.take(0);
        assert_eq!(tracker.committable(), Some(0));
        tracker.finish(0);
        assert_eq!(tracker.committable(), Some(3));
    }

    #[test]
    fn a_message_that_arrives_late_holds_the_commit_back() {
        let mut tracker = OffsetTracker::new();
        tracker.take(7);
        tracker.take(8);
        tracker.take(6);
        tracker.finish(7);
        tracker.finish(8);
        assert_eq!(tracker.committable(), Some(6));
        tracker.finish(6);
        assert_eq!(tracker.committable(), Some(9));
    }

    #[test]
    fn gaps_in_offsets_are_fine() {
        // Compacted topics and transaction markers leave gaps.
        let mut tracker = OffsetTracker::new();
        tracker.take(5);
        tracker.take(9);
        tracker.finish(9);
        assert_eq!(tracker.committable(), Some(5));
        tracker.finish(5);
        assert_eq!(tracker.committable(), Some(10));
    }

    #[test]
    fn the_commit_point_only_moves_forward() {
        let mut tracker = OffsetTracker::new();
        let mut last = None;
        let order = [3, 0, 4, 1, 2, 7, 5, 6];
        for offset in 0..8 {
            tracker.take(offset);
        }
        for offset in order {
            tracker.finish(offset);
            let now = tracker.committable();
            assert!(now >= last, "moved back from {last:?} to {now:?}");
            last = now;
        }
        assert_eq!(last, Some(8));
    }

    #[test]
    fn finishing_an_old_offset_again_is_harmless() {
        let mut tracker = OffsetTracker::new();
        tracker.take(0);
        tracker.finish(0);
        tracker.take(0);
        tracker.finish(0);
        assert_eq!(tracker.committable(), Some(1));
    }
}
