//! Binding the five sockets and running the channel loops.
//!
//! Threads: the shell loop runs the kernel's handlers (and asks for input on stdin); the control
//! loop answers shutdown, interrupt and kernel_info even while the shell is busy; the heartbeat
//! loop echoes bytes. IOPub is shared behind a mutex. Every loop polls with a short timeout so a
//! shutdown request ends it promptly.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kernelgate_wire::content::{
    CompleteRequest, ExecuteRequest, HistoryRequest, InspectRequest, IsCompleteRequest,
    KernelInfoReply, ShutdownRequest,
};
use kernelgate_wire::{Channel, ConnectionInfo, Message, Session, SessionConfig, Transport, Verified};
use kernelgate_zmq::{poll, Context, PollEvents, PollItem, SecretKey, Socket, SocketConfig, SocketType};
use serde_json::{json, Value};

use crate::handler::{Completeness, Kernel, KernelInfo, Outcome};
use crate::history::History;
use crate::io::{ExecContext, Flags, Publisher, Stdin};
use crate::rejections::Rejections;

/// How long a loop waits before re-checking the shutdown flag.
const TICK: Duration = Duration::from_millis(100);

/// Why a kernel could not start or stopped abnormally.
#[derive(Debug)]
#[non_exhaustive]
pub enum KernelError {
    /// A socket operation failed.
    Transport(kernelgate_zmq::Error),
    /// The connection info is unusable.
    Wire(kernelgate_wire::Error),
    /// A thread could not be started.
    Thread(std::io::Error),
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelError::Transport(e) => write!(f, "transport: {e}"),
            KernelError::Wire(e) => write!(f, "{e}"),
            KernelError::Thread(e) => write!(f, "cannot start a channel thread: {e}"),
        }
    }
}

impl std::error::Error for KernelError {}

impl From<kernelgate_zmq::Error> for KernelError {
    fn from(e: kernelgate_zmq::Error) -> Self {
        KernelError::Transport(e)
    }
}
impl From<kernelgate_wire::Error> for KernelError {
    fn from(e: kernelgate_wire::Error) -> Self {
        KernelError::Wire(e)
    }
}

/// Options for a kernel's sockets and sessions.
#[derive(Debug, Clone)]
pub struct KernelOptions {
    /// Where to listen and the key. Ports set to 0 are chosen by libzmq when binding.
    pub connection: ConnectionInfo,
    /// The kernel id used in IOPub topics.
    pub kernel_id: String,
    /// Session settings (limits, replay window).
    pub session: SessionConfig,
    /// Socket defaults (message size limits, high-water marks).
    pub sockets: SocketConfig,
    /// Maximum inputs kept for history_request.
    pub history_entries: usize,
}

impl KernelOptions {
    /// Options with defaults for `connection`.
    pub fn new(connection: ConnectionInfo) -> KernelOptions {
        let mut session = SessionConfig::default();
        session.username = "kernel".into();
        KernelOptions {
            connection,
            kernel_id: session.session_id.clone(),
            session,
            sockets: SocketConfig::default(),
            history_entries: 10_000,
        }
    }
}

/// A kernel whose sockets are bound (so its connection info is final) but not yet running.
pub struct BoundKernel {
    _ctx: Context,
    info: ConnectionInfo,
    kernel_id: String,
    session: Session,
    shell: Socket,
    control: Socket,
    stdin: Socket,
    iopub: Socket,
    hb: Socket,
    history_entries: usize,
}

fn bind_channel(
    ctx: &Context,
    ty: SocketType,
    info: &mut ConnectionInfo,
    channel: Channel,
    sockets: &SocketConfig,
    curve: Option<&SecretKey>,
) -> Result<Socket, KernelError> {
    let socket = ctx.socket_with(ty, sockets)?;
    if let Some(secret) = curve {
        socket.set_curve_server(true)?;
        socket.set_curve_secretkey(secret)?;
        socket.set_zap_domain(&format!("kernelgate"))?;
    }
    let port = info.port(channel);
    match info.transport {
        Transport::Tcp => {
            if info.ip.contains(':') {
                socket.set_ipv6(true)?;
            }
            let endpoint = if port == 0 {
                kernelgate_wire::connection::endpoint(Transport::Tcp, &info.ip, 0).replace(":0", ":*")
            } else {
                info.endpoint(channel)
            };
            socket.bind(&endpoint)?;
            if port == 0 {
                let bound = socket.last_endpoint()?;
                let chosen = bound.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
                info.set_port(channel, chosen);
            }
        }
        Transport::Ipc => {
            let mut p = if port == 0 { 1 } else { port };
            loop {
                let path = format!("{}-{}", info.ip, p);
                if port != 0 || !std::path::Path::new(&path).exists() {
                    socket.bind(&format!("ipc://{path}"))?;
                    info.set_port(channel, p);
                    break;
                }
                p = p.saturating_add(1);
                if p == u16::MAX {
                    return Err(KernelError::Wire(kernelgate_wire::Error::new(
                        kernelgate_wire::ErrorKind::InvalidConnectionInfo,
                        "no free ipc socket path",
                    )));
                }
            }
        }
    }
    Ok(socket)
}

