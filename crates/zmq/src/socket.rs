//! Sockets with safe defaults, bounded receives and typed options.

use std::os::fd::RawFd;
use std::time::Duration;

use crate::context::Context;
use crate::curve::{PublicKey, SecretKey};
use crate::error::{Error, Result};
use crate::ffi::RawSocket;
use crate::poll::PollEvents;

// Option numbers from zmq.h (libzmq 4.3.5).
const ZMQ_ROUTING_ID: i32 = 5;
const ZMQ_SUBSCRIBE: i32 = 6;
const ZMQ_UNSUBSCRIBE: i32 = 7;
const ZMQ_RCVMORE: i32 = 13;
const ZMQ_FD: i32 = 14;
const ZMQ_EVENTS: i32 = 15;
const ZMQ_LINGER: i32 = 17;
const ZMQ_RECONNECT_IVL: i32 = 18;
const ZMQ_RECONNECT_IVL_MAX: i32 = 21;
const ZMQ_MAXMSGSIZE: i32 = 22;
const ZMQ_SNDHWM: i32 = 23;
const ZMQ_RCVHWM: i32 = 24;
const ZMQ_RCVTIMEO: i32 = 27;
const ZMQ_SNDTIMEO: i32 = 28;
const ZMQ_LAST_ENDPOINT: i32 = 32;
const ZMQ_ROUTER_MANDATORY: i32 = 33;
const ZMQ_IMMEDIATE: i32 = 39;
const ZMQ_IPV6: i32 = 42;
const ZMQ_MECHANISM: i32 = 43;
const ZMQ_CURVE_SERVER: i32 = 47;
const ZMQ_CURVE_PUBLICKEY: i32 = 48;
const ZMQ_CURVE_SECRETKEY: i32 = 49;
const ZMQ_CURVE_SERVERKEY: i32 = 50;
const ZMQ_ZAP_DOMAIN: i32 = 55;
const ZMQ_HANDSHAKE_IVL: i32 = 66;
const ZMQ_ZAP_ENFORCE_DOMAIN: i32 = 93;

pub(crate) const ZMQ_DONTWAIT: i32 = 1;
const ZMQ_SNDMORE: i32 = 2;

/// The socket patterns kernelgate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketType {
    /// Exclusive pair (inproc signalling).
    Pair,
    /// Publisher (IOPub).
    Pub,
    /// Subscriber.
    Sub,
    /// Request (heartbeat client).
    Req,
    /// Reply (heartbeat echo).
    Rep,
    /// Dealer (frontend shell/control/stdin).
    Dealer,
    /// Router (kernel shell/control/stdin).
    Router,
}

impl SocketType {
    fn raw(self) -> i32 {
        match self {
            SocketType::Pair => 0,
            SocketType::Pub => 1,
            SocketType::Sub => 2,
            SocketType::Req => 3,
            SocketType::Rep => 4,
            SocketType::Dealer => 5,
            SocketType::Router => 6,
        }
    }
}

/// Caps on one received multipart message, checked while this side reads it, so an oversized
/// message is discarded frame by frame instead of being collected. libzmq itself queues a
/// multipart message whole before the first frame can be read (each frame within
/// `ZMQ_MAXMSGSIZE`): these caps bound what we keep, not what libzmq buffers (see
/// docs/SECURITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvLimits {
    /// Maximum frames in one message.
    pub max_frames: usize,
    /// Maximum bytes summed over all frames of one message.
    pub max_total_bytes: usize,
}

impl Default for RecvLimits {
    fn default() -> Self {
        Self {
            max_frames: 4096,
            max_total_bytes: 128 << 20,
        }
    }
}

/// Settings applied to every new socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// ZMQ_MAXMSGSIZE: a peer sending a larger frame is disconnected by libzmq before
    /// the frame is buffered. `None` = unlimited (not recommended).
    pub max_msg_size: Option<u64>,
    /// Send high-water mark (messages).
    pub sndhwm: i32,
    /// Receive high-water mark (messages).
    pub rcvhwm: i32,
    /// How long unsent messages are kept after close. `None` = forever (can hang
    /// context termination, so avoid).
    pub linger: Option<Duration>,
    /// Limits for [`Socket::recv_multipart`].
    pub recv_limits: RecvLimits,
    /// First retry after a refused connect, doubling up to a second. libzmq's 100 ms default
    /// would add 100 ms to every kernel start whose client connects before the kernel binds.
    pub reconnect_ivl: Duration,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            max_msg_size: Some(64 << 20),
            sndhwm: 1000,
            rcvhwm: 1000,
            // Short but non-zero, so a reply sent just before close still goes out.
            linger: Some(Duration::from_millis(200)),
            recv_limits: RecvLimits::default(),
            reconnect_ivl: Duration::from_millis(2),
        }
    }
}

