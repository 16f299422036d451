//! A partition worker's use of the dedup store: claim messages' keys
//! before the plugin, mark them done once their effects are durable, keep
//! the claims alive meanwhile, hold back copies whose key another worker
//! claimed, and wait out a store that cannot be reached.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

pub(crate) use super::claim_book::Screened;
use super::claim_book::{Answer, ClaimBook, FinishedAt, HeldClaims, Tally};
use super::counters::StageCounters;
use crate::config::{DedupSection, OnStoreError};
use crate::dedup::{ClaimHolder, DedupKey, DedupStore, Identifiable, KeyMaker, RenewOutcome};
use crate::observe::LogThrottle;
use crate::plugin::Message;

/// Waits between attempts while the store is unreachable: from the first
/// to the last, doubling.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(100);
const STORE_RETRY_LAST: Duration = Duration::from_secs(5);

/// Waits between asking again about keys another worker holds: from the
/// first to the last, doubling, each with jitter so that workers waiting
/// for one key do not ask in lockstep. Short at first, because the holder
/// usually marks the key done within one acknowledgement; capped so that
/// a claim that ran out (its holder died) is noticed within a second.
const CLAIM_CHECK_FIRST: Duration = Duration::from_millis(25);
const CLAIM_CHECK_LAST: Duration = Duration::from_secs(1);

/// At most one log line per this, per worker and kind: messages waiting
/// for another worker's claim, claims taken over, claims lost, failed
/// renewals. Each line says how many it stands for.
const CLAIM_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What every worker of a stage shares for deduplication.
pub(crate) struct Dedup {
    store: Arc<dyn DedupStore>,
    keys: KeyMaker,
    on_store_error: OnStoreError,
    /// How long a claim lasts unless renewed.
    claim_lease: Duration,
}

impl Dedup {
    pub(crate) fn new(stage: &str, config: &DedupSection, store: Arc<dyn DedupStore>) -> Self {
        Dedup {
            store,
            keys: KeyMaker::new(stage, config.key, config.header.as_deref()),
            on_store_error: config.on_store_error,
            claim_lease: Duration::from_millis(config.claim_lease_ms),
        }
    }
}

/// One worker's dedup state.
///
/// A message's key is claimed in the store before the message reaches the
/// plugin; only the worker that wins the claim handles it, and the claim
/// is renewed (every third of the lease, by a task of this screen) until
/// the done-mark replaces it. Within the partition, later copies of a key
/// in progress wait for its mark without asking the store. A copy whose
/// key another worker holds is neither handled nor finished: it waits
/// until the key is done (it is then finished as a duplicate) or the
/// claim runs out (it is then claimed and handled here).
///
/// Where a copy waits matters. A worker that holds claims must not stop to
/// wait for someone else's: two workers each holding the key the other
/// waits for would wait for ever, since each writes its marks only when
/// it moves on. So [`screen`](Self::screen) waits in place only while this
/// worker holds no claim (nobody can then be waiting for it) and has
/// nothing else to hand on; otherwise the copy is set aside, asked about
/// again with each later batch, and settled by
/// [`settle_waiting`](Self::settle_waiting), which the worker polls
/// alongside its other work.
pub(crate) struct DedupScreen {
    dedup: Arc<Dedup>,
    book: ClaimBook,
    holder: ClaimHolder,
    counters: Arc<StageCounters>,
    partition: String,
    /// Stops the task renewing this worker's claims. The task starts with
    /// the first screen, which runs on the stage's runtime (`new` may
    /// not), and stops when the screen is released or dropped.
    renewal: Option<DropGuard>,
    checks: WaitingChecks,
    wait_log: LogThrottle,
    takeover_log: LogThrottle,
}

impl DedupScreen {
    pub(crate) fn new(dedup: Arc<Dedup>, counters: Arc<StageCounters>, partition: String) -> Self {
        DedupScreen {
            dedup,
            book: ClaimBook::default(),
            holder: ClaimHolder::new(&partition),
            counters,
            partition,
            renewal: None,
            checks: WaitingChecks::new(),
            wait_log: LogThrottle::new(CLAIM_LOG_INTERVAL),
            takeover_log: LogThrottle::new(CLAIM_LOG_INTERVAL),
        }
    }

