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

impl Proc {
    /// Whether signals sent to the kernel's pid still reach the kernel. An adopted kernel is not
    /// our child: once it dies, init reaps it and its pid may go to any new process (a kernel
    /// started since, a shell job), so the pid counts only while its start time is the one
    /// recorded. A child's pid stays ours until we reap it.
    pub(crate) fn is_current(&self) -> bool {
        match self {
            Proc::Child(_) => true,
            Proc::Adopted { pid, start_time } => provision::is_same_process(*pid, *start_time),
        }
    }
}

/// Signals the kernel's process group, unless its pid has gone to another process.
fn signal_kernel(proc: &Proc, pid: Option<i32>, signal: Signal) {
    match pid {
        Some(pid) if proc.is_current() => {
            let _ = provision::signal_group(pid, signal);
        }
        Some(pid) => tracing::debug!(
            pid,
            ?signal,
            "not signalled: the pid is another process now"
        ),
        None => {}
    }
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
        Proc::Adopted { .. } => {
            let deadline = tokio::time::Instant::now() + wait;
            while proc.is_current() {
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
    signal_kernel(proc, pid, Signal::SIGKILL);
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
        signal_kernel(proc, pid, Signal::SIGTERM);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adopted_pid_counts_only_with_its_recorded_start_time() {
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let start_time = provision::process_start_time(me);
        assert!(start_time.is_some());
        assert!(Proc::Adopted {
            pid: me,
            start_time
        }
        .is_current());
        let reused = start_time.map(|t| t + 1);
        assert!(!Proc::Adopted {
            pid: me,
            start_time: reused
        }
        .is_current());
        assert!(!Proc::Adopted {
            pid: me,
            start_time: None
        }
        .is_current());
        assert!(!Proc::Adopted {
            pid: i32::MAX,
            start_time
        }
        .is_current());
    }
}
