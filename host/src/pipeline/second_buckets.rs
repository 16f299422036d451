//! What happened in each of the last few seconds, for judgements made over
//! a sliding window (the breaker's failure share, the degraded checks).

use std::collections::VecDeque;

/// One `B` per second, the newest last, at most `keep` seconds old.
/// Seconds are counted by the caller (from a fixed start), so the rules
/// can be tested without waiting.
#[derive(Debug)]
pub(crate) struct SecondBuckets<B> {
    keep: u64,
    buckets: VecDeque<(u64, B)>,
}

impl<B: Default> SecondBuckets<B> {
    pub(crate) fn new(keep_seconds: u64) -> Self {
        SecondBuckets {
            keep: keep_seconds.max(1),
            buckets: VecDeque::new(),
        }
    }

    /// The bucket of `second`, made if need be; buckets older than the
    /// window are dropped.
    pub(crate) fn at(&mut self, second: u64) -> &mut B {
        self.forget_before(second);
        if self.buckets.back().is_none_or(|(last, _)| *last < second) {
            self.buckets.push_back((second, B::default()));
        }
        // A caller a second behind another (threads racing) adds to the
        // newest bucket rather than to one in the past.
        &mut self.buckets.back_mut().expect("just pushed").1
    }

    /// The buckets of the window ending at `now` (inclusive).
    pub(crate) fn within(&mut self, now: u64) -> impl Iterator<Item = &B> {
        self.forget_before(now);
        self.buckets.iter().map(|(_, bucket)| bucket)
    }

    /// The buckets of the last `seconds` seconds up to `now`, which may be
    /// shorter than the window kept.
    pub(crate) fn last(&mut self, now: u64, seconds: u64) -> impl Iterator<Item = &B> {
        self.forget_before(now);
        let oldest = now.saturating_sub(seconds.saturating_sub(1));
        self.buckets
            .iter()
            .filter(move |(second, _)| *second >= oldest)
            .map(|(_, bucket)| bucket)
    }

    pub(crate) fn clear(&mut self) {
        self.buckets.clear();
    }

    fn forget_before(&mut self, now: u64) {
        let oldest = now.saturating_sub(self.keep - 1);
        while self.buckets.front().is_some_and(|(second, _)| *second < oldest) {
            self.buckets.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SecondBuckets;

    #[test]
    fn only_the_window_counts() {
        let mut buckets: SecondBuckets<u32> = SecondBuckets::new(3);
        *buckets.at(0) += 1;
        *buckets.at(1) += 10;
        *buckets.at(1) += 10;
        *buckets.at(2) += 100;
        assert_eq!(buckets.within(2).sum::<u32>(), 121);
        assert_eq!(buckets.within(3).sum::<u32>(), 120, "second 0 left the window");
        assert_eq!(buckets.within(10).sum::<u32>(), 0);
    }

    #[test]
    fn a_shorter_look_back_than_kept() {
        let mut buckets: SecondBuckets<u32> = SecondBuckets::new(60);
        *buckets.at(1) += 1;
        *buckets.at(5) += 10;
        *buckets.at(9) += 100;
        assert_eq!(buckets.last(9, 5).sum::<u32>(), 110);
        assert_eq!(buckets.last(9, 1).sum::<u32>(), 100);
        assert_eq!(buckets.last(9, 60).sum::<u32>(), 111);
    }

    #[test]
    fn a_late_caller_adds_to_the_newest_bucket() {
        let mut buckets: SecondBuckets<u32> = SecondBuckets::new(5);
        *buckets.at(4) += 1;
        *buckets.at(3) += 1;
        assert_eq!(buckets.within(4).count(), 1);
        assert_eq!(buckets.within(4).sum::<u32>(), 2);
    }
}
