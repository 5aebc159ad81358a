//! Heartbeat pings and the background death monitor.

use std::time::Duration;

use kernelgate_wire::Channel;
use kernelgate_zmq::{AsyncSocket, SocketType};
use tokio::sync::watch;

use super::KernelClient;
use crate::connect::client_socket;
use crate::error::{Error, Result};
use crate::heartbeat::{HeartbeatConfig, HeartbeatMonitor};

impl KernelClient {
    /// Pings the heartbeat channel once: true if the kernel echoed within `timeout`.
    pub async fn heartbeat_ok(&mut self, timeout: Duration) -> bool {
        match self.ping(timeout).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::debug!(error = %e, "heartbeat ping failed");
                false
            }
        }
    }

    async fn ping(&mut self, timeout: Duration) -> Result<bool> {
        if self.hb.is_none() {
            let socket = client_socket(
                &self.ctx,
                SocketType::Req,
                &self.info.endpoint(Channel::Heartbeat),
                self.curve.as_ref(),
                None,
            )?;
            socket.set_linger(Some(Duration::ZERO))?;
            self.hb = Some(AsyncSocket::new(socket)?);
        }
        self.hb_count += 1;
        let payload = format!("ping {}", self.hb_count).into_bytes();
        let Some(hb) = self.hb.as_mut() else {
            return Ok(false);
        };
        let exchange = async {
            hb.send_multipart(&[&payload]).await?;
            hb.recv_multipart().await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(frames)) => Ok(frames.first() == Some(&payload)),
            Ok(Err(e)) => {
                self.hb = None;
                Err(e.into())
            }
            Err(_) => {
                // A REQ socket that missed its reply cannot send again: start over next time.
                self.hb = None;
                Ok(false)
            }
        }
    }

    /// Starts a background thread pinging the heartbeat; once it declares the kernel dead, every
    /// wait of this client fails with [`Error::KernelDied`]. Replaces a running monitor.
    pub fn start_heartbeat_monitor(&mut self, config: HeartbeatConfig) -> Result<()> {
        let (monitor, dead) = HeartbeatMonitor::start(
            self.ctx.clone(),
            self.info.endpoint(Channel::Heartbeat),
            self.curve.clone(),
            config,
        )
        .map_err(|e| Error::Transport(kernelgate_zmq::Error::Thread(e)))?;
        self.monitor = Some(monitor);
        self.dead = Some(dead);
        Ok(())
    }

    /// Stops the heartbeat monitor (a death it already reported stays reported).
    pub fn stop_heartbeat_monitor(&mut self) {
        self.monitor = None;
    }

    /// True once the heartbeat monitor declared the kernel dead.
    pub fn kernel_died(&self) -> bool {
        self.dead.as_ref().is_some_and(|d| *d.borrow())
    }

    /// A watch that turns true when the monitor declares the kernel dead (`None` without a monitor).
    pub fn death_watch(&self) -> Option<watch::Receiver<bool>> {
        self.dead.clone()
    }
}
