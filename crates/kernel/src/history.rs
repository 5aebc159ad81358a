//! The input history kept by the framework for history_request.

use std::collections::VecDeque;

use serde_json::{json, Value};

/// Inputs of this kernel session, numbered from 1 like IPython's.
#[derive(Debug, Default)]
pub struct History {
    entries: VecDeque<(i64, String, Option<String>)>,
    max_entries: usize,
}

impl History {
    /// A history that keeps at most `max_entries` inputs (oldest dropped first).
    pub fn new(max_entries: usize) -> History {
        History {
            entries: VecDeque::new(),
            max_entries,
        }
    }

    /// Records input `code` run as execution `count`, with its plain-text result if any.
    pub fn record(&mut self, count: i64, code: &str, output: Option<String>) {
        if self.entries.len() >= self.max_entries {
            self.entries.pop_front();
        }
        self.entries.push_back((count, code.to_owned(), output));
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
    pub fn query(&self, req: &kernelgate_wire::content::HistoryRequest) -> Vec<Value> {
        let session = 0;
        let out = req.output;
        match req.hist_access_type.as_str() {
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
                let pattern = req.pattern.clone().unwrap_or_else(|| "*".into());
                let n = req
                    .n
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(usize::MAX);
                let mut hits: Vec<Value> = self
                    .entries
                    .iter()
                    .filter(|e| glob_match(&pattern, &e.1))
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
        }
    }
}

/// Glob matching with `*` and `?` (iterative, linear in practice, no recursion).
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
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
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*x*", "1x2"));
        assert!(!glob_match("x", ""));
    }
}
