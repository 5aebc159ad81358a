//! Heartbeat: one-off pings from the client, and a background monitor that reports death.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use kernelgate_zmq::{Context, Socket, SocketType};
use tokio::sync::watch;

use crate::connect::{client_socket, CurveKeys};

/// Settings of the background heartbeat monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Time between pings.
    pub interval: Duration,
    /// How long one ping may take.
    pub timeout: Duration,
    /// Consecutive failed pings after which the kernel is declared dead.
    pub max_failures: u32,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_failures: 3,
        }
    }
}

/// A running monitor thread; dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct HeartbeatMonitor {
    _stop: mpsc::Sender<()>,
}

/// Sends one ping on a blocking REQ socket and checks the echo.
fn ping_blocking(socket: &Socket, payload: &[u8]) -> bool {
    if socket.send_multipart([payload], false).is_err() {
        return false;
    }
    matches!(socket.recv_multipart(false), Ok(frames) if frames.first().map(Vec::as_slice) == Some(payload))
}

impl HeartbeatMonitor {
    /// Starts pinging `endpoint`; `dead` is set to true once `max_failures` pings in a row failed.
    pub(crate) fn start(
        ctx: Context,
        endpoint: String,
        curve: Option<CurveKeys>,
        config: HeartbeatConfig,
    ) -> std::io::Result<(HeartbeatMonitor, watch::Receiver<bool>)> {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (dead_tx, dead_rx) = watch::channel(false);
        std::thread::Builder::new()
            .name("kernelgate-hb".into())
            .spawn(move || {
                let mut socket: Option<Socket> = None;
                let mut failures = 0u32;
                let mut n = 0u64;
                loop {
                    match stop_rx.recv_timeout(config.interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    if socket.is_none() {
                        socket =
                            client_socket(&ctx, SocketType::Req, &endpoint, curve.as_ref(), None)
                                .and_then(|s| {
                                    s.set_rcvtimeo(Some(config.timeout))?;
                                    s.set_sndtimeo(Some(config.timeout))?;
                                    s.set_linger(Some(Duration::ZERO))?;
                                    Ok(s)
                                })
                                .ok();
                    }
                    n += 1;
                    let ok = socket
                        .as_ref()
                        .is_some_and(|s| ping_blocking(s, format!("ping {n}").as_bytes()));
                    if ok {
                        failures = 0;
                        continue;
                    }
                    // A REQ socket that missed its reply cannot send again: start over.
                    socket = None;
                    failures += 1;
                    tracing::debug!(failures, "heartbeat ping failed");
                    if failures >= config.max_failures.max(1) {
                        tracing::warn!(
                            failures,
                            "kernel heartbeat lost; declaring the kernel dead"
                        );
                        let _ = dead_tx.send(true);
                        return;
                    }
                }
            })?;
        Ok((HeartbeatMonitor { _stop: stop_tx }, dead_rx))
    }
}

/// Resolves when `dead` reports death; never resolves without a monitor, or once the monitor
/// stopped without reporting death.
pub(crate) async fn died(dead: Option<&mut watch::Receiver<bool>>) {
    if let Some(rx) = dead {
        loop {
            if *rx.borrow_and_update() {
                return;
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    }
    std::future::pending::<()>().await;
}