    /// Split `messages` into those to handle (their keys now claimed by
    /// this worker) and those already done, with one store round trip
    /// (which also asks again about keys earlier messages wait for, when
    /// due). Messages whose key another worker holds are kept back: if
    /// this worker then has nothing to hand on and holds no claim, this
    /// waits (with backoff) until they are settled; otherwise they are
    /// settled later, here or by [`settle_waiting`](Self::settle_waiting).
    /// `None` if told to stop first (the store unreachable, or waiting).
    pub(crate) async fn screen(&mut self, messages: Vec<Message>, stop: &CancellationToken) -> Option<Screened> {
        self.start_renewal();
        let keys: Vec<Option<DedupKey>> = messages
            .iter()
            .map(|message| self.dedup.keys.key_for(message))
            .collect();
        let recheck_waiting = self.book.has_waiting() && self.checks.is_due();
        let asked = self.book.keys_to_ask(&keys, recheck_waiting);
        let answers = self.claim(&asked, stop).await?;
        let (mut screened, mut tally) = self.book.apply(messages, keys, &asked, answers);
        if recheck_waiting {
            self.checks.asked();
        }
        self.note(&tally);
        while screened.to_handle.is_empty() && self.book.has_waiting() && self.book.holds_no_claims() {
            let (settled, settled_tally) = self.check_waiting(stop).await?;
            screened.append(settled);
            tally.add(settled_tally);
        }
        self.counters.deduplicated(tally.deduplicated);
        Some(screened)
    }

    /// Write the done-marks of these finished messages, with one store
    /// round trip (a mark replaces this worker's claim), and return the
    /// messages that waited on them (later copies in this partition, now
    /// finished too) as offsets with timestamps. `None` if told to stop
    /// before the marks were written: the messages then stay unfinished.
    pub(crate) async fn mark_done(
        &mut self,
        finished: &[&Message],
        stop: &CancellationToken,
    ) -> Option<Vec<FinishedAt>> {
        let keys: Vec<DedupKey> = finished
            .iter()
            .filter_map(|message| self.dedup.keys.key_for(*message))
            .collect();
        self.write_marks(&keys, stop).await?;
        let duplicates = self.book.marked_done(&keys);
        self.counters.deduplicated(duplicates.len() as u64);
        Some(duplicates)
    }

    fn start_renewal(&mut self) {
        if self.renewal.is_some() {
            return;
        }
        let stop = CancellationToken::new();
        let renewal = ClaimRenewal {
            store: self.dedup.store.clone(),
            holder: self.holder.clone(),
            lease: self.dedup.claim_lease,
            held: self.book.held().clone(),
            counters: self.counters.clone(),
            partition: self.partition.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(renewal.run());
        self.renewal = Some(stop.drop_guard());
    }

    /// Once due, ask again about every key messages wait for, and settle
    /// what can be settled.
    async fn check_waiting(&mut self, stop: &CancellationToken) -> Option<(Screened, Tally)> {
        tokio::select! {
            _ = tokio::time::sleep_until(self.checks.due) => {}
            _ = stop.cancelled() => return None,
        }
        let asked = self.book.waiting_keys();
        let answers = self.claim(&asked, stop).await?;
        let (settled, tally) = self.book.apply(Vec::new(), Vec::new(), &asked, answers);
        self.checks.asked();
        self.note(&tally);
        Some((settled, tally))
    }

    /// Count and log what claiming found: copies that start waiting for
    /// another worker, and waiting copies taken over after a claim ran out.
    fn note(&mut self, tally: &Tally) {
        if !tally.newly_waiting.is_empty() {
            self.counters.claim_waited(tally.newly_waiting.len() as u64);
            self.checks.restart();
        }
        for (key, holder, offset) in &tally.newly_waiting {
            if let Some(held_back) = self.wait_log.allow() {
                tracing::info!(partition = %self.partition, offset, key = %String::from_utf8_lossy(key.as_bytes()), %holder, held_back, "another worker holds this message's dedup key: the message waits for that worker's done-mark (or for its claim to run out) instead of being handled twice");
            }
        }
        for offset in &tally.taken_over {
            self.counters.claim_taken_over();
            if let Some(held_back) = self.takeover_log.allow() {
                tracing::warn!(partition = %self.partition, offset, held_back, "another worker's claim on a waiting message's dedup key ran out before the key was marked done (did that worker stop or die?): the message is handled here");
            }
        }
    }

    async fn claim(&self, keys: &[DedupKey], stop: &CancellationToken) -> Option<Vec<Answer>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let store = &self.dedup.store;
        let lease = self.dedup.claim_lease;
        let answer = self
            .until_reachable("claim keys", stop, || store.claim(keys, &self.holder, lease))
            .await?;
        Some(match answer {
            Some(outcomes) => outcomes.into_iter().map(Answer::Store).collect(),
            None => vec![Answer::Unguarded; keys.len()],
        })
    }

