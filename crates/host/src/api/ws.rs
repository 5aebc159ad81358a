//! `GET /api/kernels/{id}/channels`: the WebSocket bridge.
//!
//! Each connection gets its own shell, control and stdin DEALER sockets (one routing id, so the
//! kernel's `input_request` comes back to it); IOPub comes from the kernel's one SUB socket,
//! broadcast to every connection. Client messages are checked, completed and signed by the host
//! with the kernel's key (the browser never holds it); kernel messages are verified before they
//! are forwarded. Bad input is logged and dropped; the connection keeps working.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::SinkExt;
use kernelgate_wire::websocket::V1_SUBPROTOCOL;
use kernelgate_wire::{Channel, LogGate, Session};
use kernelgate_zmq::SocketType;

use super::ApiError;
use crate::fanout::{Next, Reader};
use crate::kernel::{Broadcast, ConnectionGuard, Endpoint, ManagedKernel};
use crate::wsmsg::{self, Incoming, OutFrame, Protocol};
use crate::zmqio::KernelSocket;
use crate::{zmqio, HostShared};

/// Messages kept while the kernel restarts, per connection, and their bytes at most.
const PENDING_MAX: usize = 64;
const PENDING_BYTES: usize = 64 << 20;
/// Each WebSocket connection's read buffer. tungstenite's default, 128 KiB, is allocated per
/// connection and zero-filled before every read (even one that finds nothing): 3 % of the
/// host's CPU in the round-trip benchmark, and 128 MiB for a thousand connections.
const WS_READ_BUFFER: usize = 16 << 10;
/// Refused client messages tolerated before the connection is closed.
const MAX_ERRORS: u32 = 1000;
/// Most messages written to the client in one flush.
const BATCH_MAX: usize = 64;
/// How often an open connection forgets the expired digests of its replay history. Each admitted
/// reply sweeps too; this is for a connection gone quiet after a burst, which would otherwise
/// hold the burst's digests for as long as it stays open.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a message to the kernel may wait for room in its queue (a thousand messages).
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A message (or a socket error) from one of a connection's kernel sockets.
type Received = (Channel, kernelgate_zmq::Result<Vec<Vec<u8>>>);

/// The upgrade handler.
pub async fn channels(
    State(host): State<Arc<HostShared>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let kernel = host
        .registry
        .get(&id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such kernel"))?;
    let wants_v1 = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == V1_SUBPROTOCOL);
    let max = host.config.ws_max_message;
    let ws = ws
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(WS_READ_BUFFER);
    let (ws, protocol) = if wants_v1 {
        (ws.protocols([V1_SUBPROTOCOL]), Protocol::V1)
    } else {
        (ws, Protocol::Legacy)
    };
    let session_id = q
        .get("session_id")
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .cloned()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // Counted from the 101 response on, not from whenever the connection's task first runs: a
    // client that has its WebSocket and then asks for the kernel's model sees itself in
    // `connections`. (A failed upgrade drops the closure, and the guard with it.)
    let guard = kernel.connect_guard();
    Ok(ws.on_upgrade(move |socket| async move {
        Connection::new(host, kernel, protocol, session_id)
            .run(socket, guard)
            .await
    }))
}

struct Sockets {
    generation: u64,
    session: Session,
    shell: KernelSocket,
    control: KernelSocket,
    stdin: KernelSocket,
}

impl Sockets {
    fn open(ep: &Endpoint, routing_id: &[u8], links: bool) -> Result<Sockets, String> {
        let session = zmqio::session_for(&ep.info, "kernelgate-host").map_err(|e| e.to_string())?;
        let open = |ch| {
            let (ctx, info) = (&ep.ctx, &ep.info);
            zmqio::open_kernel(ctx, info, SocketType::Dealer, ch, Some(routing_id), links)
                .map_err(|e| e.to_string())
        };
        Ok(Sockets {
            generation: ep.generation,
            session,
            shell: open(Channel::Shell)?,
            control: open(Channel::Control)?,
            stdin: open(Channel::Stdin)?,
        })
    }

    async fn recv(&mut self) -> Received {
        tokio::select! {
            r = self.shell.recv_multipart() => (Channel::Shell, r),
            r = self.control.recv_multipart() => (Channel::Control, r),
            r = self.stdin.recv_multipart() => (Channel::Stdin, r),
        }
    }

    /// Like [`Sockets::recv`], without waiting: `None` when no socket has a message.
    fn try_recv(&mut self) -> Option<Received> {
        [
            (Channel::Shell, &mut self.shell),
            (Channel::Control, &mut self.control),
            (Channel::Stdin, &mut self.stdin),
        ]
        .into_iter()
        .find_map(|(channel, socket)| Some((channel, socket.try_recv_multipart()?)))
    }
}

