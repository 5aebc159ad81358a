//! Replay protection: no authenticated message is ever accepted twice.
//!
//! Two rules together make this exact (unlike jupyter_client's randomly evicted digest set):
//! - a message dated older than `window` before now, or before this session started (less a clock
//!   skew allowance), is refused as stale, so old captures and captures made against a previous
//!   kernel instance with the same key are useless;
//! - within the window, an exact history of accepted digests refuses any repeat.
//!
//! A digest is kept until its message could no longer pass the freshness rule and dropped as soon
//! as it expires, so memory is bounded by message rate x (window + skew) (plus, while a reader
//! lags, the messages admitted over its lag). A hard cap refuses new messages rather than evicting
//! history: eviction would make old messages replayable.
//!
//! The history is ordered by expiry (a message's date plus the window), then digest. A replay
//! carries the very bytes that were signed, so the same date: looking it up by (expiry, digest) is
//! exact. Traffic arrives roughly in date order, so each new entry lands at the recent end of the
//! ordering, memory the previous message touched, and expired entries leave from the old end one
//! at a time: a history of millions costs no cache miss per message (a hash table keyed by digest
//! costs one, the digests being random) and no periodic walk over the whole table.
//!
//! The caller records a digest only after its signature verified, so a forgery can never poison
//! the history of a genuine message.
//!
//! Freshness is judged by when a message reached its receiver, not by when the receiver read it.
//! A kernel runs one cell at a time and reads the next request only afterwards: requests queued
//! behind a cell that ran longer than the window would otherwise all be refused as stale (and
//! "run all" would hang on them). A receiver that reads a backlog registers as a reader and
//! reports each moment it was caught up (waiting, its queue empty): whatever it reads later
//! arrived after that moment, so its messages are judged by that moment's clock. Sweeps never
//! run ahead of the most lagging reader, so every digest a reader could still take for fresh
//! stays in the history.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::auth::{word, Digest};
use crate::error::{err, ErrorKind, Result};

/// Tunables of the replay guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayConfig {
    /// How old (by `header.date`) a message may be and still be accepted.
    pub window: Duration,
    /// How far clocks may disagree: a message may be dated this much before the session started or
    /// this much in the future.
    pub clock_skew: Duration,
    /// Hard cap on remembered digests; past it new messages are refused (never evicted).
    pub max_entries: usize,
    /// How long a message may wait in a lagging reader's queue (behind a long cell, say) and
    /// still be judged by when it arrived. It bounds how long a lagging reader holds digests in
    /// the history; a message that waited longer is judged by a clock this far behind the
    /// present.
    pub max_queue_wait: Duration,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            window: Duration::from_secs(60),
            clock_skew: Duration::from_secs(5),
            // 24 bytes per entry plus the tree's half-empty nodes: 4M entries (about 200 MiB at
            // worst) sustain ~60,000 messages per second per session over window + skew. Memory
            // grows only with actual traffic.
            max_entries: 1 << 22,
            // A day: longer than any cell people queue others behind in practice.
            max_queue_wait: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The replay history of one session (one kernel instance or one client).
#[derive(Debug)]
pub struct ReplayGuard {
    config: ReplayConfig,
    /// The bounds, precomputed in microseconds since the epoch so each message costs integer
    /// comparisons only.
    earliest_start_us: i64,
    window_us: i64,
    skew_us: i64,
    max_queue_wait_us: i64,
    /// Accepted messages, ordered by the last clock by which each is still fresh (its date plus
    /// the window, µs since the epoch), then by digest.
    seen: BTreeSet<Entry>,
    /// Per registered reader, the last moment it was caught up (µs; `None`: a free slot).
    readers: Vec<Option<i64>>,
    /// The latest time any caller has reported (µs). Every clock the guard judges by is at least
    /// this, so time never runs back: not when a thread read the time before another that
    /// swept first, nor when the wall clock is stepped back. A sweep's horizon is then never
    /// ahead of a clock a later message is judged by, which is what keeps replays refused.
    clock_us: i64,
}

/// One accepted message: its expiry, then the first 128 bits of its digest (collisions need 2^64
/// messages, far beyond any history; an MD5 HMAC has exactly 128 bits). 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    expiry_us: i64,
    digest: (u64, u64),
}