    async fn write_marks(&self, keys: &[DedupKey], stop: &CancellationToken) -> Option<()> {
        if keys.is_empty() {
            return Some(());
        }
        let store = &self.dedup.store;
        self.until_reachable("write done-marks", stop, || store.mark_done(keys))
            .await?;
        Some(())
    }

    /// Run `operation` until it succeeds, waiting with backoff between
    /// failures, or, with `on_store_error = "process"`, give up at once
    /// (`Some(None)`). `None` if told to stop first.
    async fn until_reachable<T, F>(
        &self,
        what: &str,
        stop: &CancellationToken,
        mut operation: impl FnMut() -> F,
    ) -> Option<Option<T>>
    where
        F: Future<Output = Result<T, crate::dedup::StoreError>>,
    {
        let mut wait = STORE_RETRY_FIRST;
        let mut failures = 0u32;
        loop {
            match operation().await {
                Ok(answer) => {
                    if failures > 0 {
                        tracing::info!(partition = %self.partition, store = %self.dedup.store.describe(), failures, "dedup store reachable again; resuming");
                    }
                    return Some(Some(answer));
                }
                Err(error) => {
                    self.counters.store_error();
                    if self.dedup.on_store_error == OnStoreError::Process {
                        tracing::warn!(partition = %self.partition, %error, "dedup store failed; handling without deduplication (on_store_error = \"process\")");
                        return Some(None);
                    }
                    if failures == 0 {
                        tracing::warn!(partition = %self.partition, store = %self.dedup.store.describe(), %error, "dedup store failed; the partition waits and retries until it answers (to {what})");
                    } else {
                        tracing::debug!(partition = %self.partition, %error, failures, "dedup store still failing");
                    }
                    failures += 1;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return None,
            }
            wait = (wait * 2).min(STORE_RETRY_LAST);
        }
    }
}

/// The calls a partition worker makes besides screening and marking:
/// settling copies set aside while it held claims (polled from its loop
/// while any wait), and releasing its claims when it stops (from its
/// drain; dropping the screen releases them too, best effort).
impl DedupScreen {
    /// Whether messages wait for keys other workers hold; while they do,
    /// the worker should poll [`settle_waiting`](Self::settle_waiting).
    pub(crate) fn has_waiting(&self) -> bool {
        self.book.has_waiting()
    }

    /// Wait (with backoff) until some messages waiting for other workers'
    /// keys are settled, and return them: to handle (the key's claim ran
    /// out and is now this worker's) or already done (duplicates, to
    /// finish with no outputs). Never resolves while none wait. `None` if
    /// told to stop first.
    ///
    /// Cancel-safe, for a `select!` in the worker's loop: the backoff lives
    /// in the screen, not in the future, and the book changes only after
    /// the store answered. A claim won by an answer that was dropped is
    /// this worker's token, so asking again claims it again.
    pub(crate) async fn settle_waiting(&mut self, stop: &CancellationToken) -> Option<Screened> {
        if !self.book.has_waiting() {
            return std::future::pending().await;
        }
        loop {
            let (settled, tally) = self.check_waiting(stop).await?;
            if !settled.is_empty() {
                self.counters.deduplicated(tally.deduplicated);
                return Some(settled);
            }
        }
    }