impl BoundKernel {
    /// Binds the five sockets as `options` say. Ports that are 0 are chosen by libzmq while
    /// binding, so no other process can take them between choice and use.
    pub fn bind(ctx: &Context, options: KernelOptions) -> Result<BoundKernel, KernelError> {
        let mut info = options.connection;
        info.validate()?;
        let signer = info.signer(false)?;
        let curve = match &info.curve_secretkey {
            Some(k) => Some(
                SecretKey::from_z85(&String::from_utf8_lossy(k.expose()))
                    .map_err(KernelError::Transport)?,
            ),
            None => None,
        };
        let sc = &options.sockets;
        let c = curve.as_ref();
        let shell = bind_channel(ctx, SocketType::Router, &mut info, Channel::Shell, sc, c)?;
        let control = bind_channel(ctx, SocketType::Router, &mut info, Channel::Control, sc, c)?;
        let stdin = bind_channel(ctx, SocketType::Router, &mut info, Channel::Stdin, sc, c)?;
        let iopub = bind_channel(ctx, SocketType::Pub, &mut info, Channel::IoPub, sc, c)?;
        let hb = bind_channel(ctx, SocketType::Rep, &mut info, Channel::Heartbeat, sc, c)?;
        let session = Session::new(signer, options.session);
        Ok(BoundKernel {
            _ctx: ctx.clone(),
            info,
            kernel_id: options.kernel_id,
            session,
            shell,
            control,
            stdin,
            iopub,
            hb,
            history_entries: options.history_entries,
        })
    }

    /// The connection info with the ports actually bound.
    pub fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Runs the kernel until a shutdown request or `flags.shutdown`. Returns the counters of
    /// refused messages.
    pub fn run<K: Kernel>(self, mut kernel: K, flags: Flags) -> Result<Arc<Rejections>, KernelError> {
        let rejections = Arc::new(Rejections::default());
        let publisher = Arc::new(Publisher::new(self.iopub, self.session.clone(), self.kernel_id.clone()));
        let info = kernel.info();
        let hb_flags = flags.clone();
        let hb = self.hb;
        let hb_thread = std::thread::Builder::new()
            .name("kernel-heartbeat".into())
            .spawn(move || heartbeat_loop(hb, hb_flags))
            .map_err(KernelError::Thread)?;
        let control = ControlLoop {
            socket: self.control,
            session: self.session.clone(),
            publisher: publisher.clone(),
            flags: flags.clone(),
            rejections: rejections.clone(),
            info: info.clone(),
        };
        let control_thread = std::thread::Builder::new()
            .name("kernel-control".into())
            .spawn(move || control.run())
            .map_err(KernelError::Thread)?;

        publisher.status("starting", None);
        let mut shell = ShellLoop {
            socket: self.shell,
            stdin: Arc::new(Mutex::new(Stdin { socket: self.stdin })),
            session: self.session,
            publisher,
            flags: flags.clone(),
            rejections: rejections.clone(),
            info,
            execution_count: 0,
            history: History::new(self.history_entries),
            queued: Vec::new(),
        };
        shell.run(&mut kernel);
        flags.request_shutdown();
        kernel.shutdown(false);
        let _ = control_thread.join();
        let _ = hb_thread.join();
        Ok(rejections)
    }
}

