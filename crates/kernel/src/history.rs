//! The input history kept by the framework for history_request.

use kernelgate_wire::BoundedQueue;
use serde_json::{json, Value};

/// Bytes of code and output kept at most: a client sending huge cells cannot make the history
/// grow without bound (the oldest entries go first, as with the entry limit).
pub const MAX_BYTES: usize = 64 << 20;

/// Longest search pattern accepted, in characters.
pub const MAX_PATTERN: usize = 1024;

/// Pattern comparison steps one search may take (a fraction of a second): glob matching with
/// a `*` can cost pattern x text per entry, so a crafted search would otherwise hold the
/// shell for hours.
const SEARCH_BUDGET: u64 = 200_000_000;

/// Why a history_request was not answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// The search pattern is longer than [`MAX_PATTERN`].
    PatternTooLong,
    /// The search would take more than its budget of comparisons.
    SearchTooCostly,
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::PatternTooLong => {
                write!(f, "search pattern longer than {MAX_PATTERN} characters")
            }
            QueryError::SearchTooCostly => {
                f.write_str("search pattern too costly for this history; narrow it down")
            }
        }
    }
}

/// Inputs of this kernel session, numbered from 1 like IPython's.
#[derive(Debug)]
pub struct History {
    entries: BoundedQueue<(i64, String, Option<String>)>,
}

impl History {
    /// A history that keeps at most `max_entries` inputs and [`MAX_BYTES`] (oldest dropped
    /// first).
    pub fn new(max_entries: usize) -> History {
        History {
            entries: BoundedQueue::new(max_entries, MAX_BYTES),
        }
    }

    /// Records input `code` run as execution `count`, with its plain-text result if any. An
    /// entry larger than [`MAX_BYTES`] by itself is not kept.
    pub fn record(&mut self, count: i64, code: &str, output: Option<String>) {
        let size = code.len() + output.as_ref().map_or(0, String::len);
        // Copied only once it is known to be kept.
        if self.entries.would_keep(size) {
            self.entries.push((count, code.to_owned(), output), size);
        }
    }

    /// Bytes of code and output held.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.entries.bytes()
    }

    /// Entries held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn entry(session: i64, e: &(i64, String, Option<String>), output: bool) -> Value {
        if output {
            json!([session, e.0, [e.1, e.2]])
        } else {
            json!([session, e.0, e.1])
        }
    }

    /// Answers a history_request: `tail` (last n), `range` (start..stop of the current session)
    /// or `search` (glob with `*` and `?`).
    pub fn query(
        &self,
        req: &kernelgate_wire::content::HistoryRequest,
    ) -> Result<Vec<Value>, QueryError> {
        self.query_within(req, SEARCH_BUDGET)
    }

    fn query_within(
        &self,
        req: &kernelgate_wire::content::HistoryRequest,
        mut budget: u64,
    ) -> Result<Vec<Value>, QueryError> {
        let session = 0;
        let out = req.output;
        Ok(match req.hist_access_type.as_str() {
            "tail" => {
                let n = usize::try_from(req.n.unwrap_or(10)).unwrap_or(0);
                let skip = self.entries.len().saturating_sub(n);
                self.entries
                    .iter()
                    .skip(skip)
                    .map(|e| Self::entry(session, e, out))
                    .collect()
            }
            "range" => {
                let start = req.start.unwrap_or(0);
                let stop = req.stop.unwrap_or(i64::MAX);
                self.entries
                    .iter()
                    .filter(|e| e.0 >= start && e.0 < stop)
                    .map(|e| Self::entry(session, e, out))
                    .collect()
            }
            "search" => {
                let pattern: Vec<char> = req.pattern.as_deref().unwrap_or("*").chars().collect();
                if pattern.len() > MAX_PATTERN {
                    return Err(QueryError::PatternTooLong);
                }
                let mut matches = Vec::new();
                for e in self.entries.iter() {
                    match glob_match(&pattern, &e.1, &mut budget) {
                        Some(true) => matches.push(e),
                        Some(false) => {}
                        None => return Err(QueryError::SearchTooCostly),
                    }
                }
                let n = req
                    .n
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(usize::MAX);
                let mut hits: Vec<Value> = matches
                    .into_iter()
                    .map(|e| Self::entry(session, e, out))
                    .collect();
                if req.unique == Some(true) {
                    // Keep the last occurrence of each input, in order.
                    let mut seen = std::collections::HashSet::new();
                    let mut unique: Vec<Value> = hits
                        .into_iter()
                        .rev()
                        .filter(|h| {
                            seen.insert(h.get(2).map(|v| v.to_string()).unwrap_or_default())
                        })
                        .collect();
                    unique.reverse();
                    hits = unique;
                }
                let skip = hits.len().saturating_sub(n);
                hits.drain(..skip);
                hits
            }
            _ => Vec::new(),
        })
    }
}

