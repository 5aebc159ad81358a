//! Accepting HTTP connections. Two bounds hold before any token is checked, so that clients who
//! connect and never finish a request (slowloris) cannot use up the host's file descriptors,
//! which its kernels and their sockets need too:
//! - at most `max` connections are open at once; past that a new one is closed at once;
//! - a request's headers must arrive within a deadline ([`HEADER_READ_TIMEOUT`] by default):
//!   the first request's by [`super::first_request`], later ones by hyper's (which needs a
//!   timer: `axum::serve` gives it none, so it would silently not apply).
//!
//! A WebSocket, once upgraded, keeps its connection's place until it closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::first_request::FirstRequestDeadline;
use crate::refusals::{HttpRefusal, HttpRefusals};

/// How long a client has by default to send a request's headers (hyper's own default).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A server on `listener` whose connections go through `acceptor`, with the header deadline.
pub(crate) fn server<A>(
    listener: std::net::TcpListener,
    acceptor: A,
    header_read_timeout: Duration,
) -> io::Result<axum_server::Server<FirstRequestDeadline<A>>> {
    listener.set_nonblocking(true)?;
    let acceptor = FirstRequestDeadline::new(acceptor, header_read_timeout);
    let mut server = axum_server::from_tcp(listener).acceptor(acceptor);
    server
        .http_builder()
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    Ok(server)
}

/// Accepts at most `max` open connections, each with TCP_NODELAY (without it a reply made of
/// several writes, a WebSocket execute, waits for the client's delayed ACK: about 40 ms).
#[derive(Debug, Clone)]
pub struct CappedAcceptor {
    permits: Arc<Semaphore>,
    refusals: Arc<HttpRefusals>,
}

impl CappedAcceptor {
    /// At most `max` (at least 1) connections open at once; those turned away are counted in
    /// `refusals`.
    pub fn new(max: usize, refusals: Arc<HttpRefusals>) -> CappedAcceptor {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        CappedAcceptor {
            permits: Arc::new(Semaphore::new(max)),
            refusals,
        }
    }

    fn admit(&self, stream: TcpStream) -> io::Result<Capped> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.refusals.record(HttpRefusal::ConnectionLimit);
            return Err(io::Error::other("connection limit reached"));
        };
        stream.set_nodelay(true)?;
        Ok(Capped {
            stream,
            _permit: permit,
        })
    }
}

impl<S> Accept<TcpStream, S> for CappedAcceptor {
    type Stream = Capped;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Capped, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(self.admit(stream).map(|s| (s, service)))
    }
}

/// An accepted connection holding its place under the limit until it is dropped.
#[derive(Debug)]
pub struct Capped {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
