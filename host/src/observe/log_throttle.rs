//! Repeated warnings, rate-limited: a failure that recurs thousands of
//! times a second must not bury the log (or the disk) under copies of one
//! line, yet the first occurrence and the count of the rest must show.

use std::time::{Duration, Instant};

/// One kind of repeated warning from one source (say, delivery failures of
/// one partition). Not shared: each source keeps its own.
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    last_logged: Option<Instant>,
    held_back: u64,
}

impl LogThrottle {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            last_logged: None,
            held_back: 0,
        }
    }

    /// Whether this occurrence should be logged: `Some(n)` with the number
    /// held back since the last logged one, `None` to stay quiet.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> Option<u64> {
        match self.last_logged {
            Some(last) if now.duration_since(last) < self.interval => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last_logged = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::LogThrottle;

    #[test]
    fn the_first_passes_then_one_per_interval_with_the_count_held_back() {
        let mut throttle = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.allow_at(start), Some(0));
        for second in 1..10 {
            assert_eq!(throttle.allow_at(start + Duration::from_secs(second)), None);
        }
        assert_eq!(throttle.allow_at(start + Duration::from_secs(10)), Some(9));
        assert_eq!(throttle.allow_at(start + Duration::from_secs(11)), None);
    }
}
