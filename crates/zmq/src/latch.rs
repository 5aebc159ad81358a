//! A one-way switch a thread can wait on beside a socket: threads blocked in [`wait_readable`]
//! wake the moment it is set, instead of waking every few milliseconds to look at a flag (with
//! a thousand idle kernels, those wake-ups were half a core).
//!
//! [`wait_readable`]: crate::wait_readable

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Once set, stays set: its eventfd is written once and never read, so it stays readable.
#[derive(Debug)]
pub struct Latch {
    fd: OwnedFd,
    set: AtomicBool,
}

impl Latch {
    /// A new, unset latch.
    #[allow(unsafe_code)]
    pub fn new() -> std::io::Result<Latch> {
        // SAFETY: eventfd has no memory preconditions; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Latch {
            fd,
            set: AtomicBool::new(false),
        })
    }

    /// Sets it (idempotent): every poll waiting on it returns.
    #[allow(unsafe_code)]
    pub fn set(&self) {
        if self.set.swap(true, Ordering::SeqCst) {
            return;
        }
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. It cannot fail short of
        // the counter overflowing, which one write cannot do.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