/// Waits until `socket` is readable or a tick passes. Returns false when shutting down.
fn wait_readable(socket: &Socket, flags: &Flags) -> Option<bool> {
    if flags.shutting_down() {
        return None;
    }
    let mut items = [PollItem::new(socket, PollEvents::READABLE)];
    match poll(&mut items, Some(TICK)) {
        Ok(n) => Some(n > 0),
        Err(e) if e.is_terminated() => None,
        Err(_) => Some(false),
    }
}

fn heartbeat_loop(socket: Socket, flags: Flags) {
    while let Some(ready) = wait_readable(&socket, &flags) {
        if !ready {
            continue;
        }
        // Echo each frame of the request back: the heartbeat is raw bytes, not a signed message.
        match socket.recv_multipart(true) {
            Ok(frames) => {
                if let Err(e) = socket.send_multipart(&frames, true) {
                    tracing::debug!("heartbeat echo failed: {e}");
                }
            }
            Err(e) if e.is_again() => {}
            Err(e) => tracing::debug!("heartbeat receive failed: {e}"),
        }
    }
}

/// Receives one verified message from `socket`, counting and logging refusals.
fn receive(
    socket: &Socket,
    session: &Session,
    channel: Channel,
    rejections: &Rejections,
) -> Option<Verified<Message>> {
    let frames = match socket.recv_multipart(true) {
        Ok(f) => f,
        Err(e) if e.is_again() => return None,
        Err(e) => {
            // Oversized or too many frames: refused by the transport before being stored.
            let err = kernelgate_wire::Error::new(kernelgate_wire::ErrorKind::TooLarge, e.to_string());
            rejections.record(channel, &err);
            return None;
        }
    };
    match session.receive(frames) {
        Ok(msg) => Some(msg),
        Err(e) => {
            rejections.record(channel, &e);
            None
        }
    }
}

fn send_reply<C: serde::Serialize>(
    socket: &Socket,
    session: &Session,
    msg_type: &str,
    content: &C,
    parent: &Message,
) {
    let result = session
        .message(msg_type, content, Some(parent))
        .and_then(|m| session.encode(&m));
    match result {
        Ok(frames) => {
            if let Err(e) = socket.send_multipart(&frames, true) {
                tracing::warn!("cannot send {msg_type}: {e}");
            }
        }
        Err(e) => tracing::error!("cannot build {msg_type}: {e}"),
    }
}

fn kernel_info_reply(info: &KernelInfo) -> KernelInfoReply {
    KernelInfoReply {
        status: kernelgate_wire::content::Status::Ok,
        protocol_version: kernelgate_wire::PROTOCOL_VERSION.into(),
        implementation: info.implementation.clone(),
        implementation_version: info.implementation_version.clone(),
        language_info: info.language_info.clone(),
        banner: info.banner.clone(),
        debugger: false,
        help_links: Vec::new(),
        extra: Default::default(),
    }
}

struct ControlLoop {
    socket: Socket,
    session: Session,
    publisher: Arc<Publisher>,
    flags: Flags,
    rejections: Arc<Rejections>,
    info: KernelInfo,
}

impl ControlLoop {
    fn run(self) {
        while let Some(ready) = wait_readable(&self.socket, &self.flags) {
            if !ready {
                continue;
            }
            let Some(msg) = receive(&self.socket, &self.session, Channel::Control, &self.rejections) else {
                continue;
            };
            self.handle(&msg);
        }
    }

    fn handle(&self, msg: &Message) {
        match msg.msg_type() {
            "shutdown_request" => {
                let restart = msg.content_as::<ShutdownRequest>().map(|r| r.restart).unwrap_or(false);
                let reply = json!({ "status": "ok", "restart": restart });
                send_reply(&self.socket, &self.session, "shutdown_reply", &reply, msg);
                // ipykernel also broadcasts the reply so every client learns of the shutdown.
                self.publisher.publish("shutdown_reply", &reply, Some(msg));
                tracing::info!(restart, "shutdown requested");
                self.flags.request_shutdown();
            }
            "interrupt_request" => {
                self.flags.interrupt.store(true, Ordering::SeqCst);
                send_reply(&self.socket, &self.session, "interrupt_reply", &json!({ "status": "ok" }), msg);
            }
            "kernel_info_request" => {
                send_reply(&self.socket, &self.session, "kernel_info_reply", &kernel_info_reply(&self.info), msg);
            }
            "kernelgate_stats_request" => {
                let reply = json!({ "status": "ok", "rejected": self.rejections.snapshot() });
                send_reply(&self.socket, &self.session, "kernelgate_stats_reply", &reply, msg);
            }
            other => tracing::debug!("ignoring {other} on control"),
        }
    }
}