    /// The worker stops: release the claims it still holds (messages it
    /// did not finish; compare and delete, so only its own), so whoever
    /// handles those messages next does not wait out the lease, and stop
    /// renewing. Call after the last [`mark_done`](Self::mark_done).
    /// Messages waiting for other workers' keys stay unfinished. One store
    /// call, bounded by the store's timeout and not retried: a claim it
    /// cannot release runs out with its lease. Dropping the screen without
    /// this releases the claims from a spawned task instead.
    pub(crate) async fn release(&mut self) {
        self.renewal = None;
        let keys = self.book.give_up();
        release_claims(self.dedup.store.as_ref(), &keys, &self.holder, &self.partition).await;
    }
}

impl Drop for DedupScreen {
    /// A worker that ends without [`DedupScreen::release`] (it panicked,
    /// or its driver does not call it) still gives up its claims: from a
    /// task on the runtime it ran on. Renewal stops first, so it cannot
    /// report the released claims as lost.
    fn drop(&mut self) {
        drop(self.renewal.take());
        let keys = self.book.give_up();
        if keys.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(partition = %self.partition, claims = keys.len(), "no runtime to release claims on; they run out with their lease");
            return;
        };
        let store = self.dedup.store.clone();
        let holder = self.holder.clone();
        let partition = std::mem::take(&mut self.partition);
        runtime.spawn(async move { release_claims(store.as_ref(), &keys, &holder, &partition).await });
    }
}

async fn release_claims(store: &dyn DedupStore, keys: &[DedupKey], holder: &ClaimHolder, partition: &str) {
    if keys.is_empty() {
        return;
    }
    match store.release(keys, holder).await {
        Ok(released) => {
            tracing::debug!(
                partition,
                released,
                "released the claims of messages this worker did not finish"
            );
        }
        Err(error) => {
            tracing::warn!(partition, %error, claims = keys.len(), "could not release claims of unfinished messages: other workers wait until their leases run out");
        }
    }
}

/// Keeps a worker's claims alive while their messages are handled:
/// retries with backoff, a slow plugin or a slow broker can take longer
/// than one lease. A background task rather than a renewal at each step
/// of the worker, because the worker can sit in one step (a plugin call,
/// a backoff, a full producer queue) for longer than a lease, and a claim
/// must outlive all of them; one round trip per third of a lease for all
/// the worker's claims costs little.
struct ClaimRenewal {
    store: Arc<dyn DedupStore>,
    holder: ClaimHolder,
    lease: Duration,
    held: HeldClaims,
    counters: Arc<StageCounters>,
    partition: String,
    stop: CancellationToken,
}

impl ClaimRenewal {
    async fn run(self) {
        let period = self.lease / 3;
        // A failed renewal is tried again soon, so that one error does not
        // use up a third of the lease.
        let after_error = (self.lease / 10).min(Duration::from_secs(1));
        let mut lost_log = LogThrottle::new(CLAIM_LOG_INTERVAL);
        let mut error_log = LogThrottle::new(CLAIM_LOG_INTERVAL);
        let mut wait = period;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return,
            }
            wait = period;
            let keys = self.held.snapshot();
            if keys.is_empty() {
                continue;
            }
            let result = tokio::select! {
                biased;
                // Released meanwhile: whatever the answer says is stale.
                _ = self.stop.cancelled() => return,
                result = self.store.renew(&keys, &self.holder, self.lease) => result,
            };
            match result {
                Ok(outcomes) => {
                    let lost: Vec<DedupKey> = keys
                        .into_iter()
                        .zip(outcomes)
                        .filter(|(_, outcome)| *outcome == RenewOutcome::Lost)
                        .map(|(key, _)| key)
                        .collect();
                    let count = self.held.forget_lost(&lost);
                    if count > 0 {
                        self.counters.claims_lost(count);
                        if let Some(held_back) = lost_log.allow() {
                            tracing::warn!(partition = %self.partition, lost = count, held_back, lease = ?self.lease, "claims on dedup keys ran out or were taken over before their messages were finished: another worker may handle those messages too (a message taking longer than dedup.claim_lease_ms is fine; renewals failing for a whole lease, or Redis losing its data, is not)");
                        }
                    }
                }
                Err(error) => {
                    self.counters.store_error();
                    wait = after_error;
                    if let Some(held_back) = error_log.allow() {
                        tracing::warn!(partition = %self.partition, %error, claims = keys.len(), held_back, "could not renew claims on dedup keys; trying again");
                    }
                }
            }
        }
    }
}

