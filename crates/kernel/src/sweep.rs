//! Sweeping the replay history while a channel's loop waits.
//!
//! Each admitted message sweeps expired digests, so a kernel that goes quiet after a burst would
//! keep the burst's digests until its next message. A loop asks [`ReplaySweep::timeout`] how
//! long it may wait and calls [`ReplaySweep::after_wait`] when the wait ends. The due time is
//! kept across early wake-ups (ticks, signals), so they never push the sweep back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kernelgate_wire::Session;

#[derive(Debug, Default)]
pub(crate) struct ReplaySweep {
    due: Option<DateTime<Utc>>,
}

impl ReplaySweep {
    /// The longest the next wait may last before a sweep is due; `None` when the history is
    /// empty (or replay protection is off).
    pub(crate) fn timeout(&mut self, session: &Session) -> Option<Duration> {
        if self.due.is_none() {
            self.due = session.replay_next_sweep();
        }
        self.due
            .map(|due| (due - Utc::now()).to_std().unwrap_or_default())
    }

    /// Sweeps if the due time has come: how many digests were forgotten. The next due time is
    /// then at least a sixteenth of the window away ([`Session::replay_next_sweep`]), so a sweep
    /// held back or with nothing to do cannot make the loop spin.
    pub(crate) fn after_wait(&mut self, session: &Session) -> usize {
        match self.due {
            Some(due) if Utc::now() >= due => {
                self.due = None;
                session.forget_expired()
            }
            _ => 0,
        }
    }
}
