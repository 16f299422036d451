//! `[stage] max_messages_per_second`: a stage-wide token bucket, so that a
//! stage protects the service its handler calls.
//!
//! Every message handed to the plugin takes a token, a retry included (it
//! costs the service a call too). A worker waiting for tokens takes no new
//! messages, so its partition's queue fills and the consumer stops fetching
//! it: waiting is backpressure, never a failure, and the wait can always be
//! stopped. The bucket holds a tenth of a second's worth of tokens (at
//! least one), so a stage that was idle starts at the limit rather than
//! with a burst of a whole second.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::json;
use tokio::time::Instant;

use crate::observe::metrics::{RATE_LIMIT_PER_SECOND, RATE_LIMIT_WAIT_SECONDS, RATE_LIMITED_MESSAGES};

/// The window the current rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(5);

pub(crate) struct RateLimit {
    limiter: DefaultDirectRateLimiter,
    per_second: NonZeroU32,
    burst: NonZeroU32,
    recent: Mutex<RateWindow>,
    waited: Mutex<Duration>,
}

impl RateLimit {
    pub(crate) fn new(per_second: NonZeroU32) -> Self {
        let burst = NonZeroU32::new(per_second.get().div_ceil(10)).unwrap_or(NonZeroU32::MIN);
        RateLimit {
            limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            per_second,
            burst,
            recent: Mutex::new(RateWindow::new(RATE_WINDOW)),
            waited: Mutex::default(),
        }
    }

    /// Wait until `messages` may go to the plugin. A batch larger than the
    /// bucket is let through a bucketful at a time, so it waits as long as
    /// its messages would one by one.
    pub(crate) async fn admit(&self, messages: usize) {
        let started = Instant::now();
        let mut left = u32::try_from(messages).unwrap_or(u32::MAX);
        while let Some(wanted) = NonZeroU32::new(left.min(self.burst.get())) {
            // `wanted` never exceeds the bucket, so it is never refused.
            let _ = self.limiter.until_n_ready(wanted).await;
            left -= wanted.get();
        }
        let waited = started.elapsed();
        metrics::histogram!(RATE_LIMIT_WAIT_SECONDS).record(waited.as_secs_f64());
        metrics::counter!(RATE_LIMITED_MESSAGES).increment(messages as u64);
        // Set here, not at startup: the recorder may come after the stage.
        metrics::gauge!(RATE_LIMIT_PER_SECOND).set(f64::from(self.per_second.get()));
        *lock(&self.waited) += waited;
        lock(&self.recent).record(Instant::now(), messages as u64);
    }

    /// The limit, the rate over the last seconds and the time spent
    /// waiting, for `/stats`.
    pub(crate) fn report(&self) -> serde_json::Value {
        json!({
            "limit_per_second": self.per_second.get(),
            "current_per_second": (lock(&self.recent).per_second(Instant::now()) * 10.0).round() / 10.0,
            "waited_seconds": (lock(&self.waited).as_secs_f64() * 1000.0).round() / 1000.0,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Messages let through per second over a sliding window, in slots of a
/// tenth of the window.
#[derive(Debug)]
struct RateWindow {
    window: Duration,
    /// Count per slot, with the instant each slot started.
    slots: Vec<(Option<Instant>, u64)>,
}

const SLOTS: u32 = 10;

impl RateWindow {
    fn new(window: Duration) -> Self {
        RateWindow {
            window,
            slots: vec![(None, 0); SLOTS as usize],
        }
    }

    fn slot_length(&self) -> Duration {
        self.window / SLOTS
    }

    fn record(&mut self, now: Instant, messages: u64) {
        let slot_length = self.slot_length();
        let index = slot_index(now, slot_length);
        let slot = &mut self.slots[index];
        match slot.0 {
            Some(started) if now.saturating_duration_since(started) < slot_length => slot.1 += messages,
            _ => *slot = (Some(now), messages),
        }
    }

    fn per_second(&self, now: Instant) -> f64 {
        let counted: u64 = self
            .slots
            .iter()
            .filter(|(started, _)| started.is_some_and(|started| now.saturating_duration_since(started) < self.window))
            .map(|(_, count)| count)
            .sum();
        counted as f64 / self.window.as_secs_f64()
    }
}

/// Which slot `now` falls in, counting slots of `slot_length` from an
/// arbitrary but fixed origin.
fn slot_index(now: Instant, slot_length: Duration) -> usize {
    let origin = *ORIGIN.get_or_init(Instant::now);
    let since = now.saturating_duration_since(origin);
    ((since.as_nanos() / slot_length.as_nanos().max(1)) % u128::from(SLOTS)) as usize
}

static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_what_the_window_holds_per_second() {
        let start = Instant::now();
        let mut window = RateWindow::new(Duration::from_secs(5));
        for second in 0..5 {
            window.record(start + Duration::from_secs(second), 100);
        }
        assert_eq!(window.per_second(start + Duration::from_millis(4_900)), 100.0);
        // A minute later everything has left the window.
        assert_eq!(window.per_second(start + Duration::from_secs(65)), 0.0);
    }

    #[test]
    fn old_counts_leave_the_window_as_new_ones_arrive() {
        let start = Instant::now();
        let mut window = RateWindow::new(Duration::from_secs(5));
        window.record(start, 1_000);
        for tenth in 1..=60 {
            window.record(start + Duration::from_millis(100 * tenth), 10);
        }
        // At 6 s only the last five seconds' counts (10 every 100 ms) count.
        let rate = window.per_second(start + Duration::from_secs(6));
        assert!((rate - 100.0).abs() <= 10.0, "{rate}");
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_bucket_waits_as_its_messages_would_one_by_one() {
        let limit = RateLimit::new(NonZeroU32::new(1_000).unwrap());
        let started = std::time::Instant::now();
        // A bucket of 100: the first 100 at once, 200 more at 1,000 a second.
        limit.admit(300).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(190), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        let report = limit.report();
        assert_eq!(report["limit_per_second"], 1_000);
        assert_eq!(report["current_per_second"], 60.0, "300 over the 5 s window");
    }
}
