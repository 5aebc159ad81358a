//! IOPub outside a request (backlog, flushing), stdin input requests, and readiness.

use std::time::Duration;

use kernelgate_wire::content::{InputRequest, KernelInfoReply, KernelInfoRequest};
use kernelgate_wire::{Channel, Message};
use tokio::time::Instant;

use super::{check_status, deadline_after, recv_verified, KernelClient};
use crate::error::{Error, Result};
use crate::execute::approx_size;
use crate::heartbeat::died;

impl KernelClient {
    /// Keeps an IOPub message no request claimed, oldest dropped first past the configured
    /// count and bytes.
    pub(super) fn keep_iopub(&mut self, msg: Message) {
        let size = approx_size(&msg);
        self.backlog.push(msg, size);
    }

    /// The next IOPub message not claimed by a request, waiting up to `timeout`.
    pub async fn recv_iopub(&mut self, timeout: Duration) -> Result<Message> {
        if let Some(m) = self.backlog.pop_front() {
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
