//! The supervisor task of one kernel: launches (or adopts) the process, follows IOPub, watches
//! the child and the heartbeat, restarts it per policy, and shuts it down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kernelgate_wire::{Channel, ConnectionInfo, InterruptMode};
use kernelgate_zmq::{Context, SocketType};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{Adopted, Control, Endpoint, ManagedKernel};
use crate::lifecycle::{Decision, Event, RestartTracker};
use crate::process::{interrupt, reap, stop_process, wait_child, Proc};
use crate::provision::{self, LaunchSpec};
use crate::zmqio::{self, KernelSocket};
use crate::HostShared;

enum Outcome {
    Died(String),
    Restart(oneshot::Sender<Result<(), String>>),
    Shutdown(oneshot::Sender<()>),
}

pub(super) async fn supervise(
    kernel: Arc<ManagedKernel>,
    host: Arc<HostShared>,
    spec: LaunchSpec,
    mut adopt: Option<Adopted>,
    mut control_rx: mpsc::Receiver<Control>,
) {
    let ctx = match host.pool.get() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(kernel = %kernel.id, "no ZeroMQ context: {e}");
            kernel.apply(&Event::GaveUp);
            return;
        }
    };
    let mut tracker = RestartTracker::default();
    let mut generation = 0u64;
    let mut restart_reply: Option<oneshot::Sender<Result<(), String>>> = None;
    loop {
        // 1. A process: adopted, or launched now.
        // Held from launch until the kernel is ready (or gone); adopted kernels need none.
        let mut start_permit = None;
        let (mut proc, info, file, started) = match adopt.take() {
            Some(a) => (
                Proc::Adopted {
                    pid: a.pid,
                    start_time: a.start_time,
                },
                a.info,
                a.connection_file,
                Instant::now(),
            ),
            None => {
                start_permit = host.starting.clone().acquire_owned().await.ok();
                let started = Instant::now();
                kernel.apply(&Event::Launched);
                match provision::launch(&host.config.provision, &spec, &kernel.id).await {
                    Ok(l) => {
                        log_sandbox(&kernel.id, &l.sandbox);
                        kernel.with_model(|m| m.sandbox = l.sandbox);
                        (Proc::Child(l.child), l.info, l.connection_file, started)
                    }
                    Err(e) => {
                        drop(start_permit.take());
                        tracing::warn!(kernel = %kernel.id, "launch failed: {e}");
                        kernel.with_model(|m| m.reason = e.to_string());
                        if !after_death(
                            &kernel,
                            &host,
                            &mut tracker,
                            started,
                            &mut restart_reply,
                            &mut control_rx,
                            &e.0,
                        )
                        .await
                        {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let pid = match &proc {
            Proc::Child(c) => c.id().and_then(|p| i32::try_from(p).ok()),
            Proc::Adopted { pid, .. } => Some(*pid),
        };
        let start_time = match &proc {
            Proc::Adopted { start_time, .. } => *start_time,
            Proc::Child(_) => pid.and_then(provision::process_start_time),
        };
        kernel.with_model(|m| {
            m.pid = pid;
            m.start_time = start_time;
            m.connection_file = Some(file.clone());
        });
        host.state_changed();
        generation += 1;
        kernel.endpoint_tx.send_replace(Some(Arc::new(Endpoint {
            generation,
            info: info.clone(),
            ctx: ctx.clone(),
        })));

        // 2. Run it until it dies or we are asked to restart or stop.
        let relaunch = generation > 1;
        let links = host.config.zmtp_links;
        let mut iopub =
            zmqio::open_kernel(&ctx, &info, SocketType::Sub, Channel::IoPub, None, links);
        let outcome = match &mut iopub {
            Ok(iopub) => {
                run_process(
                    &kernel,
                    &host,
                    &ctx,
                    &info,
                    &mut proc,
                    iopub,
                    relaunch,
                    &mut control_rx,
                    &mut restart_reply,
                    &mut start_permit,
                )
                .await
            }
            Err(e) => Outcome::Died(format!("iopub: {e}")),
        };
        let mut iopub = iopub.ok();
        drop(start_permit);

        // 3. Deal with the outcome.
        match outcome {
            Outcome::Died(why) => {
                tracing::warn!(kernel = %kernel.id, pid = ?pid, "kernel died: {why}");
                kernel.apply(&Event::Died);
                kernel.endpoint_tx.send_replace(None);
                reap(&mut proc, pid, Duration::from_millis(500)).await;
                let _ = std::fs::remove_file(&file);
                kernel.with_model(|m| {
                    m.pid = None;
                    m.reason = why.clone();
                });
                host.state_changed();
                if !after_death(
                    &kernel,
                    &host,
                    &mut tracker,
                    started,
                    &mut restart_reply,
                    &mut control_rx,
                    &why,
                )
                .await
                {
                    return;
                }
            }
            Outcome::Restart(reply) => {
                tracing::info!(kernel = %kernel.id, "restarting on request");
                kernel.apply(&Event::RestartScheduled);
                kernel.broadcast_status("restarting");
                kernel.endpoint_tx.send_replace(None);
                let stop = stop_process(&host, &ctx, &info, &mut proc, pid, true);
                draining(iopub.as_mut(), stop).await;
                let _ = std::fs::remove_file(&file);
                kernel.with_model(|m| {
                    m.pid = None;
                    m.restarts += 1;
                });
                tracker.reset();
                restart_reply = Some(reply);
            }
            Outcome::Shutdown(reply) => {
                kernel.apply(&Event::ShutdownRequested);
                kernel.endpoint_tx.send_replace(None);
                let stop = stop_process(&host, &ctx, &info, &mut proc, pid, false);
                draining(iopub.as_mut(), stop).await;
                let _ = std::fs::remove_file(&file);
                kernel.with_model(|m| m.pid = None);
                host.state_changed();
                let _ = reply.send(());
                return;
            }
        }
    }
}

/// The wait after a kernel's first readiness nudge, doubled up to [`NUDGE_MAX`].
const NUDGE_FIRST: Duration = Duration::from_millis(5);
const NUDGE_MAX: Duration = Duration::from_millis(100);

/// Runs `stop` while reading (and dropping) what the kernel still publishes. A kernel whose
/// IOPub subscriber has gone when it publishes its last status can hold its exit for its
/// sockets' linger (libzmq keeps a message for a peer that dropped while it was queued), and a
/// kernel with an infinite linger until SIGTERM: so the subscriber stays, and reads, until the
/// process is gone.
async fn draining<F: std::future::Future>(iopub: Option<&mut KernelSocket>, stop: F) -> F::Output {
    let Some(iopub) = iopub else {
        return stop.await;
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            out = &mut stop => return out,
            r = iopub.recv_multipart() => {
                // A link recovers from its errors by itself; a libzmq socket that failed stays
                // failed, so then just wait.
                if r.is_err() && !matches!(iopub, KernelSocket::Link(_)) {
                    return stop.await;
                }
            }
        }
    }
}

/// After a death (or failed launch): restart per policy, or go dead and wait for a user's
/// restart or shutdown. Returns false when the supervisor should end.
async fn after_death(
    kernel: &Arc<ManagedKernel>,
    host: &Arc<HostShared>,
    tracker: &mut RestartTracker,
    started: Instant,
    restart_reply: &mut Option<oneshot::Sender<Result<(), String>>>,
    control_rx: &mut mpsc::Receiver<Control>,
    why: &str,
) -> bool {
    match tracker.on_death(&host.config.restart, started, Instant::now()) {
        Decision::Restart { attempt } => {
            tracing::info!(kernel = %kernel.id, attempt, "restarting kernel");
            kernel.apply(&Event::RestartScheduled);
            kernel.with_model(|m| m.restarts += 1);
            kernel.broadcast_status("restarting");
            // Back off a little on repeated failures.
            let delay =
                Duration::from_millis(100u64.saturating_mul(u64::from(attempt.saturating_sub(1))));
            tokio::time::sleep(delay.min(Duration::from_secs(2))).await;
            true
        }
        Decision::GiveUp => {
            tracing::error!(kernel = %kernel.id, "kernel is dead (restart limit reached): {why}");
            kernel.apply(&Event::GaveUp);
            kernel.broadcast_status("dead");
            if let Some(r) = restart_reply.take() {
                let _ = r.send(Err(format!("kernel failed to restart: {why}")));
            }
            host.state_changed();
            // Dead: wait for a user to restart or delete it.
            loop {
                match control_rx.recv().await {
                    Some(Control::Restart(reply)) => {
                        tracker.reset();
                        *restart_reply = Some(reply);
                        return true;
                    }
                    Some(Control::Interrupt(reply)) => {
                        let _ = reply.send(Err("kernel is dead".into()));
                    }
                    Some(Control::Shutdown(reply)) => {
                        kernel.apply(&Event::ShutdownRequested);
                        let _ = reply.send(());
                        return false;
                    }
                    None => return false,
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_process(
    kernel: &Arc<ManagedKernel>,
    host: &Arc<HostShared>,
    ctx: &Context,
    info: &ConnectionInfo,
    proc: &mut Proc,
    iopub: &mut KernelSocket,
    relaunch: bool,
    control_rx: &mut mpsc::Receiver<Control>,
    restart_reply: &mut Option<oneshot::Sender<Result<(), String>>>,
    start_permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Outcome {
    let cfg = &host.config;
    let session = match zmqio::session_for(info, "kernelgate-host") {
        Ok(s) => s,
        Err(e) => return Outcome::Died(format!("connection info: {e}")),
    };
    let mut hb = match zmqio::open(ctx, info, SocketType::Dealer, Channel::Heartbeat, None) {
        Ok(s) => s,
        Err(e) => return Outcome::Died(format!("heartbeat: {e}")),
    };
    let adopted = matches!(proc, Proc::Adopted { .. });
    let mut ready = adopted;
    let ready_fut = zmqio::wait_ready(ctx, info, cfg.ready_timeout);
    tokio::pin!(ready_fut);
    let mut tick = tokio::time::interval(cfg.heartbeat.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    let mut ping: u64 = 0;
    let mut answered = true;
    let mut misses = 0u32;
    // Whether the kernel has ever answered a heartbeat. It is watched once it has, or once it
    // answered kernel_info (all its channels are bound by then): before either it may still be
    // starting (`ready_timeout` bounds that); after, a silence means the process is hung,
    // whatever stage its start-up had reached. (Watching only once it was ready, IOPub joined
    // too, left a kernel that froze while our readiness checks were under way unwatched.)
    let mut heartbeat_seen = false;
    if adopted {
        kernel.apply(&Event::Ready);
    }
    // Ready = answered kernel_info AND our IOPub subscription receives: a client told "idle"
    // earlier could run a cell whose output we would never see.
    let mut answered_info = adopted;
    let mut iopub_joined = adopted;
    // The first nudge goes out once the kernel answers; later ones wait longer and longer.
    // Our subscription may join a moment after a nudge's status went out: a fixed 100 ms made
    // such a kernel wait that long, and a thousand of them starting wait 100 s in all.
    let nudge = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(nudge);
    let mut nudge_wait = NUDGE_FIRST;
    loop {
        if !ready && answered_info && iopub_joined {
            ready = true;
            drop(start_permit.take());
            kernel.apply(&Event::Ready);
            tracing::debug!(kernel = %kernel.id, "kernel ready");
            // Clients were told `restarting`: tell them the new process is ready.
            // (Checking the state here cannot work: launching moved it from Restarting to
            // Starting, and the kernel's own idle from the readiness probe may be published
            // before our IOPub subscription has joined.)
            if relaunch {
                kernel.broadcast_status("idle");
            }
            if let Some(r) = restart_reply.take() {
                let _ = r.send(Ok(()));
            }
        }
        tokio::select! {
            status = wait_child(proc) => {
                return Outcome::Died(status);
            }
            r = &mut ready_fut, if !answered_info => {
                match r {
                    Ok(_) => answered_info = true,
                    Err(e) => return Outcome::Died(e),
                }
            }
            _ = &mut nudge, if answered_info && !iopub_joined => {
                nudge.as_mut().reset(tokio::time::Instant::now() + nudge_wait);
                nudge_wait = (nudge_wait * 2).min(NUDGE_MAX);
                // A kernel_info_request makes the kernel publish a status: once one reaches
                // us, our IOPub subscription has joined (jupyter_server "nudges" the same way).
                let (ctx, info) = (ctx.clone(), info.clone());
                tokio::spawn(async move {
                    let _ = zmqio::request(&ctx, &info, Channel::Shell, "kernel_info_request", serde_json::json!({}), Duration::from_secs(1)).await;
                });
            }
            frames = iopub.recv_multipart() => {
                match frames {
                    Ok(frames) => match session.receive_raw(frames) {
                        Ok(msg) => {
                            iopub_joined = true;
                            let msg = msg.into_inner();
                            if msg.msg_type() == "status" {
                                let content = msg.content().unwrap_or_default();
                                if let Some(st) = content.get("execution_state").and_then(Value::as_str) {
                                    kernel.apply(&Event::Status(st.to_owned()));
                                }
                            }
                            kernel.touch();
                            kernel.publish(msg);
                        }
                        Err(e) => crate::refusals::record_message(kernel.rejections(), &kernel.id, "an iopub message", &e),
                    },
                    Err(e @ kernelgate_zmq::Error::Zmtp(_)) => {
                        // The link dropped that connection and makes a new one.
                        zmqio::record_socket_error(kernel.rejections(), &kernel.id, "iopub framing", &e);
                    }
                    Err(e) => return Outcome::Died(format!("iopub socket: {e}")),
                }
            }
            r = hb.recv_multipart() => {
                if let Ok(frames) = r {
                    if frames.last().map(Vec::as_slice) == Some(ping.to_le_bytes().as_slice()) {
                        answered = true;
                        misses = 0;
                        heartbeat_seen = true;
                    }
                }
            }
            _ = tick.tick() => {
                // A kernel gone quiet after a burst of output would otherwise leave the burst's
                // digests in the IOPub history until its next message.
                session.forget_expired();
                if matches!(proc, Proc::Adopted { .. }) && !proc.is_current() {
                    return Outcome::Died("adopted process is gone".into());
                }
                if (heartbeat_seen || answered_info) && !answered {
                    misses += 1;
                    if misses >= cfg.heartbeat.max_misses {
                        return Outcome::Died(format!("no heartbeat for {misses} intervals (hung)"));
                    }
                }
                ping = ping.wrapping_add(1);
                answered = false;
                let _ = hb.send_multipart(&[Vec::new(), ping.to_le_bytes().to_vec()]).await;
            }
            c = control_rx.recv() => {
                match c {
                    Some(Control::Restart(reply)) => return Outcome::Restart(reply),
                    Some(Control::Shutdown(reply)) => return Outcome::Shutdown(reply),
                    Some(Control::Interrupt(reply)) => {
                        // Never a SIGINT to a pid that has gone to another process.
                        let pid = kernel.pid().filter(|_| proc.is_current());
                        let mode = cfg_interrupt_mode(host, &kernel.name);
                        let ctx = ctx.clone();
                        let info = info.clone();
                        tokio::spawn(async move {
                            let r = interrupt(mode, pid, &ctx, &info).await;
                            let _ = reply.send(r);
                        });
                    }
                    None => {
                        let (tx, _rx) = oneshot::channel();
                        return Outcome::Shutdown(tx);
                    }
                }
            }
        }
    }
}

fn cfg_interrupt_mode(host: &HostShared, name: &str) -> InterruptMode {
    host.config
        .specs
        .get(name)
        .map(|s| s.spec.interrupt_mode)
        .unwrap_or_default()
}

fn log_sandbox(id: &str, sandbox: &Value) {
    if sandbox.is_null() {
        return;
    }
    if sandbox.get("enabled") == Some(&Value::Bool(true)) {
        tracing::info!(kernel = %id, sandbox = %sandbox, "kernel sandboxed");
    } else {
        tracing::warn!(kernel = %id, sandbox = %sandbox, "kernel NOT sandboxed");
    }
}