fn millis(d: Option<Duration>) -> i32 {
    d.map_or(-1, |d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX))
}

/// A libzmq socket. `Send` (may move to another thread) but not `Sync` (libzmq sockets
/// are single-threaded). Closed on drop.
pub struct Socket {
    // Declared before `ctx`: the socket must close before the context can terminate.
    raw: RawSocket,
    ty: SocketType,
    limits: RecvLimits,
    _ctx: Context,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("type", &self.ty)
            .finish_non_exhaustive()
    }
}

impl Socket {
    pub(crate) fn new(ctx: &Context, ty: SocketType, config: &SocketConfig) -> Result<Self> {
        let raw = RawSocket::new(ctx.raw(), ty.raw())?;
        let sock = Self {
            raw,
            ty,
            limits: config.recv_limits,
            _ctx: ctx.clone(),
        };
        sock.set_max_msg_size(config.max_msg_size)?;
        sock.set_sndhwm(config.sndhwm)?;
        sock.set_rcvhwm(config.rcvhwm)?;
        sock.set_linger(config.linger)?;
        sock.set_reconnect_ivl(config.reconnect_ivl, Duration::from_secs(1))?;
        Ok(sock)
    }

    /// The socket's type.
    pub fn socket_type(&self) -> SocketType {
        self.ty
    }

    /// Binds to an endpoint (`tcp://127.0.0.1:*` lets libzmq pick a free port; read it
    /// back with [`Socket::last_endpoint`]).
    pub fn bind(&self, endpoint: &str) -> Result<()> {
        self.raw.bind(endpoint)
    }

    /// Connects to an endpoint.
    pub fn connect(&self, endpoint: &str) -> Result<()> {
        self.raw.connect(endpoint)
    }

    /// Stops listening on an endpoint (use the resolved address from `last_endpoint`).
    pub fn unbind(&self, endpoint: &str) -> Result<()> {
        self.raw.unbind(endpoint)
    }

    /// Disconnects from an endpoint.
    pub fn disconnect(&self, endpoint: &str) -> Result<()> {
        self.raw.disconnect(endpoint)
    }

    /// The last endpoint bound or connected, with wildcards resolved
    /// (e.g. `tcp://127.0.0.1:41234`).
    pub fn last_endpoint(&self) -> Result<String> {
        let mut bytes = self.raw.get_bytes(ZMQ_LAST_ENDPOINT, 1024)?;
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        String::from_utf8(bytes).map_err(|_| Error::InvalidArgument("endpoint is not UTF-8".into()))
    }

    /// Sends one frame; `more` marks that further frames of the same message follow.
    pub fn send(&self, data: &[u8], more: bool, dontwait: bool) -> Result<()> {
        let mut flags = if more { ZMQ_SNDMORE } else { 0 };
        if dontwait {
            flags |= ZMQ_DONTWAIT;
        }
        self.raw.send(data, flags)
    }

