//! Binding the five sockets and running the channel loops.
//!
//! Threads: the shell loop runs the kernel's handlers (and asks for input on stdin); the control
//! loop answers shutdown, interrupt and kernel_info even while the shell is busy; the heartbeat
//! loop echoes bytes. IOPub is shared behind a mutex. Every loop polls with a short timeout so a
//! shutdown request ends it promptly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kernelgate_wire::content::KernelInfoReply;
use kernelgate_wire::{
    Channel, ConnectionInfo, Message, Session, SessionConfig, Transport, Verified,
};
use kernelgate_zmq::{
    poll, Context, PollEvents, PollItem, SecretKey, Socket, SocketConfig, SocketType,
};

use crate::admission::{self, CurveAdmission, HEARTBEAT_ZAP_DOMAIN, ZAP_DOMAIN};
use crate::control::{heartbeat_loop, ControlLoop};
use crate::handler::{Kernel, KernelInfo};
use crate::history::History;
use crate::io::{encode_child, Flags, Publisher, Stdin};
use crate::shell::ShellLoop;
use kernelgate_wire::Rejections;

/// The stack of the thread that runs cells (see [`BoundKernel::run`]).
const SHELL_STACK: usize = 1 << 30;

/// Largest message a peer may send to IOPub: subscriptions (jupyter's are empty or a short
/// topic), and the CURVE handshake's commands, which a few hundred bytes would cut off.
const IOPUB_MAX_INBOUND: u64 = 4096;

/// How long a loop waits before re-checking the shutdown flag.
const TICK: Duration = Duration::from_millis(100);

/// How long the shell must sit idle after serving requests before [`KernelOptions::when_idle`]
/// runs: long enough that a burst of requests is over, short enough that an idle kernel soon
/// holds only what it needs.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

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
    /// Called on the shell thread once the kernel has sat idle for [`IDLE_AFTER`] after serving
    /// requests (once per idle spell): where a kernel process can give memory back.
    pub when_idle: Option<fn()>,
    /// With CURVE keys in the connection info: which clients are admitted.
    pub curve_admission: CurveAdmission,
}

impl KernelOptions {
    /// Options with defaults for `connection`.
    pub fn new(connection: ConnectionInfo) -> KernelOptions {
        let session = SessionConfig::default();
        KernelOptions {
            connection,
            kernel_id: session.session_id.clone(),
            session,
            sockets: SocketConfig::default(),
            history_entries: 10_000,
            when_idle: None,
            curve_admission: CurveAdmission::default(),
        }
    }
}

/// A kernel whose sockets are bound (so its connection info is final) but not yet running.
pub struct BoundKernel {
    // Declared first, so dropped first: the ZAP handler's sockets close before the context.
    _zap: Option<kernelgate_zmq::zap::ZapHandle>,
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
    when_idle: Option<fn()>,
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
        let domain = if channel == Channel::Heartbeat {
            HEARTBEAT_ZAP_DOMAIN
        } else {
            ZAP_DOMAIN
        };
        socket.set_zap_domain(domain)?;
        socket.set_zap_enforce_domain(true)?;
    }
    let port = info.port(channel);
    match info.transport {
        Transport::Tcp => {
            if info.ip.contains(':') {
                socket.set_ipv6(true)?;
            }
            let endpoint = if port == 0 {
                kernelgate_wire::connection::tcp_wildcard_endpoint(&info.ip)
            } else {
                info.endpoint(channel)
            };
            socket.bind(&endpoint)?;
            if port == 0 {
                let bound = socket.last_endpoint()?;
                let chosen = bound
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
                    .unwrap_or(0);
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
        // Before any CURVE socket is bound: until it runs, libzmq would admit any client.
        let zap = match &curve {
            Some(secret) => Some(admission::start(ctx, &options.curve_admission, secret)?),
            None => None,
        };
        let sc = &options.sockets;
        let c = curve.as_ref();
        let shell = bind_channel(ctx, SocketType::Router, &mut info, Channel::Shell, sc, c)?;
        let control = bind_channel(ctx, SocketType::Router, &mut info, Channel::Control, sc, c)?;
        let stdin = bind_channel(ctx, SocketType::Router, &mut info, Channel::Stdin, sc, c)?;
        // IOPub hears only subscriptions, and libzmq keeps each for as long as its peer stays
        // (50 of 1 MiB took 2.8 GiB): only short ones are accepted, a larger one disconnects
        // its sender. Many short distinct ones still cost memory (see SECURITY.md).
        let iopub_config = SocketConfig {
            max_msg_size: Some(IOPUB_MAX_INBOUND),
            ..sc.clone()
        };
        let iopub = bind_channel(
            ctx,
            SocketType::Pub,
            &mut info,
            Channel::IoPub,
            &iopub_config,
            c,
        )?;
        let hb = bind_channel(ctx, SocketType::Rep, &mut info, Channel::Heartbeat, sc, c)?;
        let session = Session::new(signer, options.session);
        Ok(BoundKernel {
            _zap: zap,
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
            when_idle: options.when_idle,
        })
    }

    /// The connection info with the ports actually bound.
    pub fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The kernel's session. Its clones share the replay history, so embedding code can watch
    /// it ([`Session::replay_history_len`]) while the kernel runs.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Runs the kernel until a shutdown request or `flags.shutdown`. Returns the counters of
    /// refused messages.
    pub fn run<K: Kernel>(
        self,
        mut kernel: K,
        flags: Flags,
    ) -> Result<Arc<Rejections>, KernelError> {
        let rejections = Arc::new(Rejections::default());
        let publisher = Arc::new(Publisher::new(
            self.iopub,
            self.session.clone(),
            self.kernel_id.clone(),
        ));
        let info = kernel.info();
        let hb_flags = flags.clone();
        let hb = self.hb;
        let hb_rejections = rejections.clone();
        let hb_thread = std::thread::Builder::new()
            .name("kernel-heartbeat".into())
            .spawn(move || heartbeat_loop(hb, hb_flags, &hb_rejections))
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
            reader: self.session.reader(),
            session: self.session,
            publisher,
            flags: flags.clone(),
            rejections: rejections.clone(),
            info,
            execution_count: 0,
            history: History::new(self.history_entries),
            queued: Vec::new(),
            when_idle: self.when_idle,
        };
        // Code runs on a thread with a large stack: a value nested a hundred thousand levels
        // deep (within every size limit of the built-in kernel) is cloned and dropped
        // recursively, and overflowing the main thread's 8 MiB aborts the whole process. The
        // stack is reserved, not used: only the pages touched count as memory. Where the
        // reservation is refused, the loop runs here.
        let ran = std::thread::scope(|scope| {
            let spawned = std::thread::Builder::new()
                .name("kernel-shell".into())
                .stack_size(SHELL_STACK)
                .spawn_scoped(scope, || shell.run(&mut kernel));
            match spawned {
                Ok(handle) => {
                    if let Err(panic) = handle.join() {
                        std::panic::resume_unwind(panic);
                    }
                    true
                }
                Err(e) => {
                    tracing::warn!(
                        "no thread with a {} MiB stack ({e}); cells run on the main thread",
                        SHELL_STACK >> 20
                    );
                    false
                }
            }
        });
        if !ran {
            shell.run(&mut kernel);
        }
        flags.request_shutdown();
        kernel.shutdown(false);
        let _ = control_thread.join();
        let _ = hb_thread.join();
        Ok(rejections)
    }
}

