//! Claims and done-marks in this process's memory: for the embedded
//! quickstart and stages without Redis. They do not survive a restart and
//! are not shared with other hosts of the group; within the process, the
//! workers of all partitions share them, so a message seen on two
//! partitions at once is handled once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use moka::sync::Cache;

use super::claim::{ClaimHolder, ClaimOutcome, RenewOutcome};
use super::key::DedupKey;
use super::store::{DedupStore, StoreError};

/// Done-marks are bounded (the least recently used keys go first) and
/// expiring. Claims are few (one per message being handled) and live in a
/// table of their own, so the marks' bound never evicts a live claim.
pub struct MemoryStore {
    marks: Cache<DedupKey, ()>,
    /// Every change to a claim, and every done-mark written, happens under
    /// this lock: that is what makes claiming a key (check for a mark,
    /// check for a live claim, take it) one atomic step.
    claims: Mutex<ClaimTable>,
    capacity: u64,
    ttl: Duration,
}

/// Live claims, and claims whose lease ran out but that nobody touched
/// since (dropped the next time the table grows).
struct ClaimTable {
    claims: HashMap<DedupKey, LiveClaim>,
    /// Sweep expired claims once the table holds this many.
    sweep_at: usize,
}

struct LiveClaim {
    holder: ClaimHolder,
    expires: Instant,
}

/// The table is swept no more often than when it reaches this size.
const FIRST_SWEEP_AT: usize = 1024;

impl ClaimTable {
    /// Sweep expired claims when the table has grown, so claims left by a
    /// worker that stopped without releasing them do not pile up.
    fn sweep_if_grown(&mut self, now: Instant) {
        if self.claims.len() >= self.sweep_at {
            self.claims.retain(|_, claim| claim.expires > now);
            self.sweep_at = (self.claims.len() * 2).max(FIRST_SWEEP_AT);
        }
    }

    /// The live claim on `key`, if any.
    fn live(&self, key: &DedupKey, now: Instant) -> Option<&LiveClaim> {
        self.claims.get(key).filter(|claim| claim.expires > now)
    }
}

impl MemoryStore {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        MemoryStore {
            marks: Cache::builder().max_capacity(capacity).time_to_live(ttl).build(),
            claims: Mutex::new(ClaimTable {
                claims: HashMap::new(),
                sweep_at: FIRST_SWEEP_AT,
            }),
            capacity,
            ttl,
        }
    }

    fn claim_table(&self) -> std::sync::MutexGuard<'_, ClaimTable> {
        // A panic while holding the lock cannot leave the table half
        // changed (each step is one map operation), so a poisoned lock is
        // still a consistent table.
        self.claims.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn claim_now(&self, keys: &[DedupKey], holder: &ClaimHolder, lease: Duration) -> Vec<ClaimOutcome> {
        let now = Instant::now();
        let mut table = self.claim_table();
        table.sweep_if_grown(now);
        keys.iter()
            .map(|key| {
                if self.marks.contains_key(key) {
                    return ClaimOutcome::Done;
                }
                match table.live(key, now) {
                    Some(claim) if claim.holder != *holder => ClaimOutcome::HeldElsewhere(claim.holder.to_string()),
                    _ => {
                        table.claims.insert(
                            key.clone(),
                            LiveClaim {
                                holder: holder.clone(),
                                expires: now + lease,
                            },
                        );
                        ClaimOutcome::Claimed
                    }
                }
            })
            .collect()
    }

    fn renew_now(&self, keys: &[DedupKey], holder: &ClaimHolder, lease: Duration) -> Vec<RenewOutcome> {
        let now = Instant::now();
        let mut table = self.claim_table();
        keys.iter()
            .map(|key| {
                if self.marks.contains_key(key) {
                    return RenewOutcome::Done;
                }
                match table.claims.get_mut(key) {
                    Some(claim) if claim.holder == *holder && claim.expires > now => {
                        claim.expires = now + lease;
                        RenewOutcome::Renewed
                    }
                    _ => RenewOutcome::Lost,
                }
            })
            .collect()
    }

    fn release_now(&self, keys: &[DedupKey], holder: &ClaimHolder) -> u64 {
        let now = Instant::now();
        let mut table = self.claim_table();
        let mut released = 0;
        for key in keys {
            if table.live(key, now).is_some_and(|claim| claim.holder == *holder) {
                table.claims.remove(key);
                released += 1;
            }
        }
        released
    }

    fn mark_done_now(&self, keys: &[DedupKey]) {
        let mut table = self.claim_table();
        for key in keys {
            self.marks.insert(key.clone(), ());
            table.claims.remove(key);
        }
    }
}

