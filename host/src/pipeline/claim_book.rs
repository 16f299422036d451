//! One partition worker's book of dedup keys: which it is handling, which
//! it holds claims on, and which messages wait because another worker
//! holds their key. Pure bookkeeping, no I/O: [`DedupScreen`] asks the
//! store and feeds the answers in here, so every decision can be tested on
//! its own.
//!
//! [`DedupScreen`]: super::dedup_screen::DedupScreen

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::dedup::{ClaimOutcome, DedupKey};
use crate::plugin::Message;

/// A finished message, as the worker needs it: offset and the record's
/// timestamp.
pub(crate) type FinishedAt = (i64, Option<i64>);

/// The outcome of screening a batch, or of settling waiting messages.
#[derive(Debug, Default)]
pub(crate) struct Screened {
    /// For the plugin, in order.
    pub(crate) to_handle: Vec<Message>,
    /// Already done: finish these now, with no outputs. Offsets with
    /// their records' timestamps.
    pub(crate) already_done: Vec<FinishedAt>,
}

impl Screened {
    pub(crate) fn is_empty(&self) -> bool {
        self.to_handle.is_empty() && self.already_done.is_empty()
    }

    pub(crate) fn append(&mut self, mut other: Screened) {
        self.to_handle.append(&mut other.to_handle);
        self.already_done.append(&mut other.already_done);
    }
}

/// What the store said about one key; `Unguarded` when it could not be
/// asked and the stage is configured to handle messages anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Store(ClaimOutcome),
    Unguarded,
}

/// What applying answers changed, for counters and logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Messages finished as duplicates (their key was done).
    pub(crate) deduplicated: u64,
    /// Keys newly found claimed by another worker, with that worker's
    /// token and the offset of the first message that waits for it.
    pub(crate) newly_waiting: Vec<(DedupKey, String, i64)>,
    /// Waiting messages whose key turned out free (the holder's claim ran
    /// out) and is now claimed here: their offsets.
    pub(crate) taken_over: Vec<i64>,
}

impl Tally {
    pub(crate) fn add(&mut self, mut other: Tally) {
        self.deduplicated += other.deduplicated;
        self.newly_waiting.append(&mut other.newly_waiting);
        self.taken_over.append(&mut other.taken_over);
    }
}

/// The keys a worker holds claims on, shared with the task that renews
/// them. A key leaves the set when its done-mark is written, when the
/// claim is released, or when a renewal finds it lost.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeldClaims(Arc<Mutex<HashSet<DedupKey>>>);

impl HeldClaims {
    fn lock(&self) -> MutexGuard<'_, HashSet<DedupKey>> {
        // Every change is one set operation, so a panic elsewhere while
        // the lock was held cannot have left the set half changed.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn snapshot(&self) -> Vec<DedupKey> {
        self.lock().iter().cloned().collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Drop these keys (their claims were found lost); returns how many
    /// were still held, so a key marked done meanwhile is not counted.
    pub(crate) fn forget_lost(&self, lost: &[DedupKey]) -> u64 {
        let mut held = self.lock();
        lost.iter().filter(|key| held.remove(*key)).count() as u64
    }

    fn insert(&self, key: DedupKey) {
        self.lock().insert(key);
    }

    fn remove(&self, key: &DedupKey) {
        self.lock().remove(key);
    }

