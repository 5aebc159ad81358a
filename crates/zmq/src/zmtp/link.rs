//! One ZMTP connection driven by tokio: a DEALER or SUB that connects to one endpoint,
//! reconnects on its own like a libzmq socket, and is cancel-safe for `select!` loops.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::codec::{self, Command, Decoded, Decoder, ZmtpError, GREETING_LEN, SIGNATURE_LEN};
use crate::error::{Error, Result};
use crate::socket::RecvLimits;

/// The socket a [`Link`] plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A DEALER with this routing id (sent as the READY `Identity`).
    Dealer {
        /// The routing id the peer's ROUTER sees.
        routing_id: Vec<u8>,
    },
    /// A SUB subscribed to every topic.
    Sub,
}

impl Role {
    fn socket_type(&self) -> &'static str {
        match self {
            Role::Dealer { .. } => "DEALER",
            Role::Sub => "SUB",
        }
    }
}

/// How a [`Link`] behaves.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Messages over these are refused (and the connection dropped), checked on frame headers.
    pub limits: RecvLimits,
    /// Largest frame accepted.
    pub max_frame: u64,
    /// First wait before reconnecting, doubled up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest wait before reconnecting.
    pub reconnect_max: Duration,
    /// A connection must finish its handshake within this.
    pub handshake_timeout: Duration,
    /// Bytes waiting to be written past which a send is refused (libzmq's high-water mark).
    pub send_queue_max: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            limits: RecvLimits::default(),
            max_frame: 64 << 20,
            reconnect_min: Duration::from_millis(2),
            reconnect_max: Duration::from_millis(50),
            handshake_timeout: Duration::from_secs(5),
            send_queue_max: 128 << 20,
        }
    }
}

/// Where a [`Link`] connects.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Tcp(String),
    Ipc(PathBuf),
}

impl Target {
    fn parse(endpoint: &str) -> Result<Target> {
        if let Some(addr) = endpoint.strip_prefix("tcp://") {
            Ok(Target::Tcp(addr.to_owned()))
        } else if let Some(path) = endpoint.strip_prefix("ipc://") {
            Ok(Target::Ipc(PathBuf::from(path)))
        } else {
            Err(Error::InvalidArgument(format!(
                "endpoint {endpoint:?}: only tcp:// and ipc:// are supported"
            )))
        }
    }
}

/// A connected stream of either transport.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    async fn connect(target: &Target) -> std::io::Result<Stream> {
        match target {
            Target::Tcp(addr) => {
                let s = TcpStream::connect(addr.as_str()).await?;
                // As libzmq does: a message is written whole, Nagle would only delay it.
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
            Target::Ipc(path) => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            Stream::Unix(s) => s.read_buf(buf).await,
        }
    }

    fn try_read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_read_buf(buf),
            Stream::Unix(s) => s.try_read_buf(buf),
        }
    }

    fn try_write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
        }
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.read_exact(buf).await.map(drop),
            Stream::Unix(s) => s.read_exact(buf).await.map(drop),
        }
    }

    async fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf).await,
            Stream::Unix(s) => s.write(buf).await,
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf).await,
            Stream::Unix(s) => s.write_all(buf).await,
        }
    }
}

// Compile-time check that both transports are what the helpers above assume.
const _: fn() = || {
    fn io<T: AsyncRead + AsyncWrite + Unpin + Send>() {}
    io::<TcpStream>();
    io::<UnixStream>();
};

type Connecting = Pin<Box<dyn Future<Output = Result<Stream>> + Send>>;

enum State {
    /// Not connected; the next attempt waits this long first.
    Down(Duration),
    /// Connecting and handshaking (kept across cancelled calls, so it always finishes).
    Connecting(Connecting),
    Up(Stream),
}

/// Unsent bytes past which a PING gets no PONG (a PONG is at most 23 bytes).
const PONG_ROOM: usize = 64;

/// Read buffer kept between messages; a larger one (after a big message) is given back.
const READ_CHUNK: usize = 16 << 10;

