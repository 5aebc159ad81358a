//! Signalling, waiting for and stopping one kernel process (a child or an adopted pid), with the
//! shutdown escalation jupyter_client uses.

use std::time::Duration;

use kernelgate_wire::{Channel, ConnectionInfo, InterruptMode};
use kernelgate_zmq::Context;
use nix::sys::signal::Signal;
use serde_json::json;

use crate::provision;
use crate::zmqio;
use crate::{HostShared, ShutdownWaits};

/// The process currently run by a kernel's supervisor.
pub(crate) enum Proc {
    Child(tokio::process::Child),
    Adopted { pid: i32, start_time: Option<u64> },
}

pub(crate) async fn interrupt(
    mode: InterruptMode,
    pid: Option<i32>,
    ctx: &Context,
    info: &ConnectionInfo,
) -> Result<(), String> {
    match mode {
        InterruptMode::Signal => {
            let pid = pid.ok_or("no process")?;
            provision::signal_group(pid, Signal::SIGINT).map_err(|e| format!("SIGINT: {e}"))
        }
        InterruptMode::Message => zmqio::request(
            ctx,
            info,
            Channel::Control,
            "interrupt_request",
            json!({}),
            Duration::from_secs(5),
        )
        .await
        .map(|_| ()),
    }
}

/// Resolves when the process exits (or, for an adopted one, never: it is polled on ticks).
pub(crate) async fn wait_child(proc: &mut Proc) -> String {
    match proc {
        Proc::Child(c) => match c.wait().await {
            Ok(status) => format!("process exited ({status})"),
            Err(e) => format!("waiting for the process: {e}"),
        },
        Proc::Adopted { .. } => std::future::pending().await,
    }
}

/// Waits up to `wait` for the process to end.
pub(crate) async fn wait_exit(proc: &mut Proc, wait: Duration) -> bool {
    match proc {
        Proc::Child(c) => matches!(tokio::time::timeout(wait, c.wait()).await, Ok(Ok(_))),
        Proc::Adopted { pid, .. } => {
            let deadline = tokio::time::Instant::now() + wait;
            while provision::process_alive(*pid) {
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            true
        }
    }
}

/// Kills what is left of a dead kernel's process group and reaps it.
pub(crate) async fn reap(proc: &mut Proc, pid: Option<i32>, wait: Duration) {
    if let Some(pid) = pid {
        let _ = provision::signal_group(pid, Signal::SIGKILL);
    }
    wait_exit(proc, wait).await;
}

/// How a stop ended (jupyter_client's escalation, observable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPath {
    /// Exited after shutdown_request.
    Requested,
    /// Needed SIGTERM.
    Terminated,
    /// Needed SIGKILL.
    Killed,
}

/// shutdown_request -> wait -> SIGTERM -> wait -> SIGKILL.
pub(crate) async fn stop_process(
    host: &HostShared,
    ctx: &Context,
    info: &ConnectionInfo,
    proc: &mut Proc,
    pid: Option<i32>,
    restart: bool,
) -> StopPath {
    escalate(&host.config.shutdown, ctx, info, proc, pid, restart).await
}

/// Stops a kernel child launched by [`provision::launch`] (pid `pid`, also its process group)
/// with the host's escalation: shutdown_request, then SIGTERM, then SIGKILL, waiting as `waits`
/// says; the child is reaped and whatever is left in its group killed.
pub async fn stop_child(
    waits: &ShutdownWaits,
    ctx: &Context,
    info: &ConnectionInfo,
    child: tokio::process::Child,
    pid: i32,
) -> StopPath {
    escalate(waits, ctx, info, &mut Proc::Child(child), Some(pid), false).await
}

async fn escalate(
    waits: &ShutdownWaits,
    ctx: &Context,
    info: &ConnectionInfo,
    proc: &mut Proc,
    pid: Option<i32>,
    restart: bool,
) -> StopPath {
    let _ = zmqio::send_only(
        ctx,
        info,
        Channel::Control,
        "shutdown_request",
        json!({ "restart": restart }),
    )
    .await;
    let path = if wait_exit(proc, waits.request_wait).await {
        StopPath::Requested
    } else {
        if let Some(pid) = pid {
            let _ = provision::signal_group(pid, Signal::SIGTERM);
        }
        if wait_exit(proc, waits.term_wait).await {
            StopPath::Terminated
        } else {
            StopPath::Killed
        }
    };
    // Whatever is left in the group (children of the kernel) goes too.
    reap(proc, pid, Duration::from_secs(2)).await;
    tracing::info!(pid = ?pid, ?path, "kernel stopped");
    path
}