    fn take_all(&self) -> Vec<DedupKey> {
        self.lock().drain().collect()
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct ClaimBook {
    /// Keys this worker is handling, from the moment the first message
    /// with the key passes the screen until its done-mark is written: its
    /// own claims, and (with the store unreachable and `on_store_error =
    /// "process"`) unguarded keys. Later messages of this partition with
    /// the same key wait here, without a store round trip, and are
    /// finished with the mark. Offsets with timestamps.
    in_progress: HashMap<DedupKey, Vec<FinishedAt>>,
    held: HeldClaims,
    /// Messages whose key another worker holds, by key, in the order they
    /// arrived. Neither handled nor finished until the key is done (then
    /// they are duplicates) or its claim runs out (then the first is
    /// claimed and handled here, the rest wait for it).
    waiting: HashMap<DedupKey, Vec<Message>>,
}

impl ClaimBook {
    pub(crate) fn held(&self) -> &HeldClaims {
        &self.held
    }

    /// Whether some messages wait for another worker's key.
    pub(crate) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    pub(crate) fn waiting_keys(&self) -> Vec<DedupKey> {
        self.waiting.keys().cloned().collect()
    }

    /// Whether this worker holds no claim: then nobody can be waiting for
    /// it, and it may wait for another worker's key without risking a
    /// cycle of workers each waiting for the other's mark.
    pub(crate) fn holds_no_claims(&self) -> bool {
        self.held.is_empty()
    }

    /// The keys to ask the store about for a batch with these keys: each
    /// new key once (not those in progress here, whose later copies wait
    /// without a round trip, nor those already waiting), then, when
    /// `with_waiting`, the keys messages are waiting for, so they are asked
    /// about again in the same round trip.
    pub(crate) fn keys_to_ask(&self, keys: &[Option<DedupKey>], with_waiting: bool) -> Vec<DedupKey> {
        let mut seen = HashSet::new();
        let new_keys = keys
            .iter()
            .flatten()
            .filter(|key| !self.in_progress.contains_key(*key) && !self.waiting.contains_key(*key))
            .filter(|key| seen.insert(*key))
            .cloned();
        let waiting = self.waiting.keys().filter(|_| with_waiting).cloned();
        new_keys.chain(waiting).collect()
    }

    /// Apply the store's answers for `asked` (answers in the same order)
    /// to the waiting messages first, then to `messages` (with their
    /// `keys`) in order. A message without a key is handled unguarded.
    pub(crate) fn apply(
        &mut self,
        messages: Vec<Message>,
        keys: Vec<Option<DedupKey>>,
        asked: &[DedupKey],
        answers: Vec<Answer>,
    ) -> (Screened, Tally) {
        debug_assert_eq!(asked.len(), answers.len(), "one answer per key asked");
        let answers: HashMap<&DedupKey, Answer> = asked.iter().zip(answers).collect();
        let (mut screened, mut tally) = self.settle_waiting(&answers);
        for (message, key) in messages.into_iter().zip(keys) {
            let Some(key) = key else {
                screened.to_handle.push(message);
                continue;
            };
            if let Some(later_copies) = self.in_progress.get_mut(&key) {
                later_copies.push((message.offset, message.timestamp_ms));
                continue;
            }
            if let Some(copies) = self.waiting.get_mut(&key) {
                copies.push(message);
                continue;
            }
            match answers.get(&key) {
                Some(Answer::Store(ClaimOutcome::Done)) => {
                    tally.deduplicated += 1;
                    screened.already_done.push((message.offset, message.timestamp_ms));
                }
                Some(Answer::Store(ClaimOutcome::HeldElsewhere(holder))) => {
                    tally.newly_waiting.push((key.clone(), holder.clone(), message.offset));
                    self.waiting.insert(key, vec![message]);
                }
                Some(Answer::Store(ClaimOutcome::Claimed)) => {
                    self.held.insert(key.clone());
                    self.in_progress.insert(key, Vec::new());
                    screened.to_handle.push(message);
                }
                Some(Answer::Unguarded) | None => {
                    // `None` cannot happen (every new key is asked about);
                    // handling unguarded is the safe side: never finish a
                    // message that was not handled.
                    self.in_progress.insert(key, Vec::new());
                    screened.to_handle.push(message);
                }
            }
        }
        (screened, tally)
    }

    /// Waiting messages whose key has an answer: done (all are
    /// duplicates), claimed here or unguarded (the first is handled, the
    /// rest wait for it as later copies), or still held elsewhere (they
    /// keep waiting). Handled ones come first, in offset order, as they
    /// arrived before anything in the current batch.
    fn settle_waiting(&mut self, answers: &HashMap<&DedupKey, Answer>) -> (Screened, Tally) {
        let mut screened = Screened::default();
        let mut tally = Tally::default();
        let settled: Vec<DedupKey> = self
            .waiting
            .keys()
            .filter(|key| {
                answers
                    .get(*key)
                    .is_some_and(|answer| !matches!(answer, Answer::Store(ClaimOutcome::HeldElsewhere(_))))
            })
            .cloned()
            .collect();
        for key in settled {
            let copies = self.waiting.remove(&key).expect("settled keys are waiting");
            match &answers[&key] {
                Answer::Store(ClaimOutcome::Done) => {
                    tally.deduplicated += copies.len() as u64;
                    screened
                        .already_done
                        .extend(copies.iter().map(|message| (message.offset, message.timestamp_ms)));
                }
                answer => {
                    let mut copies = copies.into_iter();
                    let first = copies.next().expect("a waiting key has a message");
                    if matches!(answer, Answer::Store(ClaimOutcome::Claimed)) {
                        self.held.insert(key.clone());
                        tally.taken_over.push(first.offset);
                    }
                    let later = copies.map(|message| (message.offset, message.timestamp_ms)).collect();
                    self.in_progress.insert(key, later);
                    screened.to_handle.push(first);
                }
            }
        }
        screened.to_handle.sort_by_key(|message| message.offset);
        (screened, tally)
    }

    /// These keys' done-marks are written: they are no longer in progress
    /// or held. Returns the later copies that waited for them, now
    /// finished as duplicates.
    pub(crate) fn marked_done(&mut self, keys: &[DedupKey]) -> Vec<FinishedAt> {
        let mut duplicates = Vec::new();
        for key in keys {
            self.held.remove(key);
            if let Some(later_copies) = self.in_progress.remove(key) {
                duplicates.extend(later_copies);
            }
        }
        duplicates
    }

    /// The worker stops: forget everything, and return the keys whose
    /// claims should be released. Those held, and those messages were
    /// waiting for: a claim attempt on one of them whose answer never
    /// arrived (the worker was interrupted) may have left a claim of ours
    /// behind; releasing compares the holder, so it never touches
    /// another worker's claim.
    pub(crate) fn give_up(&mut self) -> Vec<DedupKey> {
        let mut keys = self.held.take_all();
        keys.extend(self.waiting.drain().map(|(key, _)| key));
        self.in_progress.clear();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DedupKeyKind;
    use crate::dedup::KeyMaker;

    fn message(offset: i64, id: Option<&str>) -> Message {
        let mut message = Message::new("in", 0, offset, Some(b"v".to_vec()));
        if let Some(id) = id {
            message.headers.push(crate::plugin::Header::new("message-id", id));
        }
        message
    }

    fn key(id: &str) -> DedupKey {
        KeyMaker::new("s", DedupKeyKind::Header, Some("message-id"))
            .key_for(&message(0, Some(id)))
            .unwrap()
    }

    /// A batch of messages with these ids (`None`: no id), offsets from
    /// `first`, as the screen would pass it in.
    fn batch(first: i64, ids: &[Option<&str>]) -> (Vec<Message>, Vec<Option<DedupKey>>) {
        let messages: Vec<Message> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| message(first + n as i64, *id))
            .collect();
        let keys = ids.iter().map(|id| id.map(key)).collect();
        (messages, keys)
    }

    fn offsets(messages: &[Message]) -> Vec<i64> {
        messages.iter().map(|message| message.offset).collect()
    }

    fn done_offsets(finished: &[FinishedAt]) -> Vec<i64> {
        finished.iter().map(|(offset, _)| *offset).collect()
    }

    fn held_elsewhere() -> Answer {
        Answer::Store(ClaimOutcome::HeldElsewhere("claim:other".to_owned()))
    }

    const CLAIMED: Answer = Answer::Store(ClaimOutcome::Claimed);
    const DONE: Answer = Answer::Store(ClaimOutcome::Done);

    #[test]
    fn each_new_key_is_asked_once_and_keys_in_progress_not_at_all() {
        let mut book = ClaimBook::default();
        let (messages, keys) = batch(0, &[Some("a")]);
        let asked = book.keys_to_ask(&keys, true);
        book.apply(messages, keys, &asked, vec![CLAIMED]);

        let (_, keys) = batch(1, &[Some("a"), Some("b"), None, Some("b"), Some("c")]);
        assert_eq!(book.keys_to_ask(&keys, true), [key("b"), key("c")]);
    }

    #[test]
    fn claimed_keys_are_handled_done_keys_finished_and_keyless_messages_handled() {
        let mut book = ClaimBook::default();
        let (messages, keys) = batch(0, &[Some("a"), Some("b"), None]);
        let asked = book.keys_to_ask(&keys, true);
        let (screened, tally) = book.apply(messages, keys, &asked, vec![CLAIMED, DONE]);

        assert_eq!(offsets(&screened.to_handle), [0, 2]);
        assert_eq!(done_offsets(&screened.already_done), [1]);
        assert_eq!(tally.deduplicated, 1);
        assert_eq!(book.held().snapshot(), [key("a")]);
    }

    #[test]
    fn a_later_copy_in_the_same_partition_waits_for_the_first_and_finishes_with_its_mark() {
        let mut book = ClaimBook::default();
        let (messages, keys) = batch(0, &[Some("a"), Some("a")]);
        let asked = book.keys_to_ask(&keys, true);
        assert_eq!(asked, [key("a")]);
        let (screened, _) = book.apply(messages, keys, &asked, vec![CLAIMED]);
        assert_eq!(offsets(&screened.to_handle), [0]);
        assert!(
            screened.already_done.is_empty(),
            "the copy is not finished before the mark"
        );

        assert_eq!(done_offsets(&book.marked_done(&[key("a")])), [1]);
        assert!(book.holds_no_claims());
    }

    #[test]
    fn a_copy_whose_key_another_worker_holds_is_neither_handled_nor_finished() {
        let mut book = ClaimBook::default();
        let (messages, keys) = batch(0, &[Some("a"), Some("b")]);
        let asked = book.keys_to_ask(&keys, true);
        let (screened, tally) = book.apply(messages, keys, &asked, vec![held_elsewhere(), CLAIMED]);

        assert_eq!(offsets(&screened.to_handle), [1]);
        assert!(screened.already_done.is_empty());
        assert_eq!(tally.newly_waiting, [(key("a"), "claim:other".to_owned(), 0)]);
        assert!(book.has_waiting());
        assert_eq!(book.waiting_keys(), [key("a")]);
    }

    #[test]
    fn waiting_copies_become_duplicates_once_the_key_is_done() {
        let mut book = ClaimBook::default();
        let (messages, keys) = batch(0, &[Some("a")]);
        let asked = book.keys_to_ask(&keys, true);
        book.apply(messages, keys, &asked, vec![held_elsewhere()]);
        // Another copy arrives while the first waits: it joins the wait,
        // and is not asked about as a new key.
        let (messages, keys) = batch(1, &[Some("a")]);
        assert_eq!(book.keys_to_ask(&keys, false), Vec::<DedupKey>::new());
        let (screened, tally) = book.apply(messages, keys, &[], vec![]);
        assert!(screened.is_empty());
        assert_eq!(tally, Tally::default());

        let asked = book.waiting_keys();
        let (screened, tally) = book.apply(Vec::new(), Vec::new(), &asked, vec![DONE]);
        assert!(screened.to_handle.is_empty());
        assert_eq!(done_offsets(&screened.already_done), [0, 1]);
        assert_eq!(tally.deduplicated, 2);
        assert!(!book.has_waiting());
    }

    #[test]
    fn a_waiting_copy_keeps_waiting_while_the_claim_is_held() {
        let mut book = ClaimBook::default();
        let (messages, keys) = batch(0, &[Some("a")]);
        let asked = book.keys_to_ask(&keys, true);
        book.apply(messages, keys, &asked, vec![held_elsewhere()]);

        let asked = book.waiting_keys();
        let (screened, tally) = book.apply(Vec::new(), Vec::new(), &asked, vec![held_elsewhere()]);
        assert!(screened.is_empty());
        assert!(
            tally.newly_waiting.is_empty(),
            "a key is counted once, when it starts waiting"
        );
        assert!(book.has_waiting());
    }

    #[test]
    fn after_an_expired_claim_the_first_waiting_copy_is_claimed_and_handled_the_rest_wait_for_it() {
        let mut book = ClaimBook::default();
        let (messages, keys) = batch(5, &[Some("a"), Some("a")]);
        let asked = book.keys_to_ask(&keys, true);
        book.apply(messages, keys, &asked, vec![held_elsewhere()]);

        // Settled in the same round trip as a new batch: the waiting copy
        // comes first, and the new batch's copy of `a` waits for it.
        let (messages, keys) = batch(7, &[Some("b"), Some("a")]);
        let asked = book.keys_to_ask(&keys, true);
        assert_eq!(asked, [key("b"), key("a")]);
        let (screened, tally) = book.apply(messages, keys, &asked, vec![CLAIMED, CLAIMED]);
        assert_eq!(offsets(&screened.to_handle), [5, 7]);
        assert_eq!(tally.taken_over, [5]);
        assert!(!book.has_waiting());

        let mut held = book.held().snapshot();
        held.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
        assert_eq!(held, [key("a"), key("b")]);
        assert_eq!(done_offsets(&book.marked_done(&[key("a")])), [6, 8]);
    }

    #[test]
    fn with_the_store_unreachable_and_process_configured_messages_are_handled_unguarded() {
        let mut book = ClaimBook::default();
        let (messages, keys) = batch(0, &[Some("a"), Some("a")]);
        let asked = book.keys_to_ask(&keys, true);
        let (screened, _) = book.apply(messages, keys, &asked, vec![Answer::Unguarded]);
        assert_eq!(offsets(&screened.to_handle), [0]);
        assert!(book.holds_no_claims(), "nothing was claimed");
        assert_eq!(done_offsets(&book.marked_done(&[key("a")])), [1]);
    }

    #[test]
    fn a_lost_claim_leaves_the_held_set_but_is_still_marked_done_later() {
        let mut book = ClaimBook::default();
        let (messages, keys) = batch(0, &[Some("a"), Some("a")]);
        let asked = book.keys_to_ask(&keys, true);
        book.apply(messages, keys, &asked, vec![CLAIMED]);

        assert_eq!(book.held().forget_lost(&[key("a"), key("z")]), 1);
        assert!(book.holds_no_claims());
        assert_eq!(done_offsets(&book.marked_done(&[key("a")])), [1]);
    }

    #[test]
    fn giving_up_returns_held_and_waited_for_keys_and_forgets_everything() {
        let mut book = ClaimBook::default();
        let (messages, keys) = batch(0, &[Some("a"), Some("b"), Some("a")]);
        let asked = book.keys_to_ask(&keys, true);
        book.apply(messages, keys, &asked, vec![CLAIMED, held_elsewhere()]);

        let mut released = book.give_up();
        released.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
        assert_eq!(released, [key("a"), key("b")]);
        assert!(book.holds_no_claims());
        assert!(!book.has_waiting());
        assert!(book.marked_done(&[key("a")]).is_empty());
    }
}