fn digest_key(digest: &Digest) -> (u64, u64) {
    let mut b = [0u8; 16];
    let src = digest.as_bytes();
    let n = src.len().min(16);
    if let (Some(dst), Some(src)) = (b.get_mut(..n), src.get(..n)) {
        dst.copy_from_slice(src);
    }
    let (lo, hi) = b.split_at(8);
    (word(lo), word(hi))
}

/// A duration in whole microseconds, saturating (a configured window of centuries means "always").
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl ReplayGuard {
    /// A guard for a session that started at `started` (the kernel's or client's creation time).
    pub fn new(config: ReplayConfig, started: DateTime<Utc>) -> ReplayGuard {
        let (window_us, skew_us) = (micros(config.window), micros(config.clock_skew));
        ReplayGuard {
            config,
            earliest_start_us: started.timestamp_micros().saturating_sub(skew_us),
            window_us,
            skew_us,
            max_queue_wait_us: micros(config.max_queue_wait),
            seen: BTreeSet::new(),
            readers: Vec::new(),
            clock_us: i64::MIN,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ReplayConfig {
        &self.config
    }

    /// Number of digests currently remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no digest is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Checks the freshness of a message dated `date`, read at time `now` by a receiver that
    /// was caught up then (so the message arrived at `now` at the earliest).
    pub fn check_fresh(&self, date: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
        let now = now.timestamp_micros();
        self.check_fresh_us(date.timestamp_micros(), now, now)
    }

    /// `arrived` is the earliest the message can have reached its receiver (`<= now`).
    fn check_fresh_us(&self, date: i64, arrived: i64, now: i64) -> Result<()> {
        if date > now.saturating_add(self.skew_us) {
            return err(
                ErrorKind::FutureDated,
                "message is dated beyond the clock-skew allowance",
            );
        }
        if date < arrived.saturating_sub(self.window_us) {
            return err(
                ErrorKind::Stale,
                "message is older than the freshness window",
            );
        }
        if date < self.earliest_start_us {
            return err(
                ErrorKind::Stale,
                "message is dated before this session started",
            );
        }
        Ok(())
    }

    /// Admits a verified message once: checks freshness, refuses a repeat, records the digest.
    /// For a receiver that reads each message as it arrives.
    pub fn admit(&mut self, digest: Digest, date: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
        let now = self.tick(now);
        self.admit_us(digest, date.timestamp_micros(), now, now)
    }

    /// Like [`ReplayGuard::admit`], for a message that `reader` read at `now`: its freshness
    /// is judged by the last moment the reader was caught up.
    pub fn admit_read(
        &mut self,
        reader: &ReaderId,
        digest: Digest,
        date: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let now = self.tick(now);
        let caught_up = self
            .readers
            .get(reader.0)
            .copied()
            .flatten()
            .map_or(now, |t| self.clamp_lag(t, now));
        self.admit_us(digest, date.timestamp_micros(), caught_up, now)
    }

    /// `now` in µs, never earlier than any time reported before (see `clock_us`).
    fn tick(&mut self, now: DateTime<Utc>) -> i64 {
        self.clock_us = self.clock_us.max(now.timestamp_micros());
        self.clock_us
    }

    /// A reader's clock `t`, at most `max_queue_wait` behind `now` and never ahead of it.
    fn clamp_lag(&self, t: i64, now: i64) -> i64 {
        t.clamp(now.saturating_sub(self.max_queue_wait_us), now)
    }

    fn admit_us(&mut self, digest: Digest, date: i64, arrived: i64, now: i64) -> Result<()> {
        self.check_fresh_us(date, arrived, now)?;
        self.sweep(now);
        // Judged by any clock up to `date + window` the message is fresh; by a later one it is
        // stale, whatever the history holds.
        let entry = Entry {
            expiry_us: date.saturating_add(self.window_us),
            digest: digest_key(&digest),
        };
        if self.seen.len() >= self.config.max_entries && !self.seen.contains(&entry) {
            return err(
                ErrorKind::ReplayCacheFull,
                format!(
                    "replay history holds {} digests, its cap",
                    self.config.max_entries
                ),
            );
        }
        if !self.seen.insert(entry) {
            return err(ErrorKind::Replayed, "message was already received");
        }
        Ok(())
    }

    /// Registers a receiver that may read a backlog, caught up at `now`.
    pub fn register_reader(&mut self, now: DateTime<Utc>) -> ReaderId {
        let now = Some(self.tick(now));
        match self.readers.iter().position(Option::is_none) {
            Some(free) => {
                if let Some(slot) = self.readers.get_mut(free) {
                    *slot = now;
                }
                ReaderId(free)
            }
            None => {
                self.readers.push(now);
                ReaderId(self.readers.len() - 1)
            }
        }
    }

    /// Records that `reader` was caught up (its queue empty) at `now`. Never moves back.
    pub fn caught_up(&mut self, reader: &ReaderId, now: DateTime<Utc>) {
        let now = self.tick(now);
        if let Some(Some(t)) = self.readers.get_mut(reader.0) {
            *t = if *t == WAITING { now } else { (*t).max(now) };
        }
    }

    /// Records that `reader` is blocked waiting for input: caught up at every moment until it
    /// reports [`ReplayGuard::caught_up`] when the wait ends, so an idle reader holds no sweep
    /// back. (Only for waits that always end with that report.)
    pub fn waiting(&mut self, reader: &ReaderId) {
        if let Some(Some(t)) = self.readers.get_mut(reader.0) {
            *t = WAITING;
        }
    }

    /// Forgets `reader`: sweeps no longer wait for it.
    pub fn unregister_reader(&mut self, reader: ReaderId) {
        if let Some(slot) = self.readers.get_mut(reader.0) {
            *slot = None;
        }
    }

    /// Drops digests whose messages can no longer pass the freshness check; how many.
    pub fn forget_expired(&mut self, now: DateTime<Utc>) -> usize {
        let now = self.tick(now);
        let before = self.seen.len();
        self.sweep(now);
        before - self.seen.len()
    }

    /// When a holder that receives nothing should call [`ReplayGuard::forget_expired`]: once the
    /// oldest entry has expired, and no sooner than a sixteenth of the window (at least 1 ms)
    /// after `now`, so that a burst's entries leave in a few batches, not one wake-up each, and
    /// a sweep that could forget nothing is not retried at once. `None` when the
    /// history is empty. (Each admit sweeps too: this is for a session gone quiet, which would
    /// otherwise keep a burst's digests until its next message.)
    pub fn next_sweep(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let expired = self.seen.first()?.expiry_us.saturating_add(1);
        let spacing = (self.window_us / 16).max(1000);
        let soonest = now.timestamp_micros().saturating_add(spacing);
        DateTime::from_timestamp_micros(expired.max(soonest))
    }

    /// The clock a sweep may judge by: no receiver will judge a message by an earlier one.
    fn sweep_horizon(&self, now_us: i64) -> i64 {
        self.readers
            .iter()
            .flatten()
            .fold(now_us, |h, &t| h.min(self.clamp_lag(t, now_us)))
    }

    /// Drops the entries no receiver can take for fresh any more, oldest first: usually none or
    /// one, as each admit sweeps.
    fn sweep(&mut self, now_us: i64) {
        let horizon = self.sweep_horizon(now_us);
        while self.seen.first().is_some_and(|e| e.expiry_us < horizon) {
            self.seen.pop_first();
        }
    }
}

/// A reader's clock while it waits for input: always the present ([`ReplayGuard::clamp_lag`]).
const WAITING: i64 = i64::MAX;

/// A receiver registered with [`ReplayGuard::register_reader`]. Neither `Clone` nor `Copy`:
/// [`ReplayGuard::unregister_reader`] consumes it, so a stale id can never act on a slot that
/// was handed to another reader since.
#[derive(Debug, PartialEq, Eq)]
pub struct ReaderId(usize);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::auth::{Scheme, Signer};
    use crate::Key;
    use chrono::TimeDelta;

    fn digest(n: u8) -> Digest {
        let signer = Signer::new(Scheme::Sha256, &Key::new(b"k".to_vec())).unwrap();
        signer.digest(&[&[n], b"", b"", b""]).unwrap()
    }

    fn guard(max_entries: usize, t0: DateTime<Utc>) -> ReplayGuard {
        let config = ReplayConfig {
            window: Duration::from_secs(10),
            clock_skew: Duration::from_secs(1),
            max_entries,
            max_queue_wait: Duration::from_secs(100),
        };
        ReplayGuard::new(config, t0)
    }

    fn kind(r: Result<()>) -> Option<ErrorKind> {
        r.err().map(|e| e.kind())
    }

    #[test]
    fn a_digest_is_kept_while_its_message_could_be_fresh() {
        let t0 = Utc::now();
        let mut g = guard(10, t0);
        let dated = t0 + TimeDelta::seconds(1); // as far ahead as the skew allows
        g.admit(digest(1), dated, t0).unwrap();
        // Still fresh just before window + skew has passed: the history must still refuse it.
        let late = t0 + TimeDelta::milliseconds(10_999);
        g.forget_expired(late);
        assert_eq!(
            kind(g.admit(digest(1), dated, late)),
            Some(ErrorKind::Replayed)
        );
        // From then on it is stale, whatever the history holds.
        let after = t0 + TimeDelta::milliseconds(11_001);
        assert_eq!(
            kind(g.admit(digest(1), dated, after)),
            Some(ErrorKind::Stale)
        );
    }

    #[test]
    fn expired_digests_are_swept_and_never_count_against_the_cap() {
        let t0 = Utc::now();
        let mut g = guard(2, t0);
        g.admit(digest(1), t0, t0).unwrap();
        g.admit(digest(2), t0, t0).unwrap();
        assert_eq!(
            kind(g.admit(digest(3), t0, t0)),
            Some(ErrorKind::ReplayCacheFull)
        );
        assert_eq!(kind(g.admit(digest(1), t0, t0)), Some(ErrorKind::Replayed));
        let later = t0 + TimeDelta::seconds(12);
        g.admit(digest(3), later, later).unwrap();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn messages_out_of_date_order_are_each_refused_when_replayed() {
        let t0 = Utc::now();
        let mut g = guard(10, t0);
        let dates = [3, 1, 2, 1].map(|ms| t0 + TimeDelta::milliseconds(ms));
        for (n, date) in (1u8..).zip(dates) {
            g.admit(digest(n), date, t0).unwrap();
        }
        for (n, date) in (1u8..).zip(dates) {
            assert_eq!(
                kind(g.admit(digest(n), date, t0)),
                Some(ErrorKind::Replayed)
            );
        }
        // Each leaves the history once its own date has expired, not before.
        g.forget_expired(t0 + TimeDelta::milliseconds(10_001) + TimeDelta::microseconds(1));
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn a_quiet_history_is_swept_when_its_oldest_entry_expires_in_batches() {
        // Whole microseconds, the guard's resolution, so times compare exactly.
        let t0 = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
        let mut g = guard(10, t0);
        assert_eq!(g.next_sweep(t0), None);
        let ms = |n: i64| t0 + TimeDelta::milliseconds(n);
        for (n, date) in (1u8..).zip([0, 1, 2000]) {
            g.admit(digest(n), ms(date), ms(date)).unwrap();
        }
        // The window is 10 s: the oldest may go 1 us after date + 10 s.
        let first = g.next_sweep(ms(2000)).unwrap();
        assert_eq!(first, ms(10_000) + TimeDelta::microseconds(1));
        assert_eq!(g.forget_expired(first), 1);
        // The next has expired by then too, but waits a sixteenth of the window (625 ms).
        assert_eq!(
            g.next_sweep(first),
            Some(first + TimeDelta::milliseconds(625))
        );
        assert_eq!(g.forget_expired(first + TimeDelta::milliseconds(625)), 1);
        assert_eq!(
            g.next_sweep(ms(10_625)),
            Some(ms(12_000) + TimeDelta::microseconds(1))
        );
        assert_eq!(g.forget_expired(ms(12_001)), 1);
        assert_eq!(g.next_sweep(ms(12_001)), None);
    }

    #[test]
    fn a_reader_judges_freshness_by_when_it_was_last_caught_up() {
        let t0 = Utc::now();
        let mut g = guard(10, t0);
        let reader = g.register_reader(t0);
        // Read 30 s later, behind a long cell: fresh for the reader, stale for anyone else.
        let late = t0 + TimeDelta::seconds(30);
        assert_eq!(kind(g.admit(digest(1), t0, late)), Some(ErrorKind::Stale));
        g.admit_read(&reader, digest(1), t0, late).unwrap();
        assert_eq!(
            kind(g.admit_read(&reader, digest(1), t0, late)),
            Some(ErrorKind::Replayed)
        );
        // Once caught up, the reader's clock is the present again.
        g.caught_up(&reader, late);
        assert_eq!(
            kind(g.admit_read(&reader, digest(2), t0, late)),
            Some(ErrorKind::Stale)
        );
        // The future is judged by the present, whatever the reader's clock.
        let ahead = late + TimeDelta::seconds(2);
        assert_eq!(
            kind(g.admit_read(&reader, digest(3), ahead, late)),
            Some(ErrorKind::FutureDated)
        );
    }

    #[test]
    fn sweeps_keep_every_digest_a_lagging_reader_could_still_accept() {
        let t0 = Utc::now();
        let mut g = guard(10, t0);
        let reader = g.register_reader(t0);
        g.admit(digest(1), t0, t0).unwrap();
        // Long after the window, other traffic sweeps; the reader is still behind at t0.
        let late = t0 + TimeDelta::seconds(30);
        g.forget_expired(late);
        g.admit(digest(2), late, late).unwrap();
        assert_eq!(
            kind(g.admit_read(&reader, digest(1), t0, late)),
            Some(ErrorKind::Replayed),
            "a replay read by the lagging reader must still be refused"
        );
        // Caught up (or gone), the reader no longer holds the history back.
        g.caught_up(&reader, late);
        g.forget_expired(late);
        assert_eq!(g.len(), 1);
        let other = g.register_reader(t0);
        g.unregister_reader(other);
        g.forget_expired(late);
        assert_eq!(g.len(), 1);
        assert_eq!(
            kind(g.admit_read(&reader, digest(1), t0, late)),
            Some(ErrorKind::Stale)
        );
    }

    #[test]
    fn a_reader_lags_at_most_max_queue_wait() {
        let t0 = Utc::now();
        let mut g = guard(10, t0);
        let reader = g.register_reader(t0);
        g.admit(digest(1), t0, t0).unwrap();
        // 200 s on, the reader's clock counts as 100 s behind the present, no more: the sweep
        // frees what no reader can accept, and the old message is stale even for the reader.
        let much_later = t0 + TimeDelta::seconds(200);
        g.forget_expired(much_later);
        assert_eq!(g.len(), 0);
        assert_eq!(
            kind(g.admit_read(&reader, digest(1), t0, much_later)),
            Some(ErrorKind::Stale)
        );
        let waited_95s = much_later - TimeDelta::seconds(95);
        g.admit_read(&reader, digest(2), waited_95s, much_later)
            .unwrap();
    }

    #[test]
    fn a_waiting_reader_holds_no_sweep_back() {
        let t0 = Utc::now();
        let mut g = guard(10, t0);
        let reader = g.register_reader(t0);
        g.admit(digest(1), t0, t0).unwrap();
        g.waiting(&reader);
        let late = t0 + TimeDelta::seconds(30);
        g.forget_expired(late);
        assert_eq!(g.len(), 0, "an idle reader kept an expired digest");
        // The wait ends: from now on the reader's clock is when it ended.
        g.caught_up(&reader, late);
        let later = late + TimeDelta::seconds(30);
        g.admit_read(&reader, digest(2), late, later).unwrap();
    }

    #[test]
    fn a_clock_read_before_another_threads_sweep_cannot_let_a_replay_in() {
        let t0 = Utc::now();
        let mut g = guard(10, t0);
        g.admit(digest(1), t0, t0).unwrap();
        // One thread sweeps at t0 + 11 s; another read the time (t0 + 9 s) before it, and only
        // now gets the lock with a replay of the message. Judged by its own stale reading the
        // replay would look fresh, and its digest is gone.
        g.forget_expired(t0 + TimeDelta::seconds(11));
        assert_eq!(g.len(), 0);
        assert_eq!(
            kind(g.admit(digest(1), t0, t0 + TimeDelta::seconds(9))),
            Some(ErrorKind::Stale)
        );
        // The same holds for a wall clock stepped back.
        let reader = g.register_reader(t0);
        assert_eq!(
            kind(g.admit_read(&reader, digest(1), t0, t0)),
            Some(ErrorKind::Stale)
        );
    }
}
