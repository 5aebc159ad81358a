//! Counting refused messages by kind, with a gate that lets through at most one log line per
//! interval, so a peer flooding bad messages cannot flood the logs. The caller does the logging
//! (this crate does no I/O); it must never log key material or message bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ErrorKind;

/// At most one log line per interval; the refusals in between are summarised in the next line.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Lets through at most one log line per [`LOG_INTERVAL`], counting the ones held back.
#[derive(Debug, Default)]
pub struct LogGate {
    last_log: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogGate {
    /// `Some(n)` when a line may be logged now, `n` being the lines held back since the
    /// previous one; `None` while the gate is shut.
    pub fn open(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < LOG_INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// Per-kind counters of refused messages, shareable between threads.
#[derive(Debug)]
pub struct Rejections {
    counts: [AtomicU64; ErrorKind::ALL.len()],
    gate: LogGate,
}

impl Default for Rejections {
    fn default() -> Self {
        Rejections {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            gate: LogGate::default(),
        }
    }
}

impl Rejections {
    /// Counts a refusal of `kind`. Returns `Some(n)` when a log line is due now, `n` being the
    /// refusals left unlogged since the previous line; `None` while logging is rate-limited.
    pub fn record(&self, kind: ErrorKind) -> Option<u64> {
        if let Some(c) = self.counts.get(kind.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.gate.open()
    }

    /// How many messages of `kind` were refused.
    pub fn count(&self, kind: ErrorKind) -> u64 {
        self.counts
            .get(kind.index())
            .map(|c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Total refused messages.
    pub fn total(&self) -> u64 {
        ErrorKind::ALL.iter().map(|k| self.count(*k)).sum()
    }

    /// The kinds with a non-zero count, in declaration order.
    pub fn snapshot(&self) -> Vec<(ErrorKind, u64)> {
        ErrorKind::ALL
            .iter()
            .map(|k| (*k, self.count(*k)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_refusal_but_gates_log_lines() {
        let r = Rejections::default();
        assert_eq!(r.record(ErrorKind::BadSignature), Some(0));
        assert_eq!(r.record(ErrorKind::BadSignature), None);
        assert_eq!(r.record(ErrorKind::Replayed), None);
        assert_eq!(r.count(ErrorKind::BadSignature), 2);
        assert_eq!(r.total(), 3);
        assert_eq!(
            r.snapshot(),
            vec![(ErrorKind::BadSignature, 2), (ErrorKind::Replayed, 1)]
        );
    }
}
