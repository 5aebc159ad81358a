//! IOPub outside a request (backlog, flushing), stdin input requests, and readiness.

use std::collections::VecDeque;
use std::time::Duration;

use kernelgate_wire::content::{InputRequest, KernelInfoReply, KernelInfoRequest};
use kernelgate_wire::{Channel, Message};
use tokio::time::Instant;

use super::{check_status, deadline_after, recv_verified, KernelClient};
use crate::error::{Error, Result};
use crate::execute::approx_size;
use crate::heartbeat::died;

/// IOPub messages no request claimed, oldest dropped first once over a count or a byte budget.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    items: VecDeque<(usize, Message)>,
    bytes: usize,
}

impl Backlog {
    fn push(&mut self, msg: Message, max_count: usize, max_bytes: usize) {
        let size = approx_size(&msg);
        if max_count == 0 || size > max_bytes {
            return;
        }
        while self.items.len() >= max_count || self.bytes + size > max_bytes {
            match self.items.pop_front() {
                Some((old, _)) => self.bytes -= old,
                None => break,
            }
        }
        self.bytes += size;
        self.items.push_back((size, msg));
    }

    fn pop(&mut self) -> Option<Message> {
        let (size, msg) = self.items.pop_front()?;
        self.bytes -= size;
        Some(msg)
    }

    /// Empties the backlog, returning how many messages it held.
    fn clear(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
        self.bytes = 0;
        n
    }
}

impl KernelClient {
    pub(super) fn keep_iopub(&mut self, msg: Message) {
        let (count, bytes) = (self.config.iopub_backlog, self.config.iopub_backlog_bytes);
        self.backlog.push(msg, count, bytes);
    }

    /// The next IOPub message not claimed by a request, waiting up to `timeout`.
    pub async fn recv_iopub(&mut self, timeout: Duration) -> Result<Message> {
        if let Some(m) = self.backlog.pop() {
            return Ok(m);
        }
        let deadline = deadline_after(timeout);
        let Self {
            iopub,
            readers,
            rejections,
            dead,
            ..
        } = self;
        loop {
            tokio::select! {
                r = recv_verified(iopub, &readers.iopub, rejections, Channel::IoPub) => {
                    if let Some(m) = r? {
                        return Ok(m);
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Err(Error::timeout("an iopub message", timeout)),
                () = died(dead.as_mut()) => return Err(Error::KernelDied),
            }
        }
    }

    /// The next `input_request` on stdin, waiting up to `timeout` (for callers that drive
    /// requests themselves); answer it with [`KernelClient::send_input`].
    pub async fn recv_input_request(&mut self, timeout: Duration) -> Result<Message> {
        let deadline = deadline_after(timeout);
        loop {
            let Self {
                stdin,
                readers,
                rejections,
                ..
            } = self;
            let msg = tokio::select! {
                r = recv_verified(stdin, &readers.stdin, rejections, Channel::Stdin) => r?,
                () = tokio::time::sleep_until(deadline) => return Err(Error::timeout("an input_request", timeout)),
            };
            if let Some(m) = msg.filter(|m| m.msg_type() == InputRequest::MSG_TYPE) {
                self.last_input_request = Some(m.clone());
                return Ok(m);
            }
        }
    }

    /// Drops every IOPub message that arrives until none has for `quiet`, and the backlog.
    pub async fn flush_iopub(&mut self, quiet: Duration) -> Result<usize> {
        let mut n = self.backlog.clear();
        loop {
            match self.recv_iopub(quiet).await {
                Ok(_) => n += 1,
                Err(e) if e.is_timeout() => return Ok(n),
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until the kernel answers `kernel_info_request` AND an IOPub message got through
    /// (subscriptions join slowly), as jupyter_client does; then flushes IOPub.
    pub async fn wait_for_ready(&mut self, timeout: Duration) -> Result<KernelInfoReply> {
        let deadline = deadline_after(timeout);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::timeout("the kernel to become ready", timeout));
            }
            let request = KernelInfoRequest::default();
            let id = match self
                .send_request_within(
                    Channel::Shell,
                    KernelInfoRequest::MSG_TYPE,
                    &request,
                    remaining,
                )
                .await
            {
                Ok(id) => id,
                Err(e) if e.is_timeout() => {
                    return Err(Error::timeout("the kernel to become ready", timeout))
                }
                Err(e) => return Err(e),
            };
            match self
                .wait_reply(Channel::Shell, &id, remaining.min(Duration::from_secs(1)))
                .await
            {
                Ok(reply) => match self.recv_iopub(Duration::from_millis(200)).await {
                    Ok(_) => {
                        check_status(&reply)?;
                        let info = reply.content_as()?;
                        self.flush_iopub(Duration::from_millis(200)).await?;
                        return Ok(info);
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(e) => return Err(e),
                },
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Backlog;
    use crate::execute::tests::stream;

    #[test]
    fn the_backlog_is_bounded_in_count_and_bytes_oldest_first() {
        let mut backlog = Backlog::default();
        for text in ["1", "2", "3"] {
            backlog.push(stream(text), 2, usize::MAX);
        }
        assert_eq!(
            backlog.pop().and_then(|m| m.content.get("text").cloned()),
            Some("2".into())
        );
        backlog.clear();
        let big = "x".repeat(10_000);
        for _ in 0..5 {
            backlog.push(stream(&big), 100, 25_000);
        }
        assert_eq!(backlog.items.len(), 2);
        assert!(backlog.bytes <= 25_000);
        backlog.push(stream(&"y".repeat(30_000)), 100, 25_000);
        assert_eq!(
            backlog.items.len(),
            2,
            "a message over the whole budget is not kept"
        );
        assert_eq!(backlog.clear(), 2);
        assert_eq!(backlog.bytes, 0);
    }
}
