//! Printing results: a table row per case (case, peer figure, ours, ratio), or with `--json` one
//! JSON object per line with the fields `case`, `peer_per_s`, `ours_per_s`, `ratio`.

use serde_json::{json, Value};

/// One measured case.
#[derive(Debug, Clone)]
pub struct Row {
    /// Case name, e.g. `small/sign`.
    pub case: String,
    /// Who the comparison figure comes from (`jupyter_client 8.10.0`, `target`), if any.
    pub peer: Option<String>,
    /// The comparison figure (peer throughput, or the target), per second.
    pub peer_per_s: Option<f64>,
    /// Our throughput, per second.
    pub ours_per_s: f64,
    /// A target on the ratio (e.g. 20 for ">= 20x the peer"), if the case has one.
    pub min_ratio: Option<f64>,
}

impl Row {
    /// ours / peer.
    pub fn ratio(&self) -> Option<f64> {
        self.peer_per_s
            .filter(|p| *p > 0.0)
            .map(|p| self.ours_per_s / p)
    }

    /// Whether the target (if any) is met.
    pub fn met(&self) -> Option<bool> {
        Some(self.ratio()? >= self.min_ratio?)
    }
}

/// Prints rows as they come.
#[derive(Debug)]
pub struct Report {
    json: bool,
    printed_header: bool,
    rows: Vec<Row>,
}

impl Report {
    /// A report printing JSON lines (`json`) or a table.
    pub fn new(json: bool) -> Report {
        Report {
            json,
            printed_header: false,
            rows: Vec::new(),
        }
    }

    /// Prints a free-text note (table mode only; JSON output stays pure).
    pub fn note(&self, text: &str) {
        if !self.json {
            println!("{text}");
        }
    }

    /// Prints and records one row.
    pub fn row(&mut self, row: Row) {
        if self.json {
            let mut v = json!({
                "case": row.case,
                "peer_per_s": row.peer_per_s,
                "ours_per_s": row.ours_per_s,
                "ratio": row.ratio(),
            });
            if let Value::Object(m) = &mut v {
                m.insert("peer".into(), json!(row.peer));
                m.insert("min_ratio".into(), json!(row.min_ratio));
                m.insert("met".into(), json!(row.met()));
            }
            println!("{v}");
        } else {
            if !self.printed_header {
                println!(
                    "{:<44} {:>22} {:>14} {:>9}  target",
                    "case", "peer msg/s", "ours msg/s", "ratio"
                );
                self.printed_header = true;
            }
            let peer = match (&row.peer, row.peer_per_s) {
                (Some(who), Some(p)) if who == "target" => format!("target {}", group(p)),
                (_, Some(p)) => group(p),
                _ => "-".into(),
            };
            let ratio = row.ratio().map_or("-".into(), |r| format!("{r:.1}x"));
            let target = match (row.min_ratio, row.met()) {
                (Some(min), Some(met)) => {
                    format!(">= {min}x {}", if met { "met" } else { "MISSED" })
                }
                _ => String::new(),
            };
            println!(
                "{:<44} {:>22} {:>14} {:>9}  {}",
                row.case,
                peer,
                group(row.ours_per_s),
                ratio,
                target
            );
        }
        self.rows.push(row);
    }

    /// The rows printed so far.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }
}

/// `1234567.8` -> `1,234,568`.
pub fn group(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
