//! `zmq_poll` over several sockets.

use std::ops::BitOr;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::ffi::{self, PollItemRaw};
use crate::latch::Latch;
use crate::socket::Socket;

/// A set of poll/readiness flags (ZMQ_POLLIN / ZMQ_POLLOUT / ZMQ_POLLERR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollEvents(i16);

impl PollEvents {
    /// No events.
    pub const NONE: Self = Self(0);
    /// A message can be received.
    pub const READABLE: Self = Self(1);
    /// A message can be sent.
    pub const WRITABLE: Self = Self(2);
    /// Error condition (only for raw fds).
    pub const ERROR: Self = Self(4);

    pub(crate) fn from_bits(bits: i16) -> Self {
        Self(bits & 7)
    }

    /// Whether all flags in `other` are set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether [`PollEvents::READABLE`] is set.
    pub fn is_readable(self) -> bool {
        self.contains(Self::READABLE)
    }

    /// Whether [`PollEvents::WRITABLE`] is set.
    pub fn is_writable(self) -> bool {
        self.contains(Self::WRITABLE)
    }
}

impl BitOr for PollEvents {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// One socket to poll, the events wanted, and (after [`poll`]) the events that occurred.
/// (A socket and a [`Latch`] are waited on together by [`wait_readable`].)
#[derive(Debug)]
pub struct PollItem<'a> {
    socket: &'a Socket,
    events: PollEvents,
    revents: PollEvents,
}

impl<'a> PollItem<'a> {
    /// Watch `socket` for `events`.
    pub fn new(socket: &'a Socket, events: PollEvents) -> Self {
        Self {
            socket,
            events,
            revents: PollEvents::NONE,
        }
    }

    /// The events that occurred in the last [`poll`].
    pub fn revents(&self) -> PollEvents {
        self.revents
    }

    /// Readable after the last [`poll`].
    pub fn is_readable(&self) -> bool {
        self.revents.is_readable()
    }

    /// Writable after the last [`poll`].
    pub fn is_writable(&self) -> bool {
        self.revents.is_writable()
    }
}

/// Waits until at least one item is ready or `timeout` passes (`None` = forever).
/// Returns how many items have events. `EINTR` is returned as an error.
pub fn poll(items: &mut [PollItem<'_>], timeout: Option<Duration>) -> Result<usize> {
    let mut raw: Vec<PollItemRaw> = items
        .iter()
        .map(|i| i.socket.raw().poll_item(i.events.0))
        .collect();
    // Round up so a 0.5 ms timeout does not become a busy 0 ms poll.
    let ms = timeout.map_or(-1, |d| {
        let ms = d.as_micros().div_ceil(1000);
        std::ffi::c_long::try_from(ms).unwrap_or(std::ffi::c_long::MAX)
    });
    let n = ffi::poll(&mut raw, ms)?;
    for (item, r) in items.iter_mut().zip(&raw) {
        item.revents = PollEvents::from_bits(r.revents);
    }
    Ok(n)
}

/// Waits until `socket` has a message to read (`Ok(true)`), or `latch` is set or `timeout` passes
/// (`Ok(false)`). What [`poll`] does for one socket and a latch, in fewer system calls: zmq_poll
/// always makes a non-blocking pass first and re-reads ZMQ_EVENTS around each poll(2); here
/// ZMQ_EVENTS (which processes libzmq's pending commands) is read once before each sleep on
/// the socket's edge-triggered ZMQ_FD, so no edge can be missed, and once per wake-up. A
/// kernel's shell waits once per request: the calls saved are a few microseconds of each
/// round trip.
pub fn wait_readable(socket: &Socket, latch: &Latch, timeout: Option<Duration>) -> Result<bool> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let fd = socket.fd()?;
    loop {
        if socket.events()?.is_readable() {
            return Ok(true);
        }
        if latch.is_set() {
            return Ok(false);
        }
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                // Rounded up, so a sub-millisecond wait does not spin at 0 ms.
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            }
        };
        let [_, latched] = ffi::poll_readable([fd, latch.raw_fd()], ms)?;
        if latched {
            return Ok(false);
        }
    }
}
