//! Replay protection: no authenticated message is ever accepted twice.
//!
//! Two rules together make this exact (unlike jupyter_client's randomly evicted digest set):
//! - a message dated older than `window` before now, or before this session started (less a clock
//!   skew allowance), is refused as stale, so old captures and captures made against a previous
//!   kernel instance with the same key are useless;
//! - within the window, an exact history of accepted digests refuses any repeat.
//!
//! A digest is kept until its message could no longer pass the freshness rule, so memory is bounded
//! by message rate x (window + skew). A hard cap refuses new messages rather than evicting history:
//! eviction would make old messages replayable. The caller records a digest only after its
//! signature verified, so a forgery can never poison the history of a genuine message.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::auth::Digest;
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
            // About 40 bytes per entry: 4M entries (160 MiB at worst) sustain ~64,000 messages
            // per second per session over window + skew. Memory grows only with actual traffic.
            max_entries: 1 << 22,
        }
    }
}

/// The replay history of one session (one kernel instance or one client).
#[derive(Debug)]
pub struct ReplayGuard {
    config: ReplayConfig,
    started: DateTime<Utc>,
    seen: HashSet<u128, BuildHasherDefault<DigestHasher>>,
    /// (expiry in µs since the epoch, digest key) in insertion order.
    expiries: VecDeque<(i64, u128)>,
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
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

/// The first 128 bits of a digest: collisions need 2^64 messages, far beyond any history.
/// (An MD5 HMAC has exactly 128 bits.)
fn key_of(digest: &Digest) -> u128 {
    let mut b = [0u8; 16];
    let src = digest.as_bytes();
    let n = src.len().min(16);
    if let (Some(dst), Some(src)) = (b.get_mut(..n), src.get(..n)) {
        dst.copy_from_slice(src);
    }
    u128::from_le_bytes(b)
}

fn chrono_duration(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

impl ReplayGuard {
    /// A guard for a session that started at `started` (the kernel's or client's creation time).
    pub fn new(config: ReplayConfig, started: DateTime<Utc>) -> ReplayGuard {
        ReplayGuard {
            config,
            started,
            seen: HashSet::default(),
            expiries: VecDeque::new(),
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
        let skew = chrono_duration(self.config.clock_skew);
        let window = chrono_duration(self.config.window);
        if date
            > now
                .checked_add_signed(skew)
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        {
            return err(
                ErrorKind::FutureDated,
                "message is dated beyond the clock-skew allowance",
            );
        }
        if date
            < now
                .checked_sub_signed(window)
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        {
            return err(
                ErrorKind::Stale,
                "message is older than the freshness window",
            );
        }
        if date
            < self
                .started
                .checked_sub_signed(skew)
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        {
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
        self.forget_expired(now);
        let key = key_of(&digest);
        if self.seen.contains(&key) {
            return err(ErrorKind::Replayed, "message was already received");
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
        let keep = chrono_duration(self.config.window + self.config.clock_skew);
        let expiry = now
            .checked_add_signed(keep)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.seen.insert(key);
        self.expiries.push_back((expiry.timestamp_micros(), key));
        Ok(())
    }

    /// Drops digests whose messages can no longer pass the freshness check.
    ///
    /// A message accepted at `t` is dated at most `t + skew`, so from `t + skew + window` on it is
    /// stale and its digest is no longer needed.
    pub fn forget_expired(&mut self, now: DateTime<Utc>) {
        let now = now.timestamp_micros();
        while let Some((expiry, key)) = self.expiries.front().copied() {
            if expiry > now {
                break;
            }
            self.seen.remove(&key);
            self.expiries.pop_front();
        }
    }
}
