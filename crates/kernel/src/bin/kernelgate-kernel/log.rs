//! A minimal `tracing` subscriber: events at or above one level, one line each on stderr. The
//! lean binary's whole point is mapping little code, so no filter language and no formatting
//! layers: `error`, `warn`, `info` (the default), `debug`, `trace` or `off`.

use std::fmt::{Debug, Write as _};
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Writes enabled events to stderr.
pub struct StderrLog {
    max: LevelFilter,
}

impl StderrLog {
    /// Installs a subscriber for `filter`, read as a level. A `kernelgate` filter with
    /// directives (`kernelgate=debug,warn`) is reduced to its bare level, if it has one.
    pub fn install(filter: &str) {
        let max = filter
            .split(',')
            .rev()
            .find_map(|d| d.trim().parse::<LevelFilter>().ok())
            .unwrap_or(LevelFilter::INFO);
        // Fails only if a subscriber is already set, which then keeps logging.
        let _ = tracing::subscriber::set_global_default(StderrLog { max });
    }
}

impl Subscriber for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    // The kernel crates log events only; spans are accepted and ignored.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let mut line = format!(
            "{} {:>5} {}:",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            metadata.level(),
            metadata.target()
        );
        event.record(&mut Fields(&mut line));
        line.push('\n');
        // One write per line, so lines of different threads do not interleave.
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Appends `message` bare and other fields as `name=value`.
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}
