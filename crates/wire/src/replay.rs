//! Replay protection: no authenticated message is ever accepted twice.
//!
//! Two rules together make this exact (unlike jupyter_client's randomly evicted digest set):
//! - a message dated older than `window` before now, or before this session started (less a clock
//!   skew allowance), is refused as stale, so old captures and captures made against a previous
//!   kernel instance with the same key are useless;
//! - within the window, an exact history of accepted digests refuses any repeat.
//!
//! A digest is kept until its message could no longer pass the freshness rule, and expired ones are
//! swept out every sixteenth of that time, so memory is bounded by message rate x (window + skew)
//! x 17/16. A hard cap refuses new messages rather than evicting history: eviction would make old
//! messages replayable. The caller records a digest only after its
//! signature verified, so a forgery can never poison the history of a genuine message.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
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
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            window: Duration::from_secs(60),
            clock_skew: Duration::from_secs(5),
            // 24 bytes per entry plus the table's slack: 4M entries (about 200 MiB at worst)
            // sustain ~60,000 messages per second per session over window + skew. Memory grows
            // only with actual traffic.
            max_entries: 1 << 22,
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
    /// How long a digest is kept: a message accepted at `t` is dated at most `t + skew`, so from
    /// `t + skew + window` on it is stale and its digest is no longer needed.
    keep_us: i64,
    /// Accepted digests and when each may be forgotten (µs since the epoch). One table, no
    /// per-message queue: a long history costs one random access per message, not two.
    seen: HashMap<DigestKey, i64, BuildHasherDefault<DigestHasher>>,
    /// When expired digests are next swept out.
    next_sweep_us: i64,
    /// The earliest expiry in `seen` (i64::MAX when empty): before it a sweep frees nothing, so
    /// a history full of live digests does not walk the whole table for every refused message.
    oldest_expiry_us: i64,
}

/// The first 128 bits of a digest: collisions need 2^64 messages, far beyond any history.
/// (An MD5 HMAC has exactly 128 bits.) Two words, so a table entry is 24 bytes, not 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DigestKey(u64, u64);

impl std::hash::Hash for DigestKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// The digests are HMAC outputs: keyed and uniformly distributed, so they are their own hash.
#[derive(Debug, Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

fn key_of(digest: &Digest) -> DigestKey {
    let mut b = [0u8; 16];
    let src = digest.as_bytes();
    let n = src.len().min(16);
    if let (Some(dst), Some(src)) = (b.get_mut(..n), src.get(..n)) {
        dst.copy_from_slice(src);
    }
    let (lo, hi) = b.split_at(8);
    DigestKey(word(lo), word(hi))
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
            keep_us: window_us.saturating_add(skew_us),
            seen: HashMap::default(),
            next_sweep_us: i64::MIN,
            oldest_expiry_us: i64::MAX,
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

    /// Checks the freshness of a message dated `date`, at time `now`.
    pub fn check_fresh(&self, date: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
        let (date, now) = (date.timestamp_micros(), now.timestamp_micros());
        if date > now.saturating_add(self.skew_us) {
            return err(
                ErrorKind::FutureDated,
                "message is dated beyond the clock-skew allowance",
            );
        }
        if date < now.saturating_sub(self.window_us) {
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
    pub fn admit(&mut self, digest: Digest, date: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
        self.check_fresh(date, now)?;
        let now = now.timestamp_micros();
        if now >= self.next_sweep_us {
            self.sweep(now);
        }
        let key = key_of(&digest);
        if self.seen.len() >= self.config.max_entries && !self.seen.contains_key(&key) {
            // Expired digests may still be waiting for the sweep: never refuse because of them.
            if now >= self.oldest_expiry_us {
                self.sweep(now);
            }
            if self.seen.len() >= self.config.max_entries {
                return err(
                    ErrorKind::ReplayCacheFull,
                    format!(
                        "replay history holds {} digests, its cap",
                        self.config.max_entries
                    ),
                );
            }
        }
        match self.seen.entry(key) {
            Entry::Occupied(_) => err(ErrorKind::Replayed, "message was already received"),
            Entry::Vacant(slot) => {
                let expiry = now.saturating_add(self.keep_us);
                slot.insert(expiry);
                self.oldest_expiry_us = self.oldest_expiry_us.min(expiry);
                Ok(())
            }
        }
    }

    /// Drops digests whose messages can no longer pass the freshness check.
    pub fn forget_expired(&mut self, now: DateTime<Utc>) {
        self.sweep(now.timestamp_micros());
    }

    fn sweep(&mut self, now_us: i64) {
        let mut oldest = i64::MAX;
        self.seen.retain(|_, &mut expiry| {
            let keep = expiry > now_us;
            if keep {
                oldest = oldest.min(expiry);
            }
            keep
        });
        self.oldest_expiry_us = oldest;
        self.next_sweep_us = now_us.saturating_add((self.keep_us / 16).max(1));
    }
}

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
}