impl DedupStore for MemoryStore {
    fn done<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        let answers = keys.iter().map(|key| self.marks.contains_key(key)).collect();
        Box::pin(std::future::ready(Ok(answers)))
    }

    fn claim<'a>(
        &'a self,
        keys: &'a [DedupKey],
        holder: &'a ClaimHolder,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<ClaimOutcome>, StoreError>> {
        Box::pin(std::future::ready(Ok(self.claim_now(keys, holder, lease))))
    }

    fn renew<'a>(
        &'a self,
        keys: &'a [DedupKey],
        holder: &'a ClaimHolder,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<RenewOutcome>, StoreError>> {
        Box::pin(std::future::ready(Ok(self.renew_now(keys, holder, lease))))
    }

    fn release<'a>(&'a self, keys: &'a [DedupKey], holder: &'a ClaimHolder) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(std::future::ready(Ok(self.release_now(keys, holder))))
    }

    fn mark_done<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<(), StoreError>> {
        self.mark_done_now(keys);
        Box::pin(std::future::ready(Ok(())))
    }

    fn forget<'a>(&'a self, keys: &'a [DedupKey]) -> BoxFuture<'a, Result<u64, StoreError>> {
        let forgotten = keys.iter().filter(|key| self.marks.remove(*key).is_some()).count();
        Box::pin(std::future::ready(Ok(forgotten as u64)))
    }

    fn describe(&self) -> String {
        format!(
            "memory (this process only; up to {} keys for {})",
            self.capacity,
            humantime::format_duration(self.ttl)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DedupKeyKind;
    use crate::dedup::KeyMaker;
    use crate::plugin::Message;

    /// A message with this Kafka key and nothing else.
    fn keyed(key: &[u8]) -> Message {
        Message {
            key: Some(key.to_vec()),
            ..Message::new("t", 0, 0, None)
        }
    }

    fn keys(names: &[&'static [u8]]) -> Vec<DedupKey> {
        let maker = KeyMaker::new("s", DedupKeyKind::MessageKey, None);
        names.iter().map(|name| maker.key_for(&keyed(name)).unwrap()).collect()
    }

    #[tokio::test]
    async fn marked_keys_are_done_and_others_are_not() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        store.mark_done(&keys(&[b"a", b"c"])).await.unwrap();
        let done = store.done(&keys(&[b"a", b"b", b"c"])).await.unwrap();
        assert_eq!(done, [true, false, true]);
    }

    #[tokio::test]
    async fn forgotten_keys_are_no_longer_done() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        store.mark_done(&keys(&[b"a", b"b"])).await.unwrap();
        assert_eq!(store.forget(&keys(&[b"a", b"c"])).await.unwrap(), 1);
        let done = store.done(&keys(&[b"a", b"b", b"c"])).await.unwrap();
        assert_eq!(done, [false, true, false]);
        assert_eq!(store.forget(&[]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn marks_expire_after_their_ttl() {
        let store = MemoryStore::new(100, Duration::from_millis(50));
        store.mark_done(&keys(&[b"a"])).await.unwrap();
        assert_eq!(store.done(&keys(&[b"a"])).await.unwrap(), [true]);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(store.done(&keys(&[b"a"])).await.unwrap(), [false]);
    }

    #[tokio::test]
    async fn the_store_stays_within_its_capacity() {
        let store = MemoryStore::new(10, Duration::from_secs(60));
        let many: Vec<DedupKey> = (0..1000)
            .map(|n| {
                KeyMaker::new("s", DedupKeyKind::Coordinates, None)
                    .key_for(&Message::new("t", 0, n, None))
                    .unwrap()
            })
            .collect();
        store.mark_done(&many).await.unwrap();
        store.marks.run_pending_tasks();
        assert!(store.marks.entry_count() <= 10, "{} entries", store.marks.entry_count());
    }

    const LEASE: Duration = Duration::from_secs(60);

    fn holders() -> (ClaimHolder, ClaimHolder) {
        (ClaimHolder::new("in/0"), ClaimHolder::new("in/1"))
    }

    #[tokio::test]
    async fn the_first_claim_wins_and_a_second_holder_is_refused() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let (first, second) = holders();
        let key = keys(&[b"a"]);
        assert_eq!(store.claim(&key, &first, LEASE).await.unwrap(), [ClaimOutcome::Claimed]);
        assert_eq!(
            store.claim(&key, &second, LEASE).await.unwrap(),
            [ClaimOutcome::HeldElsewhere(first.to_string())]
        );
        assert_eq!(
            store.claim(&key, &first, LEASE).await.unwrap(),
            [ClaimOutcome::Claimed],
            "claiming again as the holder is not refused"
        );
        assert_eq!(store.done(&key).await.unwrap(), [false], "a claim is not a done-mark");
    }

    #[tokio::test]
    async fn the_done_mark_replaces_the_claim() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let (first, second) = holders();
        let key = keys(&[b"a"]);
        store.claim(&key, &first, LEASE).await.unwrap();
        store.mark_done(&key).await.unwrap();
        assert_eq!(store.claim(&key, &second, LEASE).await.unwrap(), [ClaimOutcome::Done]);
        assert_eq!(store.claim(&key, &first, LEASE).await.unwrap(), [ClaimOutcome::Done]);
        assert_eq!(store.renew(&key, &first, LEASE).await.unwrap(), [RenewOutcome::Done]);
        assert_eq!(
            store.release(&key, &first).await.unwrap(),
            0,
            "a done-mark is not released"
        );
        assert_eq!(store.done(&key).await.unwrap(), [true]);
    }

    #[tokio::test]
    async fn an_expired_claim_can_be_taken_and_its_holder_has_lost_it() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let (crashed, waiting) = holders();
        let key = keys(&[b"a"]);
        let short = Duration::from_millis(50);
        store.claim(&key, &crashed, short).await.unwrap();
        assert!(matches!(
            store.claim(&key, &waiting, LEASE).await.unwrap()[0],
            ClaimOutcome::HeldElsewhere(_)
        ));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            store.claim(&key, &waiting, LEASE).await.unwrap(),
            [ClaimOutcome::Claimed]
        );
        assert_eq!(store.renew(&key, &crashed, LEASE).await.unwrap(), [RenewOutcome::Lost]);
        assert_eq!(
            store.renew(&key, &waiting, LEASE).await.unwrap(),
            [RenewOutcome::Renewed]
        );
    }

    #[tokio::test]
    async fn renewing_keeps_a_claim_past_its_first_lease() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let (holder, other) = holders();
        let key = keys(&[b"a"]);
        let lease = Duration::from_millis(500);
        store.claim(&key, &holder, lease).await.unwrap();
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(
                store.renew(&key, &holder, lease).await.unwrap(),
                [RenewOutcome::Renewed]
            );
        }
        assert!(matches!(
            store.claim(&key, &other, LEASE).await.unwrap()[0],
            ClaimOutcome::HeldElsewhere(_)
        ));
        assert_eq!(store.renew(&key, &other, lease).await.unwrap(), [RenewOutcome::Lost]);
    }

    #[tokio::test]
    async fn only_the_holder_releases_its_claim() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let (holder, other) = holders();
        let key = keys(&[b"a"]);
        store.claim(&key, &holder, LEASE).await.unwrap();
        assert_eq!(store.release(&key, &other).await.unwrap(), 0);
        assert!(matches!(
            store.claim(&key, &other, LEASE).await.unwrap()[0],
            ClaimOutcome::HeldElsewhere(_)
        ));
        assert_eq!(store.release(&key, &holder).await.unwrap(), 1);
        assert_eq!(store.claim(&key, &other, LEASE).await.unwrap(), [ClaimOutcome::Claimed]);
    }

    #[tokio::test]
    async fn forgetting_clears_done_marks_but_not_claims() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let (holder, other) = holders();
        store.claim(&keys(&[b"a"]), &holder, LEASE).await.unwrap();
        store.mark_done(&keys(&[b"b"])).await.unwrap();
        assert_eq!(store.forget(&keys(&[b"a", b"b"])).await.unwrap(), 1);
        assert_eq!(
            store.claim(&keys(&[b"a", b"b"]), &other, LEASE).await.unwrap(),
            [ClaimOutcome::HeldElsewhere(holder.to_string()), ClaimOutcome::Claimed]
        );
    }

    #[test]
    fn claims_from_many_threads_at_once_have_one_winner_per_key() {
        let store = std::sync::Arc::new(MemoryStore::new(100, Duration::from_secs(60)));
        let key = keys(&[b"contested"]);
        let winners: usize = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|n| {
                    let store = store.clone();
                    let key = key.clone();
                    scope.spawn(move || {
                        let holder = ClaimHolder::new(&format!("in/{n}"));
                        store.claim_now(&key, &holder, LEASE) == [ClaimOutcome::Claimed]
                    })
                })
                .collect();
            racers
                .into_iter()
                .filter_map(|racer| racer.join().ok())
                .filter(|won| *won)
                .count()
        });
        assert_eq!(winners, 1);
    }

    #[test]
    fn expired_claims_are_swept_once_the_table_grows() {
        let store = MemoryStore::new(100, Duration::from_secs(60));
        let holder = ClaimHolder::new("in/0");
        let many: Vec<DedupKey> = (0..FIRST_SWEEP_AT as i64)
            .map(|n| {
                KeyMaker::new("s", DedupKeyKind::Coordinates, None)
                    .key_for(&Message::new("t", 0, n, None))
                    .unwrap()
            })
            .collect();
        store.claim_now(&many, &holder, Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(30));
        store.claim_now(&keys(&[b"a"]), &holder, LEASE);
        assert_eq!(store.claim_table().claims.len(), 1);
    }
}