/// A ZMTP 3.0 client connection with the NULL mechanism, for the sockets a Jupyter client
/// holds (DEALER to a kernel's ROUTER, SUB to its PUB), without libzmq's I/O thread: the bytes
/// are read and written by the task that awaits the message. Like a libzmq socket it connects
/// lazily and reconnects after a refused connection, a closed one or a peer's protocol error
/// (which is returned once, so that the caller can count it). Messages in flight when a
/// connection drops are lost, as with libzmq. Receives are cancel-safe; a cancelled send has
/// either queued its whole message or nothing, and what it queued goes out with the next send
/// or receive.
pub struct Link {
    target: Target,
    role: Role,
    config: LinkConfig,
    state: State,
    /// The wait before the next reconnect, doubled on every failure.
    backoff: Duration,
    decoder: Decoder,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    wpos: usize,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("target", &self.target)
            .field("role", &self.role.socket_type())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link to `endpoint` (`tcp://host:port` or `ipc://path`); connects on first use.
    pub fn new(endpoint: &str, role: Role, config: LinkConfig) -> Result<Link> {
        let target = Target::parse(endpoint)?;
        let decoder = Decoder::new(config.limits, config.max_frame);
        Ok(Link {
            target,
            role,
            backoff: config.reconnect_min,
            state: State::Down(Duration::ZERO),
            config,
            decoder,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            wpos: 0,
        })
    }