struct ShellLoop {
    socket: Socket,
    stdin: Arc<Mutex<Stdin>>,
    session: Session,
    publisher: Arc<Publisher>,
    flags: Flags,
    rejections: Arc<Rejections>,
    info: KernelInfo,
    execution_count: i64,
    history: History,
    /// Requests taken off the queue by a failed cell, to be aborted or served next.
    queued: Vec<Message>,
}

impl ShellLoop {
    fn run<K: Kernel>(&mut self, kernel: &mut K) {
        while let Some(ready) = wait_readable(&self.socket, &self.flags) {
            if !ready {
                continue;
            }
            let Some(msg) = receive(&self.socket, &self.session, Channel::Shell, &self.rejections) else {
                continue;
            };
            let msg = msg.into_inner();
            self.flags.busy.store(true, Ordering::SeqCst);
            self.publisher.status("busy", Some(&msg));
            let errored = self.dispatch(kernel, &msg);
            self.publisher.status("idle", Some(&msg));
            self.flags.busy.store(false, Ordering::SeqCst);
            if errored {
                self.abort_queued(kernel);
            }
        }
    }

    /// Handles one request. Returns true when an execute_request failed with stop_on_error.
    fn dispatch<K: Kernel>(&mut self, kernel: &mut K, msg: &Message) -> bool {
        match msg.msg_type() {
            "kernel_info_request" => {
                self.reply("kernel_info_reply", &kernel_info_reply(&self.info), msg);
            }
            "execute_request" => return self.execute(kernel, msg),
            "complete_request" => match msg.content_as::<CompleteRequest>() {
                Ok(req) => {
                    let c = kernel.complete(&req.code, req.cursor_pos);
                    let reply = json!({
                        "status": "ok", "matches": c.matches, "cursor_start": c.cursor_start,
                        "cursor_end": c.cursor_end, "metadata": {},
                    });
                    self.reply("complete_reply", &reply, msg);
                }
                Err(e) => self.reply_error("complete_reply", &e, msg),
            },
            "inspect_request" => match msg.content_as::<InspectRequest>() {
                Ok(req) => {
                    let found = kernel.inspect(&req.code, req.cursor_pos, req.detail_level);
                    let reply = json!({
                        "status": "ok", "found": found.is_some(),
                        "data": found.unwrap_or_default(), "metadata": {},
                    });
                    self.reply("inspect_reply", &reply, msg);
                }
                Err(e) => self.reply_error("inspect_reply", &e, msg),
            },
            "is_complete_request" => match msg.content_as::<IsCompleteRequest>() {
                Ok(req) => {
                    let reply = match kernel.is_complete(&req.code) {
                        Completeness::Complete => json!({ "status": "complete" }),
                        Completeness::Incomplete(indent) => json!({ "status": "incomplete", "indent": indent }),
                        Completeness::Invalid => json!({ "status": "invalid" }),
                        Completeness::Unknown => json!({ "status": "unknown" }),
                    };
                    self.reply("is_complete_reply", &reply, msg);
                }
                Err(e) => self.reply_error("is_complete_reply", &e, msg),
            },
            "history_request" => match msg.content_as::<HistoryRequest>() {
                Ok(req) => {
                    let reply = json!({ "status": "ok", "history": self.history.query(&req) });
                    self.reply("history_reply", &reply, msg);
                }
                Err(e) => self.reply_error("history_reply", &e, msg),
            },
            "comm_info_request" => {
                self.reply("comm_info_reply", &json!({ "status": "ok", "comms": {} }), msg);
            }
            "comm_open" => {
                // No comm targets: tell the frontend the comm is closed, as the spec asks.
                let comm_id = msg.content.get("comm_id").cloned().unwrap_or(Value::Null);
                self.publisher.publish("comm_close", &json!({ "comm_id": comm_id, "data": {} }), Some(msg));
            }
            "comm_msg" | "comm_close" => {}
            "shutdown_request" => {
                // Old clients send it on shell.
                let restart = msg.content_as::<ShutdownRequest>().map(|r| r.restart).unwrap_or(false);
                let reply = json!({ "status": "ok", "restart": restart });
                self.reply("shutdown_reply", &reply, msg);
                self.publisher.publish("shutdown_reply", &reply, Some(msg));
                self.flags.request_shutdown();
            }
            other => tracing::warn!("unknown shell message type {other:?}; ignored"),
        }
        false
    }