/// Waits until `socket` is readable, or a tick passes, or at most `timeout`: `Some(ready)`, or
/// `None` once the kernel is shutting down (or the context terminated).
pub(crate) fn wait_readable(
    socket: &Socket,
    flags: &Flags,
    timeout: Option<Duration>,
) -> Option<bool> {
    if flags.shutting_down() {
        return None;
    }
    let polled = match &flags.wake {
        Some(wake) => kernelgate_zmq::wait_readable(socket, wake, timeout),
        None => {
            let mut items = [PollItem::new(socket, PollEvents::READABLE)];
            let tick = timeout.map_or(TICK, |t| t.min(TICK));
            poll(&mut items, Some(tick)).map(|n| n > 0)
        }
    };
    if flags.shutting_down() {
        return None;
    }
    match polled {
        Ok(ready) => Some(ready),
        Err(e) if e.is_terminated() => None,
        Err(_) => Some(false),
    }
}

/// What one non-blocking receive found.
// Moved once per message, like the `Option<Message>` it replaces: boxing would only add a malloc.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Received {
    /// A verified message.
    Message(Verified<Message>),
    /// A message that was refused (counted and logged); more may be queued behind it.
    Refused,
    /// Nothing was queued (or the socket failed locally).
    Empty,
}

/// Receives one message from `socket` without blocking and checks it with `verify` (a
/// session's or a reader's `receive`), counting and logging refusals.
pub(crate) fn receive(
    socket: &Socket,
    verify: impl FnOnce(Vec<Vec<u8>>) -> kernelgate_wire::Result<Verified<Message>>,
    channel: Channel,
    rejections: &Rejections,
) -> Received {
    let frames = match socket.recv_multipart(true) {
        Ok(f) => f,
        Err(e) if e.is_again() => return Received::Empty,
        // Oversized or too many frames: refused by the transport before being stored.
        Err(e @ kernelgate_zmq::Error::TooLarge { .. }) => {
            crate::rejections::record_too_large(rejections, channel, &e);
            return Received::Refused;
        }
        // A local socket failure, not something a peer sent: log, don't count as a refusal.
        Err(e) => {
            tracing::debug!(channel = channel.name(), "receive failed: {e}");
            return Received::Empty;
        }
    };
    match verify(frames) {
        Ok(msg) => Received::Message(msg),
        Err(e) => {
            crate::rejections::record(rejections, channel, &e);
            Received::Refused
        }
    }
}

/// Sends a reply to `parent` on a ROUTER socket (routed back by the parent's identities).
pub(crate) fn send_reply<C: serde::Serialize>(
    socket: &Socket,
    session: &Session,
    msg_type: &str,
    content: &C,
    parent: &Message,
) {
    if let Some(frames) = encode_child(session, msg_type, content, Some(parent), None) {
        if let Err(e) = socket.send_multipart(&frames, true) {
            tracing::warn!("cannot send {msg_type}: {e}");
        }
    }
}

pub(crate) fn kernel_info_reply(info: &KernelInfo) -> KernelInfoReply {
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
