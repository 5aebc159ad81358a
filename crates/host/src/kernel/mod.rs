//! One managed kernel: its shared model and handle. The supervisor task (in `supervisor`) launches
//! the process, follows IOPub, watches the child and the heartbeat, restarts it, and shuts it down.
//!
//! Cost per kernel at rest: one tokio task, one SUB and one heartbeat DEALER socket, a timer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kernelgate_wire::{Channel, ConnectionInfo, Message, RawMessage, Session};
use kernelgate_zmq::Context;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::fanout::{Fanout, Reader};
use crate::lifecycle::{next, Event, KernelState};
pub use crate::process::StopPath;
use crate::provision::LaunchSpec;
use crate::HostShared;

mod supervisor;

use supervisor::supervise;

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

/// IOPub messages a kernel's slowest WebSocket client may fall behind by (the byte budget,
/// [`crate::HostConfig::iopub_buffer`], usually binds first).
const IOPUB_MESSAGES: usize = 1024;

/// A message for all WebSocket clients of a kernel.
#[derive(Debug)]
pub struct Broadcast {
    /// The channel it arrived on (iopub).
    pub channel: Channel,
    /// The verified message, its parts as the kernel signed them.
    pub msg: RawMessage,
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
    /// The sandbox status of the current process (null: none).
    pub(crate) sandbox: Value,
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
    iopub: Arc<Fanout<Arc<Broadcast>>>,
    control_tx: mpsc::Sender<Control>,
    connections: AtomicUsize,
    header_session: Session,
    rejections: kernelgate_wire::Rejections,
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
    /// The sandbox status recorded when it was launched (its Landlock domain outlives us).
    pub sandbox: Value,
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
        let iopub = Fanout::new(host.config.iopub_buffer, IOPUB_MESSAGES);
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
                sandbox: adopt.as_ref().map_or(Value::Null, |a| a.sandbox.clone()),
            }),
            state_tx: watch::channel(initial).0,
            endpoint_tx: watch::channel(None).0,
            iopub,
            control_tx,
            connections: AtomicUsize::new(0),
            rejections: kernelgate_wire::Rejections::default(),
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
                sandbox: m.sandbox.clone(),
            })
        })
    }

    /// Messages from this kernel (IOPub, replies to WebSocket clients) the host refused.
    pub fn rejections(&self) -> &kernelgate_wire::Rejections {
        &self.rejections
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
        let (state, last, restarts, reason, sandbox) = self.with_model(|m| {
            (
                m.state,
                m.last_activity,
                m.restarts,
                m.reason.clone(),
                m.sandbox.clone(),
            )
        });
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "last_activity": last.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "execution_state": state.execution_state(),
            "connections": self.connections(),
            "restarts": restarts,
            "sandbox": sandbox,
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
    /// IOPub messages and bytes held for clients that have not read them yet.
    pub fn iopub_held(&self) -> (usize, usize) {
        self.iopub.held()
    }

    /// A reader of this kernel's IOPub messages from now on.
    pub fn subscribe_iopub(&self) -> Reader<Arc<Broadcast>> {
        self.iopub.subscribe()
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

    /// Sends a verified (or host-made) IOPub message to every client.
    pub(crate) fn publish(&self, msg: RawMessage) {
        let size = msg.parts.iter().chain(&msg.buffers).map(Vec::len).sum();
        self.iopub.push(
            Arc::new(Broadcast {
                channel: Channel::IoPub,
                msg,
            }),
            size,
        );
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
        match RawMessage::from_message(&msg) {
            Ok(msg) => {
                self.publish(msg);
            }
            Err(e) => {
                tracing::warn!(kernel = %self.id, error = %e, "cannot encode a status message")
            }
        }
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