async fn recv_any(s: &mut Option<Sockets>) -> Received {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

struct Connection {
    host: Arc<HostShared>,
    kernel: Arc<ManagedKernel>,
    protocol: Protocol,
    session_id: String,
    routing_id: Vec<u8>,
    sockets: Option<Sockets>,
    pending: VecDeque<Incoming>,
    errors: u32,
    /// Refused client messages are logged at most once a second.
    log_gate: LogGate,
    /// IOPub messages this client was too slow to get.
    missed: u64,
}

impl Connection {
    fn new(
        host: Arc<HostShared>,
        kernel: Arc<ManagedKernel>,
        protocol: Protocol,
        session_id: String,
    ) -> Connection {
        Connection {
            host,
            kernel,
            protocol,
            session_id,
            routing_id: uuid::Uuid::new_v4().to_string().into_bytes(),
            sockets: None,
            pending: VecDeque::new(),
            errors: 0,
            log_gate: LogGate::default(),
            missed: 0,
        }
    }

    fn reopen(&mut self, ep: Option<Arc<Endpoint>>) {
        match ep {
            Some(ep) if self.sockets.as_ref().map(|s| s.generation) != Some(ep.generation) => {
                match Sockets::open(&ep, &self.routing_id, self.host.config.zmtp_links) {
                    Ok(s) => self.sockets = Some(s),
                    Err(e) => {
                        tracing::warn!(kernel = %self.kernel.id, "opening kernel sockets: {e}");
                        self.sockets = None;
                    }
                }
            }
            Some(_) => {}
            None => self.sockets = None,
        }
    }

    async fn run(mut self, mut socket: WebSocket, _guard: ConnectionGuard) {
        let mut endpoint_rx = self.kernel.subscribe_endpoint();
        let mut iopub_rx = self.kernel.subscribe_iopub();
        let mut closing = self.host.closing.subscribe();
        let ep = endpoint_rx.borrow_and_update().clone();
        self.reopen(ep);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        sweep.reset();
        tracing::debug!(kernel = %self.kernel.id, protocol = ?self.protocol, "websocket connected");
        loop {
            tokio::select! {
                m = socket.recv() => {
                    let incoming = match m {
                        None | Some(Err(_)) => break,
                        Some(Ok(WsMessage::Text(t))) => wsmsg::decode_text(t.as_str()),
                        Some(Ok(WsMessage::Binary(b))) => wsmsg::decode_binary(&b, self.protocol),
                        Some(Ok(WsMessage::Close(_))) => break,
                        Some(Ok(_)) => continue,
                    };
                    match incoming {
                        Ok(msg) => self.forward(msg).await,
                        Err(e) => {
                            self.errors += 1;
                            if let Some(suppressed) = self.log_gate.open() {
                                tracing::warn!(kernel = %self.kernel.id, refused = self.errors, suppressed_since_last_log = suppressed, "refused a websocket message: {e}");
                            }
                            if self.errors > MAX_ERRORS {
                                tracing::warn!(kernel = %self.kernel.id, "too many bad messages; closing the websocket");
                                break;
                            }
                        }
                    }
                }
                received = recv_any(&mut self.sockets) => {
                    let Some(frame) = self.for_client(received) else { continue };
                    if self.send_batch(&mut socket, frame, &mut iopub_rx).await.is_err() {
                        break;
                    }
                }
                next = iopub_rx.next() => {
                    let frame = match next {
                        Next::Item(b) => wsmsg::encode(b.channel, &b.msg, self.protocol),
                        Next::Missed(n) => {
                            self.missed(n);
                            continue;
                        }
                        Next::Empty => continue,
                    };
                    if self.send_batch(&mut socket, frame, &mut iopub_rx).await.is_err() {
                        break;
                    }
                }
                changed = endpoint_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let ep = endpoint_rx.borrow_and_update().clone();
                    self.reopen(ep);
                    while self.sockets.is_some() {
                        let Some(m) = self.pending.pop_front() else { break };
                        self.forward(m).await;
                    }
                }
                _ = sweep.tick() => {
                    if let Some(s) = &self.sockets {
                        s.session.forget_expired();
                    }
                }
                _ = closing.changed() => break,
            }
        }
        let limit = self.host.config.ws_write_timeout;
        let _ = tokio::time::timeout(limit, socket.send(WsMessage::Close(None))).await;
        tracing::debug!(kernel = %self.kernel.id, "websocket closed");
    }

    /// Verifies a message from the kernel's shell, control or stdin socket and encodes it for
    /// the client; `None` (logged) when it is refused or the socket failed.
    fn for_client(&mut self, (channel, r): Received) -> Option<OutFrame> {
        let frames = match r {
            Ok(f) => f,
            Err(e @ kernelgate_zmq::Error::Zmtp(_)) => {
                // The link dropped that connection and makes a new one; the kernel is counted.
                let (rejections, id) = (self.kernel.rejections(), &self.kernel.id);
                zmqio::record_socket_error(rejections, id, "a kernel reply's framing", &e);
                return None;
            }
            Err(e) => {
                tracing::warn!(kernel = %self.kernel.id, "kernel socket: {e}");
                self.sockets = None;
                return None;
            }
        };
        let s = self.sockets.as_ref()?;
        match s.session.receive_raw(frames) {
            Ok(msg) => {
                self.kernel.touch();
                Some(wsmsg::encode(channel, &msg, self.protocol))
            }
            Err(e) => {
                let (rejections, id) = (self.kernel.rejections(), &self.kernel.id);
                crate::refusals::record_message(rejections, id, "a kernel reply", &e);
                None
            }
        }
    }

    /// This client fell further behind the kernel's output than the IOPub budget allows and
    /// misses `n` messages (logged at most once a second per connection).
    fn missed(&mut self, n: u64) {
        self.missed += n;
        if let Some(suppressed) = self.log_gate.open() {
            tracing::warn!(kernel = %self.kernel.id, missed = self.missed, suppressed_since_last_log = suppressed, "websocket client too slow: iopub messages dropped for it");
        }
    }

    /// The next message for the client that is already waiting (IOPub first), without blocking.
    fn next_ready(&mut self, iopub_rx: &mut Reader<Arc<Broadcast>>) -> Option<OutFrame> {
        loop {
            match iopub_rx.try_next() {
                Next::Item(b) => return Some(wsmsg::encode(b.channel, &b.msg, self.protocol)),
                Next::Missed(n) => self.missed(n),
                Next::Empty => break,
            }
        }
        let received = self.sockets.as_mut()?.try_recv()?;
        self.for_client(received)
    }

    /// Sends `first` and whatever else is ready in one write: the five messages of an execute
    /// arrive nearly together, and one flush wakes the client once instead of five times.
    /// Fails when the write fails or the client has not taken it within the host's
    /// `ws_write_timeout`: a client that stopped reading would otherwise hold this loop (and
    /// its connection's place, sockets and the kernel's "connected" mark) for good.
    async fn send_batch(
        &mut self,
        socket: &mut WebSocket,
        first: OutFrame,
        iopub_rx: &mut Reader<Arc<Broadcast>>,
    ) -> Result<(), ()> {
        let limit = self.host.config.ws_write_timeout;
        let write = async {
            socket.feed(ws_message(first)).await?;
            for _ in 0..BATCH_MAX {
                let Some(frame) = self.next_ready(iopub_rx) else {
                    break;
                };
                socket.feed(ws_message(frame)).await?;
            }
            socket.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(()),
            Err(_) => {
                tracing::warn!(kernel = %self.kernel.id, "websocket client took nothing for {} s; closing it", limit.as_secs());
                Err(())
            }
        }
    }

    async fn forward(&mut self, mut msg: Incoming) {
        let Some(s) = &mut self.sockets else {
            let held: usize = self.pending.iter().map(Incoming::size).sum();
            if self.pending.len() < PENDING_MAX && held + msg.size() <= PENDING_BYTES {
                self.pending.push_back(msg);
            } else {
                tracing::warn!(kernel = %self.kernel.id, "kernel not running; dropped a client message");
            }
            return;
        };
        wsmsg::complete_header(
            &mut msg.header,
            &self.session_id,
            chrono::Utc::now(),
            chrono::Duration::seconds(30),
        );
        let parts = msg.signed_parts();
        let [h, p, m, c] = &parts;
        let frames = match s.session.sign_frames(&[], [h, p, m, c], &msg.buffers) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(kernel = %self.kernel.id, "cannot sign a client message: {e}");
                return;
            }
        };
        let sock = match msg.channel {
            Channel::Control => &mut s.control,
            Channel::Stdin => &mut s.stdin,
            _ => &mut s.shell,
        };
        self.kernel.touch();
        // A kernel whose queue is full (behind a long cell, or hung) must not stall this
        // connection's IOPub and shutdown: past the deadline the wait ends (a libzmq socket
        // drops the message; a ZMTP link keeps it queued and writes it once the kernel reads).
        match tokio::time::timeout(SEND_TIMEOUT, sock.send_multipart(&frames)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(kernel = %self.kernel.id, "sending to the kernel: {e}"),
            Err(_) => tracing::warn!(
                kernel = %self.kernel.id,
                "kernel not taking messages; gave up waiting to send a client message"
            ),
        }
    }
}

fn ws_message(frame: OutFrame) -> WsMessage {
    match frame {
        OutFrame::Text(t) => WsMessage::Text(t.into()),
        OutFrame::Binary(b) => WsMessage::Binary(b.into()),
    }
}
