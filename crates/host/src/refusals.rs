//! What the host refuses, counted and logged at most once a second (per counter set), so that
//! neither an unauthenticated client nor code inside a kernel can flood the host's log. Logged
//! are the kind, the kernel id and the totals: never a token, a key or message bytes, and never a
//! request's path (a token pasted into a URL path would land in the log).

use std::sync::atomic::{AtomicU64, Ordering};

use kernelgate_wire::{LogGate, Rejections};
use serde_json::{json, Value};

/// Why an HTTP request or connection was turned away before reaching a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRefusal {
    /// No token given.
    NoToken,
    /// A token that is not the host's.
    WrongToken,
    /// An Origin not on the allow list.
    BadOrigin,
    /// Over [`crate::HostConfig::max_connections`].
    ConnectionLimit,
}

impl HttpRefusal {
    const ALL: [HttpRefusal; 4] = [
        HttpRefusal::NoToken,
        HttpRefusal::WrongToken,
        HttpRefusal::BadOrigin,
        HttpRefusal::ConnectionLimit,
    ];

    /// A stable name, as in logs and `GET /api/status`.
    pub fn code(self) -> &'static str {
        match self {
            HttpRefusal::NoToken => "no_token",
            HttpRefusal::WrongToken => "wrong_token",
            HttpRefusal::BadOrigin => "origin_not_allowed",
            HttpRefusal::ConnectionLimit => "connection_limit",
        }
    }
}

/// Counters of [`HttpRefusal`]s, shared by the middleware and the acceptor.
#[derive(Debug, Default)]
pub struct HttpRefusals {
    counts: [AtomicU64; HttpRefusal::ALL.len()],
    gate: LogGate,
}

impl HttpRefusals {
    /// Counts a refusal and logs it unless the log rate limit is reached.
    pub fn record(&self, kind: HttpRefusal) {
        let total = self
            .counts
            .get(kind as usize)
            .map_or(0, |c| c.fetch_add(1, Ordering::Relaxed) + 1);
        if let Some(suppressed) = self.gate.open() {
            tracing::warn!(
                kind = kind.code(),
                total,
                suppressed_since_last_log = suppressed,
                "refused a request"
            );
        }
    }

    /// How many refusals of `kind` there were.
    pub fn count(&self, kind: HttpRefusal) -> u64 {
        self.counts
            .get(kind as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// `{code: count}` for every kind.
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for kind in HttpRefusal::ALL {
            out.insert(kind.code().into(), json!(self.count(kind)));
        }
        Value::Object(out)
    }
}

/// Counts a message refused from (or on behalf of) kernel `kernel` in its [`Rejections`] and
/// logs it unless the log rate limit is reached.
pub fn record_message(
    rejections: &Rejections,
    kernel: &str,
    what: &str,
    error: &kernelgate_wire::Error,
) {
    let kind = error.kind();
    if let Some(suppressed) = rejections.record(kind) {
        tracing::warn!(
            kernel,
            kind = kind.code(),
            total = rejections.count(kind),
            suppressed_since_last_log = suppressed,
            "refused {what}: {}",
            error.detail()
        );
    }
}

/// `{code: count}` of message refusals summed over `sets`.
pub fn messages_json<'a>(sets: impl Iterator<Item = &'a Rejections>) -> Value {
    let mut out = serde_json::Map::new();
    for r in sets {
        for (kind, n) in r.snapshot() {
            let sum = out.get(kind.code()).and_then(Value::as_u64).unwrap_or(0) + n;
            out.insert(kind.code().into(), json!(sum));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_kind() {
        let r = HttpRefusals::default();
        r.record(HttpRefusal::WrongToken);
        r.record(HttpRefusal::WrongToken);
        r.record(HttpRefusal::BadOrigin);
        assert_eq!(r.count(HttpRefusal::WrongToken), 2);
        assert_eq!(r.to_json().get("origin_not_allowed"), Some(&json!(1)));
        assert_eq!(r.to_json().get("no_token"), Some(&json!(0)));
    }
}
