//! The host's ZeroMQ plumbing: a pool of contexts (libzmq caps sockets per context at 1023),
//! socket helpers, and one-shot signed requests (kernel_info, shutdown, interrupt).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kernelgate_wire::{Channel, ConnectionInfo, Message, Session, SessionConfig};
use kernelgate_zmq::zmtp::{Link, LinkConfig, Role, ZmtpError};
use kernelgate_zmq::{AsyncSocket, Context, SocketType};
use serde_json::Value;

/// Kernels per libzmq context (each context has its own I/O thread).
const KERNELS_PER_CONTEXT: usize = 128;

/// Sockets per context: each kernel holds 2 and each WebSocket connection 3, so libzmq's default
/// of 1023 would let 300 connections to one context's kernels make every later socket of those
/// kernels (a restart, another connection) fail. This fits the host's default cap of 4,096
/// connections all on one context's kernels; libzmq reserves a pointer per slot (128 KiB).
const SOCKETS_PER_CONTEXT: i32 = 16_384;

/// The longest wait before reconnecting to a kernel's port.
const RECONNECT_MAX: Duration = Duration::from_millis(50);

/// Hands out contexts, starting a new one every [`KERNELS_PER_CONTEXT`] kernels.
#[derive(Debug, Default)]
pub struct ContextPool {
    contexts: Mutex<Vec<Context>>,
    handed: AtomicUsize,
}

impl ContextPool {
    /// A context for a new kernel.
    pub fn get(&self) -> kernelgate_zmq::Result<Context> {
        let n = self.handed.fetch_add(1, Ordering::Relaxed);
        let idx = n / KERNELS_PER_CONTEXT;
        let mut v = self.contexts.lock().unwrap_or_else(|p| p.into_inner());
        while v.len() <= idx {
            let ctx = Context::new()?;
            ctx.set_max_sockets(SOCKETS_PER_CONTEXT)?;
            v.push(ctx);
        }
        v.get(idx)
            .cloned()
            .ok_or(kernelgate_zmq::Error::InvalidArgument(
                "context pool".into(),
            ))
    }
}

/// Opens a socket of `ty` connected to `channel` of the kernel.
pub fn open(
    ctx: &Context,
    info: &ConnectionInfo,
    ty: SocketType,
    channel: Channel,
    routing_id: Option<&[u8]>,
) -> kernelgate_zmq::Result<AsyncSocket> {
    let socket = ctx.socket(ty)?;
    if let Some(id) = routing_id {
        socket.set_routing_id(id)?;
    }
    if ty == SocketType::Sub {
        socket.subscribe(b"")?;
    }
    socket.set_linger(Some(Duration::from_millis(100)))?;
    // The host's kernels are local: a connection refused because the kernel has not bound yet
    // is retried within 50 ms, not after libzmq's backoff of up to a second (which, with many
    // kernels starting at once, made each wait out whole backoff steps).
    socket.set_reconnect_ivl(Duration::from_millis(2), RECONNECT_MAX)?;
    if let Some((server, secret)) = curve_keys(info)? {
        // jupyter_client's convention, which the built-in kernel admits: the client presents
        // the connection file's keypair (the host wrote that file, or can read it).
        socket.configure_curve_client(&server, &server, &secret)?;
    }
    socket.connect(&info.endpoint(channel))?;
    AsyncSocket::new(socket)
}

/// One of a kernel's shell, control, stdin or IOPub sockets as the host holds it.
#[derive(Debug)]
// The link is the usual variant: unboxed, a few hundred bytes per socket held, no indirection.
#[allow(clippy::large_enum_variant)]
pub enum KernelSocket {
    /// A ZMTP link run by the task that uses it, for kernels without CURVE: no hand-off to
    /// libzmq's I/O thread on the way in or out (see [`kernelgate_zmq::zmtp`]).
    Link(Link),
    /// A libzmq socket, for CURVE (and when links are switched off).
    Zmq(AsyncSocket),
}

impl KernelSocket {
    /// Receives a multipart message. A link's errors are the kernel's protocol errors: the
    /// link has dropped that connection and makes a new one by itself.
    pub async fn recv_multipart(&mut self) -> kernelgate_zmq::Result<Vec<Vec<u8>>> {
        match self {
            KernelSocket::Link(l) => l.recv_multipart().await,
            KernelSocket::Zmq(s) => s.recv_multipart().await,
        }
    }

    /// A message already received, without waiting.
    pub fn try_recv_multipart(&mut self) -> Option<kernelgate_zmq::Result<Vec<Vec<u8>>>> {
        match self {
            KernelSocket::Link(l) => l.try_recv_multipart(),
            KernelSocket::Zmq(s) => match s.get_ref().recv_multipart(true) {
                Err(e) if e.is_again() => None,
                r => Some(r),
            },
        }
    }

    /// Sends a multipart message.
    pub async fn send_multipart(&mut self, frames: &[Vec<u8>]) -> kernelgate_zmq::Result<()> {
        match self {
            KernelSocket::Link(l) => l.send_multipart(frames).await,
            KernelSocket::Zmq(s) => s.send_multipart(frames).await,
        }
    }
}

