//! Counting and rate-limited logging of refused messages. Logs name the channel and the error
//! kind only: never key material, never message bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kernelgate_wire::{Channel, ErrorKind};

/// Per-kind counters of refused messages, shared by all channel threads.
#[derive(Debug)]
pub struct Rejections {
    counts: [AtomicU64; ErrorKind::ALL.len()],
    last_log: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Default for Rejections {
    fn default() -> Self {
        Rejections {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            last_log: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }
}

/// At most one log line per interval; the rest are summarised in the next line.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

impl Rejections {
    /// Counts a refused message and logs it unless the log rate limit is reached.
    pub fn record(&self, channel: Channel, error: &kernelgate_wire::Error) {
        let kind = error.kind();
        if let Some(c) = self.counts.get(kind.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| now.duration_since(t) < LOG_INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            channel = channel.name(),
            kind = kind.code(),
            total = self.count(kind),
            suppressed_since_last_log = suppressed,
            "refused message: {}",
            error.detail()
        );
    }

    /// How many messages of `kind` were refused.
    pub fn count(&self, kind: ErrorKind) -> u64 {
        self.counts.get(kind.index()).map(|c| c.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Non-zero counts by error code, for the stats reply and logs.
    pub fn snapshot(&self) -> serde_json::Map<String, serde_json::Value> {
        ErrorKind::ALL
            .iter()
            .filter_map(|k| {
                let n = self.count(*k);
                (n > 0).then(|| (k.code().to_owned(), n.into()))
            })
            .collect()
    }

    /// Total refused messages.
    pub fn total(&self) -> u64 {
        ErrorKind::ALL.iter().map(|k| self.count(*k)).sum()
    }
}
