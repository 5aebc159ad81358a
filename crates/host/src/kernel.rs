//! One managed kernel: its shared model, and the supervisor task that launches the process,
//! follows IOPub, watches the child and the heartbeat, restarts it, and shuts it down.
//!
//! Cost per kernel at rest: one tokio task, one SUB and one heartbeat DEALER socket, a timer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kernelgate_wire::{Channel, ConnectionInfo, InterruptMode, Message, Session};
use kernelgate_zmq::{Context, SocketType};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::lifecycle::{next, Decision, Event, KernelState, RestartTracker};
pub use crate::process::StopPath;
use crate::process::{interrupt, reap, stop_process, wait_child, Proc};
use crate::provision::{self, LaunchSpec};
use crate::zmqio;
use crate::HostShared;

/// Where WebSocket connections reach the current kernel process.
#[derive(Debug)]
pub struct Endpoint {
    /// Increments on every (re)start.
    pub generation: u64,
    /// Connection info of the running process (key inside).
    pub info: ConnectionInfo,
    /// The libzmq context this kernel's sockets use.
    pub ctx: Context,
}

/// A message for all WebSocket clients of a kernel.
#[derive(Debug)]
pub struct Broadcast {
    /// The channel it arrived on (iopub).
    pub channel: Channel,
    /// The verified message.
    pub msg: Message,
}

/// Requests to a kernel's supervisor.
#[derive(Debug)]
pub enum Control {
    /// Restart; answered once the new process is ready (or failed).
    Restart(oneshot::Sender<Result<(), String>>),
    /// Interrupt (by signal or message per kernelspec).
    Interrupt(oneshot::Sender<Result<(), String>>),
    /// Shut down for good; answered when the process is gone.
    Shutdown(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Model {
    state: KernelState,
    last_activity: DateTime<Utc>,
    pid: Option<i32>,
    start_time: Option<u64>,
    connection_file: Option<PathBuf>,
    restarts: u64,
    reason: String,
}

/// A kernel as the registry and the API see it.
#[derive(Debug)]
pub struct ManagedKernel {
    /// Kernel id (a UUID).
    pub id: String,
    /// Kernelspec name.
    pub name: String,
    model: Mutex<Model>,
    state_tx: watch::Sender<KernelState>,
    endpoint_tx: watch::Sender<Option<Arc<Endpoint>>>,
    iopub_tx: broadcast::Sender<Arc<Broadcast>>,
    control_tx: mpsc::Sender<Control>,
    connections: AtomicUsize,
    header_session: Session,
}

/// A process found alive from a previous host run.
#[derive(Debug)]
pub struct Adopted {
    /// Its pid (= process group).
    pub pid: i32,
    /// Its /proc start time.
    pub start_time: Option<u64>,
    /// Its connection file.
    pub connection_file: PathBuf,
    /// Its connection info, already checked to answer with its key.
    pub info: ConnectionInfo,
}

enum Outcome {
    Died(String),
    Restart(oneshot::Sender<Result<(), String>>),
    Shutdown(oneshot::Sender<()>),
}

impl ManagedKernel {
    /// Creates the kernel and spawns its supervisor; `adopt` re-uses a live process.
    pub fn spawn(
        host: Arc<HostShared>,
        id: String,
        spec: LaunchSpec,
        adopt: Option<Adopted>,
    ) -> Arc<ManagedKernel> {
        let (control_tx, control_rx) = mpsc::channel(16);
        let (iopub_tx, _) = broadcast::channel(1024);
        let initial = if adopt.is_some() {
            KernelState::Idle
        } else {
            KernelState::Starting
        };
        let kernel = Arc::new(ManagedKernel {
            id,
            name: spec.name.clone(),
            model: Mutex::new(Model {
                state: initial,
                last_activity: Utc::now(),
                pid: None,
                start_time: None,
                connection_file: None,
                restarts: 0,
                reason: String::new(),
            }),
            state_tx: watch::channel(initial).0,
            endpoint_tx: watch::channel(None).0,
            iopub_tx,
            control_tx,
            connections: AtomicUsize::new(0),
            header_session: Session::new(
                kernelgate_wire::Signer::unauthenticated(),
                kernelgate_wire::SessionConfig {
                    username: "kernelgate-host".into(),
                    replay: None,
                    ..Default::default()
                },
            ),
        });
        let k = kernel.clone();
        tokio::spawn(async move { supervise(k, host, spec, adopt, control_rx).await });
        kernel
    }

    fn with_model<R>(&self, f: impl FnOnce(&mut Model) -> R) -> R {
        let mut m = self.model.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut m)
    }

    /// Current state.
    pub fn state(&self) -> KernelState {
        self.with_model(|m| m.state)
    }

    fn apply(&self, event: &Event) -> KernelState {
        let s = self.with_model(|m| {
            m.state = next(m.state, event);
            m.state
        });
        self.state_tx.send_replace(s);
        s
    }

    /// Marks activity now (messages in either direction).
    pub fn touch(&self) {
        self.with_model(|m| m.last_activity = Utc::now());
    }

    /// Time of the last activity.
    pub fn last_activity(&self) -> DateTime<Utc> {
        self.with_model(|m| m.last_activity)
    }

    /// Process id of the current process, if any.
    pub fn pid(&self) -> Option<i32> {
        self.with_model(|m| m.pid)
    }

    /// What the state file records about this kernel.
    pub fn record(&self) -> Option<crate::state::KernelRecord> {
        self.with_model(|m| {
            Some(crate::state::KernelRecord {
                id: self.id.clone(),
                name: self.name.clone(),
                pid: m.pid?,
                start_time: m.start_time,
                connection_file: m.connection_file.clone()?,
            })
        })
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a WebSocket connection until the guard drops.
    pub fn connect_guard(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }

    /// Jupyter Server's kernel model.
    pub fn model(&self) -> Value {
        let (state, last, restarts, reason) =
            self.with_model(|m| (m.state, m.last_activity, m.restarts, m.reason.clone()));
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "last_activity": last.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "execution_state": state.execution_state(),
            "connections": self.connections(),
            "restarts": restarts,
        });
        if !reason.is_empty() {
            if let Some(o) = v.as_object_mut() {
                o.insert("reason".into(), reason.into());
            }
        }
        v
    }