    /// Bytes queued and not yet written to the connection.
    pub fn queued_bytes(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Whether a connection is up (handshake done).
    pub fn is_connected(&self) -> bool {
        matches!(self.state, State::Up(_))
    }

    /// Receives the next multipart message. Errors are the peer's protocol errors (the
    /// connection is dropped and will be made again) and a SUB's unsupported sends.
    pub async fn recv_multipart(&mut self) -> Result<Vec<Vec<u8>>> {
        loop {
            self.up().await;
            if let Some(frames) = self.decode_next()? {
                return Ok(frames);
            }
            self.try_flush();
            self.make_room();
            let State::Up(stream) = &mut self.state else {
                continue;
            };
            match stream.read_buf(&mut self.rbuf).await {
                Ok(0) | Err(_) => self.disconnect(),
                Ok(_) => {}
            }
        }
    }

    /// Like [`Link::recv_multipart`] without waiting: `None` when no whole message has arrived
    /// (or no connection is up).
    pub fn try_recv_multipart(&mut self) -> Option<Result<Vec<Vec<u8>>>> {
        let mut read = false;
        loop {
            if !self.is_connected() {
                return None;
            }
            match self.decode_next() {
                Err(e) => return Some(Err(e)),
                Ok(Some(frames)) => return Some(Ok(frames)),
                Ok(None) if read => return None,
                Ok(None) => {}
            }
            read = true;
            self.try_flush();
            self.make_room();
            let State::Up(stream) = &mut self.state else {
                return None;
            };
            match stream.try_read_buf(&mut self.rbuf) {
                Ok(0) => self.disconnect(),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(_) => self.disconnect(),
            }
        }
    }

    /// The next whole message among the bytes read, after the commands before it (a PING's
    /// PONG goes out with the next write): `Ok(None)` when more bytes are needed.
    fn decode_next(&mut self) -> Result<Option<Vec<Vec<u8>>>> {
        loop {
            let mut pos = self.rpos;
            let decoded = self.decoder.decode(&self.rbuf, &mut pos);
            self.rpos = pos;
            match decoded {
                Ok(Some(Decoded::Message(frames))) => {
                    self.compact();
                    self.backoff = self.config.reconnect_min;
                    return Ok(Some(frames));
                }
                Ok(Some(Decoded::Command(body))) => {
                    if let Err(e) = self.on_command(&body) {
                        return Err(self.drop_connection(e));
                    }
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.drop_connection(e)),
            }
        }
    }

    /// Sends a multipart message (DEALER only), waiting until it is written to the connection.
    pub async fn send_multipart(&mut self, frames: &[impl AsRef<[u8]>]) -> Result<()> {
        if self.role == Role::Sub {
            return Err(Error::InvalidArgument("a SUB link does not send".into()));
        }
        self.up().await;
        if self.queued_bytes() > self.config.send_queue_max {
            return Err(Error::zmq("zmtp send", crate::EAGAIN));
        }
        codec::encode_message(&mut self.wbuf, frames);
        self.flush().await
    }

    /// Writes what is queued. Bytes stay queued if this is cancelled.
    async fn flush(&mut self) -> Result<()> {
        while self.wpos < self.wbuf.len() {
            let State::Up(stream) = &mut self.state else {
                return Err(Error::zmq("zmtp send", libc::ENOTCONN));
            };
            let unsent = self.wbuf.get(self.wpos..).unwrap_or_default();
            match stream.write(unsent).await {
                Ok(0) | Err(_) => {
                    self.disconnect();
                    return Err(Error::zmq("zmtp send", libc::ECONNRESET));
                }
                Ok(n) => self.wpos += n,
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        if self.wbuf.capacity() > READ_CHUNK * 4 {
            self.wbuf.shrink_to(READ_CHUNK);
        }
        Ok(())
    }

    /// Writes what is queued as far as the stream takes it now, without waiting: a PONG, or a
    /// message whose send was cancelled (it timed out) after it was queued. Receives call it,
    /// so such bytes go out once the peer reads again even if nothing more is sent.
    fn try_flush(&mut self) {
        if self.wpos >= self.wbuf.len() {
            return;
        }
        let State::Up(stream) = &mut self.state else {
            return;
        };
        match stream.try_write(self.wbuf.get(self.wpos..).unwrap_or_default()) {
            Ok(0) => self.disconnect(),
            Ok(n) => {
                self.wpos += n;
                if self.wpos >= self.wbuf.len() {
                    self.wbuf.clear();
                    self.wpos = 0;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => self.disconnect(),
        }
    }

    /// Handles a command from the peer; a PING queues its PONG.
    fn on_command(&mut self, body: &[u8]) -> std::result::Result<(), ZmtpError> {
        match codec::parse_command(body)? {
            Command::Ping { context } => {
                // At most one PONG waits to be written: a peer that floods PINGs and reads
                // nothing must not grow the queue (libzmq keeps one pending PONG too).
                if self.queued_bytes() <= PONG_ROOM {
                    codec::encode_command(&mut self.wbuf, "PONG", context);
                }
                Ok(())
            }
            Command::Error(reason) => Err(ZmtpError::Refused(reason)),
            Command::Ready { .. } => Err(ZmtpError::Handshake("a second READY")),
            Command::Other => Ok(()),
        }
    }

    /// Connects (after the backoff) when not connected.
    async fn up(&mut self) {
        loop {
            match &mut self.state {
                State::Up(_) => break,
                State::Down(wait) => {
                    let wait = *wait;
                    let fut = connect(
                        self.target.clone(),
                        self.role.clone(),
                        self.config.handshake_timeout,
                        wait,
                    );
                    self.state = State::Connecting(Box::pin(fut));
                }
                State::Connecting(fut) => match fut.await {
                    // The backoff is reset by the first message received, not by the handshake:
                    // a peer that handshakes and hangs up at once is retried ever more slowly.
                    Ok(stream) => self.state = State::Up(stream),
                    Err(e) => {
                        tracing::trace!(target = ?self.target, "zmtp connect: {e}");
                        self.state = State::Down(self.backoff);
                        self.backoff = (self.backoff * 2).min(self.config.reconnect_max);
                    }
                },
            }
        }
    }

    /// Drops the connection after the peer broke the protocol; returns the error to report.
    /// The next attempt waits the longest backoff: a peer that handshakes and then breaks the
    /// protocol again is met at most that often.
    fn drop_connection(&mut self, e: ZmtpError) -> Error {
        self.disconnect();
        self.state = State::Down(self.config.reconnect_max);
        Error::Zmtp(e)
    }

    fn disconnect(&mut self) {
        self.state = State::Down(self.backoff);
        self.backoff = (self.backoff * 2).min(self.config.reconnect_max);
        self.decoder.reset();
        self.rbuf = Vec::new();
        self.rpos = 0;
        // A message half-written to the old connection cannot be finished on a new one.
        self.wbuf = Vec::new();
        self.wpos = 0;
    }

    /// Reserves room for the rest of the frame being received and at least a chunk.
    fn make_room(&mut self) {
        self.compact();
        let wanted = self
            .decoder
            .wanted(self.rbuf.get(self.rpos..).unwrap_or_default());
        let have = self.rbuf.len() - self.rpos;
        self.rbuf
            .reserve(wanted.saturating_sub(have).max(READ_CHUNK));
    }

    /// Moves unread bytes to the front, and gives back a big buffer once it is empty.
    fn compact(&mut self) {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
            if self.rbuf.capacity() > READ_CHUNK * 4 {
                self.rbuf = Vec::with_capacity(READ_CHUNK);
            }
        } else if self.rpos > 0 && self.rpos >= self.rbuf.len() / 2 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
    }
}

/// Connects after `wait`, then greets and handshakes, within `timeout`.
async fn connect(target: Target, role: Role, timeout: Duration, wait: Duration) -> Result<Stream> {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let attempt = async {
        let mut stream = Stream::connect(&target)
            .await
            .map_err(|e| Error::io("zmtp connect", "", e))?;
        handshake(&mut stream, &role).await?;
        Ok(stream)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(Error::Zmtp(ZmtpError::Handshake("timed out"))))
}

async fn handshake(stream: &mut Stream, role: &Role) -> Result<()> {
    let io = |e| Error::io("zmtp handshake", "", e);
    let mut hello = Vec::with_capacity(GREETING_LEN + 64);
    hello.extend_from_slice(&codec::greeting());
    let identity = match role {
        Role::Dealer { routing_id } => Some(routing_id.as_slice()),
        Role::Sub => None,
    };
    let properties = codec::ready_properties(role.socket_type(), identity);
    codec::encode_command(&mut hello, "READY", &properties);
    stream.write_all(&hello).await.map_err(io)?;

    let mut greeting = [0u8; GREETING_LEN];
    stream
        .read_exact(&mut greeting[..SIGNATURE_LEN + 1])
        .await
        .map_err(io)?;
    codec::check_signature(&greeting)?;
    stream
        .read_exact(&mut greeting[SIGNATURE_LEN + 1..])
        .await
        .map_err(io)?;
    codec::check_greeting(&greeting)?;

    let mut head = [0u8; 9];
    stream.read_exact(&mut head[..2]).await.map_err(io)?;
    if head[0] & 0x02 != 0 {
        stream.read_exact(&mut head[2..]).await.map_err(io)?;
    }
    let (header, _) =
        codec::parse_frame_header(&head)?.ok_or(ZmtpError::Handshake("no frame header"))?;
    if !header.command {
        return Err(Error::Zmtp(ZmtpError::Handshake("a message before READY")));
    }
    if header.size > codec::MAX_COMMAND {
        return Err(Error::Zmtp(ZmtpError::FrameTooLarge {
            size: header.size,
            max: codec::MAX_COMMAND,
        }));
    }
    let mut body = vec![0u8; usize::try_from(header.size).unwrap_or(0)];
    stream.read_exact(&mut body).await.map_err(io)?;
    match codec::parse_command(&body)? {
        Command::Ready { socket_type } if codec::compatible(role.socket_type(), &socket_type) => {
            if *role == Role::Sub {
                // ZMTP 3.0's subscription: a message of 0x01 and the topic (empty: all). Only
                // now: libzmq takes whatever arrives before it has sent its own READY for a
                // handshake command, and drops a connection whose SUB sent it too early.
                let mut subscribe = Vec::with_capacity(3);
                codec::encode_message(&mut subscribe, &[[1u8]]);
                stream.write_all(&subscribe).await.map_err(io)?;
            }
            Ok(())
        }
        Command::Ready { socket_type } => Err(Error::Zmtp(ZmtpError::SocketType(socket_type))),
        Command::Error(reason) => Err(Error::Zmtp(ZmtpError::Refused(reason))),
        _ => Err(Error::Zmtp(ZmtpError::Handshake("expected READY"))),
    }
}