    fn reply<C: serde::Serialize>(&self, msg_type: &str, content: &C, parent: &Message) {
        send_reply(&self.socket, &self.session, msg_type, content, parent);
    }

    fn reply_error(&self, msg_type: &str, e: &kernelgate_wire::Error, parent: &Message) {
        self.rejections.record(Channel::Shell, e);
        let reply = json!({ "status": "error", "ename": "BadRequest", "evalue": e.to_string(), "traceback": [] });
        self.reply(msg_type, &reply, parent);
    }

    fn execute<K: Kernel>(&mut self, kernel: &mut K, msg: &Message) -> bool {
        let req = match msg.content_as::<ExecuteRequest>() {
            Ok(r) => r,
            Err(e) => {
                self.reply_error("execute_reply", &e, msg);
                return false;
            }
        };
        let store = req.store_history && !req.silent;
        if store {
            self.execution_count += 1;
        }
        let count = self.execution_count;
        if !req.silent {
            self.publisher.publish("execute_input", &json!({ "code": req.code, "execution_count": count }), Some(msg));
        }
        self.flags.interrupt.store(false, Ordering::SeqCst);
        let ctx = ExecContext {
            publisher: self.publisher.clone(),
            stdin: self.stdin.clone(),
            session: self.session.clone(),
            parent: Arc::new(msg.clone()),
            allow_stdin: req.allow_stdin,
            flags: self.flags.clone(),
            rejections: self.rejections.clone(),
            execution_count: count,
        };
        let outcome = kernel.execute(&req.code, &ctx);
        self.flags.interrupt.store(false, Ordering::SeqCst);
        match outcome {
            Outcome::Ok(data) => {
                let plain = data.as_ref().and_then(|d| d.get("text/plain")).and_then(Value::as_str).map(str::to_owned);
                if let (Some(data), false) = (data, req.silent) {
                    self.publisher.publish(
                        "execute_result",
                        &json!({ "execution_count": count, "data": data, "metadata": {} }),
                        Some(msg),
                    );
                }
                if store {
                    self.history.record(count, &req.code, plain);
                }
                let reply = json!({
                    "status": "ok", "execution_count": count, "user_expressions": {}, "payload": [],
                });
                self.reply("execute_reply", &reply, msg);
                false
            }
            Outcome::Error { ename, evalue, traceback } => {
                if store {
                    self.history.record(count, &req.code, None);
                }
                self.publisher.publish(
                    "error",
                    &json!({ "ename": ename, "evalue": evalue, "traceback": traceback }),
                    Some(msg),
                );
                if req.stop_on_error {
                    // Take what was queued while this cell ran BEFORE replying: those requests
                    // were sent without knowing of the error and are aborted; anything sent
                    // after the client saw the error reply runs normally.
                    self.queued = self.drain_queue();
                }
                let reply = json!({
                    "status": "error", "execution_count": count, "ename": ename, "evalue": evalue,
                    "traceback": traceback, "user_expressions": {}, "payload": [],
                });
                self.reply("execute_reply", &reply, msg);
                req.stop_on_error
            }
        }
    }

    fn drain_queue(&self) -> Vec<Message> {
        let mut queued = Vec::new();
        while let Ok(frames) = self.socket.recv_multipart(true) {
            match self.session.receive(frames) {
                Ok(msg) => queued.push(msg.into_inner()),
                Err(e) => self.rejections.record(Channel::Shell, &e),
            }
        }
        queued
    }

    /// After an error with stop_on_error, the execute requests queued during that cell are
    /// answered `aborted` (as ipykernel does); other queued requests are served normally.
    fn abort_queued<K: Kernel>(&mut self, kernel: &mut K) {
        for msg in std::mem::take(&mut self.queued) {
            self.publisher.status("busy", Some(&msg));
            if msg.msg_type() == "execute_request" {
                let reply = json!({ "status": "aborted", "execution_count": self.execution_count });
                self.reply("execute_reply", &reply, &msg);
            } else {
                self.dispatch(kernel, &msg);
            }
            self.publisher.status("idle", Some(&msg));
        }
    }
}