    /// Watch the state (to wait for ready).
    pub fn subscribe_state(&self) -> watch::Receiver<KernelState> {
        self.state_tx.subscribe()
    }

    /// Watch the endpoint (WebSocket connections re-open their sockets when it changes).
    pub fn subscribe_endpoint(&self) -> watch::Receiver<Option<Arc<Endpoint>>> {
        self.endpoint_tx.subscribe()
    }

    /// IOPub and host status messages.
    pub fn subscribe_iopub(&self) -> broadcast::Receiver<Arc<Broadcast>> {
        self.iopub_tx.subscribe()
    }

    /// Sends a control request to the supervisor.
    pub async fn control(&self, c: Control) -> Result<(), String> {
        self.control_tx
            .send(c)
            .await
            .map_err(|_| "kernel supervisor has stopped".to_string())
    }

    /// Waits until the kernel is idle/busy or dead, at most `timeout`.
    pub async fn wait_settled(&self, timeout: Duration) -> KernelState {
        let mut rx = self.subscribe_state();
        let r = tokio::time::timeout(
            timeout,
            rx.wait_for(|s| s.is_running() || *s == KernelState::Dead),
        )
        .await;
        match r {
            Ok(Ok(s)) => *s,
            _ => self.state(),
        }
    }

    /// Sends a host-made `status` message to every client (`restarting`, `dead`, ...).
    fn broadcast_status(&self, execution_state: &str) {
        let header = self.header_session.header("status");
        let msg = Message {
            identities: Vec::new(),
            header,
            parent_header: None,
            metadata: serde_json::Map::new(),
            content: json!({ "execution_state": execution_state }),
            buffers: Vec::new(),
        };
        let _ = self.iopub_tx.send(Arc::new(Broadcast {
            channel: Channel::IoPub,
            msg,
        }));
    }
}

