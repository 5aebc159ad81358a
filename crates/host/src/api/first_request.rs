//! A deadline for a connection's first request headers, which hyper does not enforce itself.
//!
//! hyper-util's server first waits, without any deadline, for enough bytes to tell HTTP/1 from
//! HTTP/2 (and its option to skip that wait has no effect on connections that may upgrade to a
//! WebSocket). A client that connects and sends nothing, or part of the HTTP/2 preface, would
//! hold its connection slot for good, and enough of them lock everyone out. So every
//! connection must deliver the end of its first request's headers (`\r\n\r\n`) within the
//! deadline, or its reads fail. Later requests on a kept-alive connection are under hyper's own
//! header deadline, which does apply once the connection speaks HTTP/1. The API serves HTTP/1
//! only: a connection opening with the HTTP/2 preface is closed at once.
//!
//! It wraps the stream hyper reads, so over TLS it sees the decrypted bytes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// An acceptor whose streams carry the first-request deadline.
#[derive(Debug, Clone)]
pub struct FirstRequestDeadline<A> {
    inner: A,
    timeout: Duration,
}

impl<A> FirstRequestDeadline<A> {
    /// Wraps `inner`'s streams: each must deliver its first request's headers within `timeout`.
    pub fn new(inner: A, timeout: Duration) -> Self {
        FirstRequestDeadline { inner, timeout }
    }
}

type Accepted<T, S> = Pin<Box<dyn Future<Output = io::Result<(T, S)>> + Send>>;

impl<I, S, A> Accept<I, S> for FirstRequestDeadline<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = FirstRequest<A::Stream>;
    type Service = A::Service;
    type Future = Accepted<Self::Stream, Self::Service>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let accepted = self.inner.accept(stream, service);
        let timeout = self.timeout;
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((FirstRequest::new(stream, timeout), service))
        })
    }
}

/// What the bytes read so far tell.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Bytes seen, up to 3 (enough to recognise `PRI`).
    seen: u8,
    start: [u8; 3],
    /// How much of `\r\n\r\n` the latest bytes match.
    blank_line: u8,
}

/// After `bytes`: whether the first request's headers are complete, or an error (the HTTP/2
/// preface). Pure, so that it is tested without sockets.
fn advance(p: &mut Progress, bytes: &[u8]) -> io::Result<bool> {
    for &b in bytes {
        if let Some(slot) = p.start.get_mut(usize::from(p.seen)) {
            *slot = b;
            p.seen += 1;
            if p.seen == 3 && &p.start == b"PRI" {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "HTTP/2 is not served",
                ));
            }
        }
        p.blank_line = match (p.blank_line, b) {
            (0 | 2, b'\r') => p.blank_line + 1,
            (1 | 3, b'\n') => p.blank_line + 1,
            (_, b'\r') => 1,
            _ => 0,
        };
        if p.blank_line == 4 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A stream whose reads fail once its deadline passes before the first request's headers end.
#[derive(Debug)]
pub struct FirstRequest<T> {
    inner: T,
    /// None once the first request's headers have arrived.
    deadline: Option<Pin<Box<Sleep>>>,
    progress: Progress,
}

impl<T> FirstRequest<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        FirstRequest {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            progress: Progress::default(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstRequest<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(deadline) = this.deadline.as_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        // Polled on every read, so the task is woken when it passes.
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request headers not received in time",
            )));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            let new = buf.filled().get(before..).unwrap_or_default();
            if advance(&mut this.progress, new)? {
                this.deadline = None;
            }
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstRequest<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete_after(chunks: &[&[u8]]) -> io::Result<Option<usize>> {
        let mut p = Progress::default();
        for (i, c) in chunks.iter().enumerate() {
            if advance(&mut p, c)? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    #[test]
    fn headers_end_at_the_first_blank_line_across_reads() {
        let r = complete_after(&[b"GET / HTTP/1.1\r\nHost: x\r", b"\n", b"\r", b"\nbody"]);
        assert_eq!(r.ok().flatten(), Some(3));
        assert_eq!(
            complete_after(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]).ok(),
            Some(None)
        );
        assert_eq!(complete_after(&[b"\r\r\n\r\n"]).ok(), Some(Some(0)));
        assert_eq!(complete_after(&[b"\n\n\r\n"]).ok(), Some(None));
        assert_eq!(complete_after(&[b""]).ok(), Some(None));
    }

    #[test]
    fn the_http2_preface_is_refused_even_split() {
        assert!(complete_after(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).is_err());
        assert!(complete_after(&[b"P", b"R", b"I"]).is_err());
        assert!(complete_after(&[b"PR"]).is_ok());
        assert!(complete_after(&[b"POST / HTTP/1.1\r\n\r\n"]).is_ok());
    }
}
