//! tokio bridge: drive a [`Socket`] from async code through its notification fd.
//!
//! libzmq's ZMQ_FD is edge-triggered and only says "ZMQ_EVENTS may have changed". So
//! each operation first tries non-blocking; on `EAGAIN` it re-reads ZMQ_EVENTS (which
//! also processes libzmq's pending commands), and only if the socket is still not ready
//! does it wait for the fd. Readiness is cleared *before* the next attempt, never after
//! a failed one, so an edge that arrives in between is not lost. No busy polling.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::error::{Error, Result};
use crate::poll::PollEvents;
use crate::socket::Socket;

/// The socket's notification fd. Owned by libzmq: never read or closed here.
#[derive(Debug)]
struct ZmqFd(RawFd);

impl AsRawFd for ZmqFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A [`Socket`] usable from tokio tasks. `Send`, so it can move into `tokio::spawn`.
/// Must be created inside a tokio runtime (with the `net` driver enabled).
#[derive(Debug)]
pub struct AsyncSocket {
    // Declared before `socket`: deregister the fd before libzmq closes it.
    fd: AsyncFd<ZmqFd>,
    socket: Socket,
    /// ZMQ_EVENTS last found nothing to receive, and no edge of the fd has been seen since.
    /// Until one is, a receive waits on the fd without asking libzmq first: a receive future
    /// made again and again in a `select!` loop (whose other branches keep firing) would
    /// otherwise cost two system calls each time (libzmq polls its mailbox on every attempt).
    /// Sound because libzmq signals the fd for anything that arrives after ZMQ_EVENTS looked,
    /// and only a libzmq call on this socket drains that signal before tokio's reactor sees it.
    /// Any other use of the socket (a send, or a call through [`AsyncSocket::get_ref`]) may
    /// drain the fd's signal before tokio's reactor has seen it, so each clears the flag.
    quiet: AtomicBool,
}

impl AsyncSocket {
    /// Wraps a socket (bind/connect/configure it first, or via [`AsyncSocket::get_ref`]).
    /// Fails (rather than panicking) outside a tokio runtime.
    // The one unsafe call outside `ffi`: tokio requires `unsafe` to register a raw fd.
    #[allow(unsafe_code)]
    pub fn new(socket: Socket) -> Result<Self> {
        let raw = socket.fd()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::InvalidArgument(
                "AsyncSocket needs a tokio runtime".into(),
            ));
        }
        // SAFETY: `raw` is libzmq's notification fd for `socket`, valid and unchanged
        // while the socket is open. `AsyncSocket` owns both and drops `fd` first (field
        // order), and never hands the socket out by value without dropping `fd`.
        let fd = unsafe { AsyncFd::register_with_interest(ZmqFd(raw), Interest::READABLE) }
            .map_err(|e| Error::io("register zmq fd with tokio", "", e.into_parts().1))?;
        Ok(Self {
            fd,
            socket,
            quiet: AtomicBool::new(false),
        })
    }

    /// The wrapped socket, for options and endpoints.
    pub fn get_ref(&self) -> &Socket {
        self.quiet.store(false, Ordering::Relaxed);
        &self.socket
    }

    /// Unwraps the socket.
    pub fn into_inner(self) -> Socket {
        let Self { fd, socket, .. } = self;
        drop(fd);
        socket
    }

    /// Receives a multipart message (within the socket's [`RecvLimits`](crate::RecvLimits)).
    pub async fn recv_multipart(&mut self) -> Result<Vec<Vec<u8>>> {
        self.wait_if_quiet().await?;
        loop {
            match self.socket.recv_multipart(true) {
                Err(e) if e.is_again() => self.wait(PollEvents::READABLE).await?,
                other => return other,
            }
        }
    }

    /// Like [`AsyncSocket::recv_multipart`], calling `caught_up` each time the queue was found
    /// empty, and again when the wait for it ends: whatever is received after such a call
    /// arrived after it (how a replay guard's reader learns when it was last caught up). The
    /// first call comes before the wait, so a future dropped while waiting (a losing branch of
    /// `select!`) has still reported it.
    pub async fn recv_multipart_noting(&mut self, caught_up: impl Fn()) -> Result<Vec<Vec<u8>>> {
        if self.quiet.load(Ordering::Relaxed) {
            caught_up();
            self.wait_if_quiet().await?;
            caught_up();
        }
        loop {
            match self.socket.recv_multipart(true) {
                Err(e) if e.is_again() => {
                    caught_up();
                    self.wait(PollEvents::READABLE).await?;
                    caught_up();
                }
                other => return other,
            }
        }
    }

    /// Receives one frame and whether more follow.
    pub async fn recv(&mut self) -> Result<(Vec<u8>, bool)> {
        self.wait_if_quiet().await?;
        loop {
            match self.socket.recv(true) {
                Err(e) if e.is_again() => self.wait(PollEvents::READABLE).await?,
                other => return other,
            }
        }
    }

    /// Sends a multipart message, waiting while the high-water mark is reached.
    pub async fn send_multipart<F: AsRef<[u8]>>(&mut self, frames: &[F]) -> Result<()> {
        self.quiet.store(false, Ordering::Relaxed);
        loop {
            match self.socket.send_multipart(frames, true) {
                Err(e) if e.is_again() => self.wait(PollEvents::WRITABLE).await?,
                other => return other,
            }
        }
    }

    /// Waits for an edge of the fd if ZMQ_EVENTS last found nothing (see `quiet`).
    async fn wait_if_quiet(&mut self) -> Result<()> {
        if self.quiet.load(Ordering::Relaxed) {
            self.wait_for_edge().await?;
        }
        Ok(())
    }

    /// Returns once `want` may be satisfied (callers retry their operation and loop).
    async fn wait(&mut self, want: PollEvents) -> Result<()> {
        // The failed attempt may have consumed the fd's edge while libzmq still has
        // commands queued; ZMQ_EVENTS processes them and tells the truth.
        let events = self.socket.events()?;
        if events.contains(want) {
            // Let other tasks run in case libzmq reports ready but the op still fails.
            tokio::task::yield_now().await;
            return Ok(());
        }
        if want == PollEvents::READABLE {
            self.quiet.store(true, Ordering::Relaxed);
        }
        self.wait_for_edge().await
    }

    async fn wait_for_edge(&mut self) -> Result<()> {
        let mut guard = self
            .fd
            .readable()
            .await
            .map_err(|e| Error::io("wait for zmq fd", "", e))?;
        // Clear before retrying: any edge from now on re-arms tokio's readiness.
        guard.clear_ready();
        self.quiet.store(false, Ordering::Relaxed);
        Ok(())
    }
}