/// Decrements the connection count on drop.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<ManagedKernel>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn supervise(
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
        let started = Instant::now();
        let (mut proc, info, file) = match adopt.take() {
            Some(a) => (
                Proc::Adopted {
                    pid: a.pid,
                    start_time: a.start_time,
                },
                a.info,
                a.connection_file,
            ),
            None => {
                kernel.apply(&Event::Launched);
                match provision::launch(&host.config.provision, &spec, &kernel.id).await {
                    Ok(l) => (Proc::Child(l.child), l.info, l.connection_file),
                    Err(e) => {
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
        let outcome = run_process(
            &kernel,
            &host,
            &ctx,
            &info,
            &mut proc,
            relaunch,
            &mut control_rx,
            &mut restart_reply,
        )
        .await;

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
                stop_process(&host, &ctx, &info, &mut proc, pid, true).await;
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
                stop_process(&host, &ctx, &info, &mut proc, pid, false).await;
                let _ = std::fs::remove_file(&file);
                kernel.with_model(|m| m.pid = None);
                host.state_changed();
                let _ = reply.send(());
                return;
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
    relaunch: bool,
    control_rx: &mut mpsc::Receiver<Control>,
    restart_reply: &mut Option<oneshot::Sender<Result<(), String>>>,
) -> Outcome {
    let cfg = &host.config;
    let session = match zmqio::session_for(info, "kernelgate-host") {
        Ok(s) => s,
        Err(e) => return Outcome::Died(format!("connection info: {e}")),
    };
    let mut iopub = match zmqio::open(ctx, info, SocketType::Sub, Channel::IoPub, None) {
        Ok(s) => s,
        Err(e) => return Outcome::Died(format!("iopub: {e}")),
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
    if adopted {
        kernel.apply(&Event::Ready);
    }
    loop {
        tokio::select! {
            status = wait_child(proc) => {
                return Outcome::Died(status);
            }
            r = &mut ready_fut, if !ready => {
                match r {
                    Ok(_) => {
                        ready = true;
                        kernel.apply(&Event::Ready);
                        tracing::debug!(kernel = %kernel.id, "kernel ready");
                        // Clients were told `restarting`: tell them the new process is ready.
                        // (Checking the state here cannot work: launching moved it from
                        // Restarting to Starting, and the kernel's own idle from the readiness
                        // probe may be published before our IOPub subscription has joined.)
                        if relaunch {
                            kernel.broadcast_status("idle");
                        }
                        if let Some(r) = restart_reply.take() {
                            let _ = r.send(Ok(()));
                        }
                    }
                    Err(e) => return Outcome::Died(e),
                }
            }
            frames = iopub.recv_multipart() => {
                match frames {
                    Ok(frames) => match session.receive(frames) {
                        Ok(msg) => {
                            let msg = msg.into_inner();
                            if msg.msg_type() == "status" {
                                if let Some(st) = msg.content.get("execution_state").and_then(Value::as_str) {
                                    kernel.apply(&Event::Status(st.to_owned()));
                                }
                            }
                            kernel.touch();
                            let _ = kernel.iopub_tx.send(Arc::new(Broadcast { channel: Channel::IoPub, msg }));
                        }
                        Err(e) => tracing::warn!(kernel = %kernel.id, error = %e, "refused an iopub message"),
                    },
                    Err(e) => return Outcome::Died(format!("iopub socket: {e}")),
                }
            }
            r = hb.recv_multipart() => {
                if let Ok(frames) = r {
                    if frames.last().map(Vec::as_slice) == Some(ping.to_le_bytes().as_slice()) {
                        answered = true;
                        misses = 0;
                    }
                }
            }
            _ = tick.tick() => {
                if let Proc::Adopted { pid, start_time } = proc {
                    if !provision::process_alive(*pid) || (start_time.is_some() && provision::process_start_time(*pid) != *start_time) {
                        return Outcome::Died("adopted process is gone".into());
                    }
                }
                if ready {
                    if !answered {
                        misses += 1;
                        if misses >= cfg.heartbeat.max_misses {
                            return Outcome::Died(format!("no heartbeat for {misses} intervals (hung)"));
                        }
                    }
                    ping = ping.wrapping_add(1);
                    answered = false;
                    let _ = hb.send_multipart(&[Vec::new(), ping.to_le_bytes().to_vec()]).await;
                }
            }
            c = control_rx.recv() => {
                match c {
                    Some(Control::Restart(reply)) => return Outcome::Restart(reply),
                    Some(Control::Shutdown(reply)) => return Outcome::Shutdown(reply),
                    Some(Control::Interrupt(reply)) => {
                        let pid = kernel.pid();
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