/// Opens the host's socket of `ty` (DEALER or SUB) to `channel` of the kernel: a ZMTP link
/// when `links` allows and the kernel has no CURVE keys, else a libzmq socket.
pub fn open_kernel(
    ctx: &Context,
    info: &ConnectionInfo,
    ty: SocketType,
    channel: Channel,
    routing_id: Option<&[u8]>,
    links: bool,
) -> kernelgate_zmq::Result<KernelSocket> {
    let plain = info.curve_publickey.is_none() && info.curve_secretkey.is_none();
    if !(links && plain) {
        return open(ctx, info, ty, channel, routing_id).map(KernelSocket::Zmq);
    }
    let role = match ty {
        SocketType::Sub => Role::Sub,
        SocketType::Dealer => Role::Dealer {
            routing_id: routing_id
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string().into_bytes()),
        },
        other => {
            return Err(kernelgate_zmq::Error::InvalidArgument(format!(
                "no ZMTP link for a {other:?} socket"
            )))
        }
    };
    let config = LinkConfig {
        reconnect_max: RECONNECT_MAX,
        ..LinkConfig::default()
    };
    Link::new(&info.endpoint(channel), role, config).map(KernelSocket::Link)
}

/// Counts and logs (rate-limited) a kernel's broken ZMTP framing as a refused message.
pub fn record_socket_error(
    rejections: &kernelgate_wire::Rejections,
    kernel: &str,
    what: &str,
    e: &kernelgate_zmq::Error,
) {
    let kind = match e {
        kernelgate_zmq::Error::Zmtp(
            ZmtpError::FrameTooLarge { .. } | ZmtpError::MessageTooLarge { .. },
        )
        | kernelgate_zmq::Error::TooLarge { .. } => kernelgate_wire::ErrorKind::TooLarge,
        _ => kernelgate_wire::ErrorKind::MalformedFrames,
    };
    let error = kernelgate_wire::Error::new(kind, e.to_string());
    crate::refusals::record_message(rejections, kernel, what, &error);
}

/// The kernel's CURVE public and secret key, when its connection info has them.
fn curve_keys(
    info: &ConnectionInfo,
) -> kernelgate_zmq::Result<Option<(kernelgate_zmq::PublicKey, kernelgate_zmq::SecretKey)>> {
    let (Some(public), Some(secret)) = (&info.curve_publickey, &info.curve_secretkey) else {
        return Ok(None);
    };
    let secret = kernelgate_zmq::SecretKey::from_z85(&String::from_utf8_lossy(secret.expose()))?;
    Ok(Some((kernelgate_zmq::PublicKey::from_z85(public)?, secret)))
}

/// A session signing with the kernel's key, for the host's own requests.
pub fn session_for(
    info: &ConnectionInfo,
    username: &str,
) -> Result<Session, kernelgate_wire::Error> {
    let signer = info.signer(false)?;
    Ok(Session::new(
        signer,
        SessionConfig {
            username: username.into(),
            ..SessionConfig::default()
        },
    ))
}

/// Signs `msg_type` with the kernel's key and sends it on a fresh DEALER to `channel`, waiting
/// at most `send_timeout` for the send. Returns the session, the socket and the request's msg_id.
async fn send_one(
    ctx: &Context,
    info: &ConnectionInfo,
    channel: Channel,
    msg_type: &str,
    content: Value,
    send_timeout: Duration,
) -> Result<(Session, AsyncSocket, String), String> {
    let session = session_for(info, "kernelgate-host").map_err(|e| e.to_string())?;
    let mut sock = open(ctx, info, SocketType::Dealer, channel, None).map_err(|e| e.to_string())?;
    let msg = session
        .message(msg_type, &content, None)
        .map_err(|e| e.to_string())?;
    let msg_id = msg.header.msg_id.clone();
    let frames = session.encode_owned(msg).map_err(|e| e.to_string())?;
    tokio::time::timeout(send_timeout, sock.send_multipart(&frames))
        .await
        .map_err(|_| format!("sending {msg_type} timed out"))?
        .map_err(|e| e.to_string())?;
    Ok((session, sock, msg_id))
}

/// Sends one request on a fresh DEALER and waits for its verified reply.
pub async fn request(
    ctx: &Context,
    info: &ConnectionInfo,
    channel: Channel,
    msg_type: &str,
    content: Value,
    timeout: Duration,
) -> Result<Message, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let (session, mut sock, msg_id) =
        send_one(ctx, info, channel, msg_type, content, timeout).await?;
    loop {
        let frames = tokio::time::timeout_at(deadline, sock.recv_multipart())
            .await
            .map_err(|_| format!("no {msg_type} reply in time"))?
            .map_err(|e| e.to_string())?;
        match session.receive(frames) {
            Ok(reply) if reply.parent_msg_id() == msg_id => return Ok(reply.into_inner()),
            Ok(_) => continue,
            Err(e) => tracing::warn!(error = %e, "refused a reply to the host's {msg_type}"),
        }
    }
}

/// Sends one request and does not wait for a reply. The socket lingers 100 ms on close, so the
/// request still goes out.
pub async fn send_only(
    ctx: &Context,
    info: &ConnectionInfo,
    channel: Channel,
    msg_type: &str,
    content: Value,
) -> Result<(), String> {
    send_one(
        ctx,
        info,
        channel,
        msg_type,
        content,
        Duration::from_secs(1),
    )
    .await
    .map(drop)
}

/// Waits until the kernel answers `kernel_info_request` with its key, asking again every
/// second (the first request can be lost while the kernel is still setting up).
pub async fn wait_ready(
    ctx: &Context,
    info: &ConnectionInfo,
    timeout: Duration,
) -> Result<Message, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err("kernel did not answer kernel_info_request in time".into());
        }
        let attempt = left.min(Duration::from_secs(1));
        match request(
            ctx,
            info,
            Channel::Shell,
            "kernel_info_request",
            serde_json::json!({}),
            attempt,
        )
        .await
        {
            Ok(reply) => return Ok(reply),
            Err(e) => tracing::trace!("kernel not ready yet: {e}"),
        }
    }
}