    /// Sends a multipart message. With `dontwait`, `EAGAIN` (see [`Error::is_again`])
    /// means nothing was sent. An empty message is rejected.
    pub fn send_multipart<I>(&self, frames: I, dontwait: bool) -> Result<()>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut iter = frames.into_iter().peekable();
        let mut first = true;
        while let Some(frame) = iter.next() {
            let more = iter.peek().is_some();
            // Only the first frame can block: once it is queued libzmq accepts the rest
            // of the message, so a message is never sent partially.
            self.send(frame.as_ref(), more, dontwait && first)?;
            first = false;
        }
        if first {
            return Err(Error::InvalidArgument(
                "cannot send an empty multipart message".into(),
            ));
        }
        Ok(())
    }

    /// Receives one frame and whether more frames follow. Bounded by ZMQ_MAXMSGSIZE.
    pub fn recv(&self, dontwait: bool) -> Result<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let more = self
            .raw
            .recv_frame(if dontwait { ZMQ_DONTWAIT } else { 0 }, |b| {
                out.extend_from_slice(b)
            })?;
        Ok((out, more))
    }

    /// Receives a whole multipart message within this socket's [`RecvLimits`]. A message
    /// over the limits is drained and dropped without being stored, and
    /// [`Error::TooLarge`] is returned; the socket stays usable.
    pub fn recv_multipart(&self, dontwait: bool) -> Result<Vec<Vec<u8>>> {
        let limits = self.limits;
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let (mut count, mut bytes) = (0usize, 0usize);
        let mut over = false;
        let mut flags = if dontwait { ZMQ_DONTWAIT } else { 0 };
        loop {
            let received = self.raw.recv_frame(flags, |b| {
                count += 1;
                bytes = bytes.saturating_add(b.len());
                over = over || count > limits.max_frames || bytes > limits.max_total_bytes;
                if over {
                    frames = Vec::new(); // release what was kept so far
                } else {
                    frames.push(b.to_vec());
                }
            });
            let more = match received {
                Ok(more) => more,
                Err(e) => {
                    if count > 0 {
                        self.drain_rest();
                    }
                    return Err(e);
                }
            };
            // The rest of a multipart message is already here: never wait for it.
            flags = 0;
            if !more {
                break;
            }
        }
        if over {
            tracing::debug!(
                count,
                bytes,
                "discarded multipart message over receive limits"
            );
            return Err(Error::TooLarge {
                frames: count,
                bytes,
                limits,
            });
        }
        Ok(frames)
    }

    /// Best effort after a mid-message failure: discard the remaining frames so the next
    /// receive starts at a message boundary.
    fn drain_rest(&self) {
        while matches!(self.rcvmore(), Ok(true)) {
            if self.raw.recv_frame(ZMQ_DONTWAIT, |_| {}).is_err() {
                break;
            }
        }
    }

    /// The receive limits in force.
    pub fn recv_limits(&self) -> RecvLimits {
        self.limits
    }

    /// Replaces the receive limits.
    pub fn set_recv_limits(&mut self, limits: RecvLimits) {
        self.limits = limits;
    }

    /// Whether the last received frame has more frames after it (ZMQ_RCVMORE).
    pub fn rcvmore(&self) -> Result<bool> {
        Ok(self.raw.get_i32(ZMQ_RCVMORE)? != 0)
    }

    /// Pending events (ZMQ_EVENTS). Reading this also processes libzmq's internal
    /// commands, which re-arms the edge-triggered [`Socket::fd`].
    pub fn events(&self) -> Result<PollEvents> {
        let v = self.raw.get_i32(ZMQ_EVENTS)?;
        Ok(PollEvents::from_bits(i16::try_from(v).unwrap_or(0)))
    }

    /// The socket's notification fd (ZMQ_FD): becomes readable, edge-triggered, when
    /// [`Socket::events`] may have changed. Never read from or close it.
    pub fn fd(&self) -> Result<RawFd> {
        self.raw.get_i32(ZMQ_FD)
    }

    /// The negotiated security mechanism (0 NULL, 1 PLAIN, 2 CURVE).
    pub fn mechanism(&self) -> Result<i32> {
        self.raw.get_i32(ZMQ_MECHANISM)
    }

    /// Sets the routing id (identity) seen by a ROUTER peer: 1 to 255 bytes, not
    /// starting with a zero byte (reserved by libzmq).
    pub fn set_routing_id(&self, id: &[u8]) -> Result<()> {
        if id.is_empty() || id.len() > 255 || id.first() == Some(&0) {
            return Err(Error::InvalidArgument(
                "routing id must be 1-255 bytes and not start with 0".into(),
            ));
        }
        self.raw.set_bytes(ZMQ_ROUTING_ID, id)
    }

    /// Subscribes a SUB socket to a topic prefix (empty = everything).
    pub fn subscribe(&self, prefix: &[u8]) -> Result<()> {
        self.raw.set_bytes(ZMQ_SUBSCRIBE, prefix)
    }

    /// Removes a subscription.
    pub fn unsubscribe(&self, prefix: &[u8]) -> Result<()> {
        self.raw.set_bytes(ZMQ_UNSUBSCRIBE, prefix)
    }

    /// Send high-water mark (0 = unlimited).
    pub fn set_sndhwm(&self, hwm: i32) -> Result<()> {
        self.raw.set_i32(ZMQ_SNDHWM, hwm)
    }

    /// Receive high-water mark (0 = unlimited).
    pub fn set_rcvhwm(&self, hwm: i32) -> Result<()> {
        self.raw.set_i32(ZMQ_RCVHWM, hwm)
    }

    /// Blocking-receive timeout (`None` = wait forever); expiry gives `EAGAIN`.
    pub fn set_rcvtimeo(&self, timeout: Option<Duration>) -> Result<()> {
        self.raw.set_i32(ZMQ_RCVTIMEO, millis(timeout))
    }

    /// Blocking-send timeout (`None` = wait forever); expiry gives `EAGAIN`.
    pub fn set_sndtimeo(&self, timeout: Option<Duration>) -> Result<()> {
        self.raw.set_i32(ZMQ_SNDTIMEO, millis(timeout))
    }

    /// Reconnect interval after a refused or lost connection, backing off to `max`.
    pub fn set_reconnect_ivl(&self, first: Duration, max: Duration) -> Result<()> {
        self.raw.set_i32(ZMQ_RECONNECT_IVL, millis(Some(first)))?;
        self.raw.set_i32(ZMQ_RECONNECT_IVL_MAX, millis(Some(max)))
    }

    /// Linger on close (`None` = forever).
    pub fn set_linger(&self, linger: Option<Duration>) -> Result<()> {
        self.raw.set_i32(ZMQ_LINGER, millis(linger))
    }

    /// Maximum inbound frame size; larger frames make libzmq drop the peer.
    pub fn set_max_msg_size(&self, max: Option<u64>) -> Result<()> {
        let v = max.map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX));
        self.raw.set_i64(ZMQ_MAXMSGSIZE, v)
    }

    /// Queue messages only to completed connections (ZMQ_IMMEDIATE).
    pub fn set_immediate(&self, on: bool) -> Result<()> {
        self.raw.set_i32(ZMQ_IMMEDIATE, i32::from(on))
    }

    /// Enables IPv6 (dual-stack) on TCP endpoints.
    pub fn set_ipv6(&self, on: bool) -> Result<()> {
        self.raw.set_i32(ZMQ_IPV6, i32::from(on))
    }

    /// Make a ROUTER fail with `EHOSTUNREACH` for unknown peers instead of dropping.
    /// Off by default.
    pub fn set_router_mandatory(&self, on: bool) -> Result<()> {
        self.raw.set_i32(ZMQ_ROUTER_MANDATORY, i32::from(on))
    }

    /// Handshake timeout (`None` = none).
    pub fn set_handshake_ivl(&self, ivl: Option<Duration>) -> Result<()> {
        self.raw.set_i32(ZMQ_HANDSHAKE_IVL, millis(ivl).max(0))
    }

    /// Act as a CURVE server (set the secret key too).
    pub fn set_curve_server(&self, on: bool) -> Result<()> {
        self.raw.set_i32(ZMQ_CURVE_SERVER, i32::from(on))
    }

    /// This socket's long-term public key (clients).
    pub fn set_curve_publickey(&self, key: &PublicKey) -> Result<()> {
        self.raw.set_bytes(ZMQ_CURVE_PUBLICKEY, key.as_bytes())
    }

    /// This socket's long-term secret key.
    pub fn set_curve_secretkey(&self, key: &SecretKey) -> Result<()> {
        self.raw
            .set_bytes(ZMQ_CURVE_SECRETKEY, key.as_z85().as_bytes())
    }

    /// The server's public key (clients): makes this socket a CURVE client.
    pub fn set_curve_serverkey(&self, key: &PublicKey) -> Result<()> {
        self.raw.set_bytes(ZMQ_CURVE_SERVERKEY, key.as_bytes())
    }

    /// Sets up a CURVE server in one call: server flag, secret key, ZAP domain.
    pub fn configure_curve_server(&self, secret: &SecretKey, zap_domain: &str) -> Result<()> {
        self.set_curve_server(true)?;
        self.set_curve_secretkey(secret)?;
        self.set_zap_domain(zap_domain)
    }

    /// Sets up a CURVE client in one call.
    pub fn configure_curve_client(
        &self,
        server: &PublicKey,
        public: &PublicKey,
        secret: &SecretKey,
    ) -> Result<()> {
        self.set_curve_serverkey(server)?;
        self.set_curve_publickey(public)?;
        self.set_curve_secretkey(secret)
    }

    /// ZAP domain sent to the authenticator for connections to this socket.
    pub fn set_zap_domain(&self, domain: &str) -> Result<()> {
        self.raw.set_bytes(ZMQ_ZAP_DOMAIN, domain.as_bytes())
    }

    /// Fail closed: refuse handshakes when no ZAP handler is bound, instead of libzmq's
    /// default of accepting every client (ZMQ_ZAP_ENFORCE_DOMAIN).
    pub fn set_zap_enforce_domain(&self, on: bool) -> Result<()> {
        self.raw.set_i32(ZMQ_ZAP_ENFORCE_DOMAIN, i32::from(on))
    }

    pub(crate) fn raw(&self) -> &RawSocket {
        &self.raw
    }
}