/// Glob matching with `*` and `?` (iterative, no recursion), each step charged to `budget`:
/// `None` once it runs out.
fn glob_match(p: &[char], text: &str, budget: &mut u64) -> Option<bool> {
    // From here on the pattern is only stars, which match whatever text is left.
    let stars_from = p.iter().rposition(|c| *c != '*').map_or(0, |i| i + 1);
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        *budget = budget.checked_sub(1)?;
        match p.get(pi) {
            Some('*') if pi >= stars_from => return Some(true),
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || Some(c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return Some(false),
            },
        }
    }
    Some(
        p.get(pi..)
            .is_some_and(|rest| rest.iter().all(|c| *c == '*')),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;
    use kernelgate_wire::content::HistoryRequest;

    fn matches(pattern: &str, text: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        glob_match(&p, text, &mut SEARCH_BUDGET.clone()) == Some(true)
    }

    fn search(pattern: &str) -> HistoryRequest {
        serde_json::from_value(json!({
            "hist_access_type": "search", "pattern": pattern, "output": false, "raw": true
        }))
        .unwrap_or_else(|e| panic!("request: {e}"))
    }

    #[test]
    fn globs() {
        assert!(matches("*", "anything"));
        assert!(matches("a*c", "abbbc"));
        assert!(matches("a?c", "abc"));
        assert!(!matches("a?c", "abbc"));
        assert!(matches("*x*", "1x2"));
        assert!(!matches("x", ""));
    }

    #[test]
    fn history_is_bounded_in_bytes_oldest_first() {
        let mut h = History::new(10_000);
        let cell = "x".repeat(MAX_BYTES / 4);
        for count in 1..=6 {
            h.record(count, &cell, None);
        }
        assert!(h.bytes() <= MAX_BYTES);
        assert_eq!(h.len(), 4);
        h.record(7, &"y".repeat(MAX_BYTES + 1), None);
        assert_eq!(h.len(), 4, "an entry over the whole cap is not kept");
        let tail: HistoryRequest = serde_json::from_value(json!({
            "hist_access_type": "tail", "n": 1, "output": false, "raw": true
        }))
        .unwrap_or_else(|e| panic!("request: {e}"));
        let last = h.query(&tail).unwrap_or_default();
        assert_eq!(last.first().and_then(|e| e.get(1)), Some(&json!(6)));
    }

    #[test]
    fn a_costly_search_is_refused_not_run() {
        let mut h = History::new(10_000);
        for count in 1..=64 {
            h.record(count, &"a".repeat(1 << 14), None);
        }
        let budget = 1 << 22;
        // After the `*`, each text position retries the whole segment: pattern x text steps.
        let costly = format!("*{}b", "a".repeat(1000));
        assert_eq!(
            h.query_within(&search(&costly), budget),
            Err(QueryError::SearchTooCostly)
        );
        let long = "a".repeat(MAX_PATTERN + 1);
        assert_eq!(h.query(&search(&long)), Err(QueryError::PatternTooLong));
        for ordinary in ["a*", "*a", "*a*", "a?a*"] {
            assert_eq!(
                h.query_within(&search(ordinary), budget).map(|v| v.len()),
                Ok(64)
            );
        }
    }
}