/// When the keys messages wait for are next asked about.
struct WaitingChecks {
    due: Instant,
    /// The wait after the next check.
    next_wait: Duration,
}

impl WaitingChecks {
    fn new() -> Self {
        WaitingChecks {
            due: Instant::now(),
            next_wait: CLAIM_CHECK_FIRST,
        }
    }

    fn is_due(&self) -> bool {
        Instant::now() >= self.due
    }

    /// A key started waiting: check soon, as its holder is likely close to
    /// done.
    fn restart(&mut self) {
        self.due = Instant::now() + jittered(CLAIM_CHECK_FIRST);
        self.next_wait = CLAIM_CHECK_FIRST * 2;
    }

    /// The waiting keys were just asked about.
    fn asked(&mut self) {
        self.due = Instant::now() + jittered(self.next_wait);
        self.next_wait = (self.next_wait * 2).min(CLAIM_CHECK_LAST);
    }
}

/// `wait` give or take a quarter.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(rand::rng().random_range(0.75..=1.25))
}

impl Identifiable for Message {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn partition(&self) -> i32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|header| header.name == name)
            .map(|header| header.value.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DedupKeyKind;
    use crate::dedup::{ClaimOutcome, MemoryStore};
    use crate::plugin::Header;

    const PATIENCE: Duration = Duration::from_secs(5);

    fn store() -> Arc<MemoryStore> {
        Arc::new(MemoryStore::new(1000, Duration::from_secs(60)))
    }

    fn dedup(store: Arc<MemoryStore>, claim_lease: Duration) -> Arc<Dedup> {
        let config = DedupSection {
            key: DedupKeyKind::Header,
            header: Some("message-id".to_owned()),
            ttl_seconds: 60,
            on_store_error: OnStoreError::Pause,
            redis_url: None,
            redis_cluster: false,
            redis_timeout_ms: 1000,
            memory_capacity: 1000,
            claim_lease_ms: claim_lease.as_millis() as u64,
        };
        Arc::new(Dedup::new("s", &config, store))
    }

    fn worker(dedup: &Arc<Dedup>, partition: i32) -> (DedupScreen, Arc<StageCounters>) {
        let counters = Arc::new(StageCounters::default());
        let screen = DedupScreen::new(dedup.clone(), counters.clone(), format!("in/{partition}"));
        (screen, counters)
    }

    fn message(partition: i32, offset: i64, id: &str) -> Message {
        let mut message = Message::new("in", partition, offset, Some(b"v".to_vec()));
        message.headers.push(Header::new("message-id", id));
        message
    }

    fn key(dedup: &Dedup, id: &str) -> DedupKey {
        dedup.keys.key_for(&message(0, 0, id)).unwrap()
    }

    fn offsets(messages: &[Message]) -> Vec<i64> {
        messages.iter().map(|message| message.offset).collect()
    }

    fn done_offsets(finished: &[FinishedAt]) -> Vec<i64> {
        finished.iter().map(|(offset, _)| *offset).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_workers_seeing_one_message_at_once_hand_it_to_one_and_finish_the_other_with_its_mark() {
        let dedup = dedup(store(), Duration::from_secs(30));
        let stop = CancellationToken::new();
        let (mut first, _) = worker(&dedup, 0);
        let (mut second, second_counters) = worker(&dedup, 1);

        let winner = first.screen(vec![message(0, 10, "m-1")], &stop).await.unwrap();
        assert_eq!(offsets(&winner.to_handle), [10]);

        let waiter_stop = stop.clone();
        let waiter = tokio::spawn(async move {
            let screened = second.screen(vec![message(1, 20, "m-1")], &waiter_stop).await;
            (second, screened)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "the copy waits while the key is claimed");

        let handled = message(0, 10, "m-1");
        first.mark_done(&[&handled], &stop).await.unwrap();
        let (_second, screened) = tokio::time::timeout(PATIENCE, waiter).await.unwrap().unwrap();
        let screened = screened.unwrap();
        assert!(screened.to_handle.is_empty(), "the copy is not handled");
        assert_eq!(done_offsets(&screened.already_done), [20]);
        let counts = second_counters.snapshot();
        assert_eq!((counts.claim_waits, counts.deduplicated), (1, 1));
    }

    #[tokio::test]
    async fn a_claim_left_by_a_crashed_holder_is_taken_over_once_its_lease_runs_out() {
        let store = store();
        let dedup = dedup(store.clone(), Duration::from_secs(30));
        let crashed = ClaimHolder::new("in/9");
        let lease = Duration::from_millis(400);
        store.claim(&[key(&dedup, "m-1")], &crashed, lease).await.unwrap();
        let (mut screen, counters) = worker(&dedup, 0);

        let started = Instant::now();
        let screened = tokio::time::timeout(
            PATIENCE,
            screen.screen(vec![message(0, 5, "m-1")], &CancellationToken::new()),
        )
        .await
        .unwrap()
        .unwrap();

        assert!(
            started.elapsed() >= lease - Duration::from_millis(50),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(offsets(&screened.to_handle), [5]);
        let counts = counters.snapshot();
        assert_eq!((counts.claim_waits, counts.claim_takeovers), (1, 1));
        assert_eq!(
            store.claim(&[key(&dedup, "m-1")], &crashed, lease).await.unwrap(),
            [ClaimOutcome::HeldElsewhere(screen.holder.to_string())]
        );
    }

    #[tokio::test]
    async fn claims_are_renewed_while_their_messages_take_longer_than_a_lease() {
        let store = store();
        let lease = Duration::from_secs(1);
        let dedup = dedup(store.clone(), lease);
        let (mut screen, counters) = worker(&dedup, 0);
        screen
            .screen(vec![message(0, 1, "m-1")], &CancellationToken::new())
            .await
            .unwrap();

        tokio::time::sleep(lease * 3).await;
        let other = ClaimHolder::new("in/1");
        assert_eq!(
            store.claim(&[key(&dedup, "m-1")], &other, lease).await.unwrap(),
            [ClaimOutcome::HeldElsewhere(screen.holder.to_string())]
        );
        assert_eq!(counters.snapshot().claims_lost, 0);
    }

    #[tokio::test]
    async fn a_stopping_worker_releases_its_claims_at_once() {
        let store = store();
        let dedup = dedup(store.clone(), Duration::from_secs(30));
        let (mut released, _) = worker(&dedup, 0);
        let (mut dropped, _) = worker(&dedup, 1);
        let stop = CancellationToken::new();
        released.screen(vec![message(0, 1, "m-1")], &stop).await.unwrap();
        dropped.screen(vec![message(1, 1, "m-2")], &stop).await.unwrap();

        released.release().await;
        drop(dropped);
        tokio::time::sleep(Duration::from_millis(50)).await;

        let next_owner = ClaimHolder::new("in/0");
        let keys = [key(&dedup, "m-1"), key(&dedup, "m-2")];
        let answers = store.claim(&keys, &next_owner, Duration::from_secs(30)).await.unwrap();
        assert_eq!(answers, [ClaimOutcome::Claimed, ClaimOutcome::Claimed]);
    }

    #[tokio::test]
    async fn a_worker_holding_claims_sets_a_contested_copy_aside_instead_of_waiting_for_it() {
        // Each worker holds one key and then sees a copy of the other's:
        // waiting in the screen would leave both waiting for ever (each
        // marks its key only once it moves on), so both screens return at
        // once and the copies are settled afterwards.
        let dedup = dedup(store(), Duration::from_secs(30));
        let stop = CancellationToken::new();
        let (mut left, _) = worker(&dedup, 0);
        let (mut right, _) = worker(&dedup, 1);
        let a = message(0, 1, "a");
        let b = message(1, 1, "b");
        left.screen(vec![a.clone()], &stop).await.unwrap();
        right.screen(vec![b.clone()], &stop).await.unwrap();

        let crossed = async {
            let left_copy = left.screen(vec![message(0, 2, "b")], &stop).await.unwrap();
            let right_copy = right.screen(vec![message(1, 2, "a")], &stop).await.unwrap();
            (left_copy, right_copy)
        };
        let (left_copy, right_copy) = tokio::time::timeout(PATIENCE, crossed).await.unwrap();
        assert!(left_copy.is_empty() && right_copy.is_empty());
        assert!(left.has_waiting() && right.has_waiting());

        left.mark_done(&[&a], &stop).await.unwrap();
        right.mark_done(&[&b], &stop).await.unwrap();
        let settled = tokio::time::timeout(PATIENCE, left.settle_waiting(&stop))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done_offsets(&settled.already_done), [2]);
        let settled = tokio::time::timeout(PATIENCE, right.settle_waiting(&stop))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done_offsets(&settled.already_done), [2]);
        assert!(!left.has_waiting() && !right.has_waiting());
    }

    #[tokio::test]
    async fn a_copy_set_aside_is_settled_by_the_next_screen_too() {
        let dedup = dedup(store(), Duration::from_secs(30));
        let stop = CancellationToken::new();
        let (mut holder, _) = worker(&dedup, 0);
        let (mut other, _) = worker(&dedup, 1);
        let a = message(0, 1, "a");
        holder.screen(vec![a.clone()], &stop).await.unwrap();
        other.screen(vec![message(1, 1, "b")], &stop).await.unwrap();
        other.screen(vec![message(1, 2, "a")], &stop).await.unwrap();
        holder.mark_done(&[&a], &stop).await.unwrap();

        tokio::time::sleep(CLAIM_CHECK_FIRST * 3).await;
        let screened = other.screen(vec![message(1, 3, "c")], &stop).await.unwrap();
        assert_eq!(offsets(&screened.to_handle), [3]);
        assert_eq!(done_offsets(&screened.already_done), [2]);
        assert!(!other.has_waiting());
    }

    #[tokio::test]
    async fn waiting_stops_when_told_to_stop() {
        let store = store();
        let dedup = dedup(store.clone(), Duration::from_secs(30));
        store
            .claim(
                &[key(&dedup, "m-1")],
                &ClaimHolder::new("in/9"),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        let (mut screen, _) = worker(&dedup, 0);
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stopper.cancel();
        });
        let screened = tokio::time::timeout(PATIENCE, screen.screen(vec![message(0, 1, "m-1")], &stop))
            .await
            .unwrap();
        assert!(screened.is_none());
    }

    #[test]
    fn checks_on_waiting_keys_back_off_up_to_a_cap() {
        let mut checks = WaitingChecks::new();
        checks.restart();
        let mut waits = Vec::new();
        for _ in 0..10 {
            waits.push(checks.next_wait);
            checks.asked();
        }
        assert_eq!(waits[0], CLAIM_CHECK_FIRST * 2);
        assert!(waits.windows(2).all(|pair| pair[1] >= pair[0]));
        assert_eq!(*waits.last().unwrap(), CLAIM_CHECK_LAST);
    }
}
