//! The async client: the one implementation of the frontend side.

mod iopub;
mod liveness;
mod requests;

use std::path::Path;
use std::time::Duration;

use kernelgate_wire::content::{ExecuteReply, InputRequest};
use kernelgate_wire::{
    Channel, ConnectionInfo, ErrorKind, Limits, Message, Reader, Rejections, ReplayConfig, Session,
    SessionConfig,
};
use kernelgate_zmq::{AsyncSocket, Context, SocketType};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::connect::{client_socket, read_connection_file, CurveIdentity, CurveKeys};
use crate::error::{Error, Result};
use crate::execute::{ExecuteOptions, ExecuteOutcome, KeptOutputs, OutputHandler};
use crate::heartbeat::{died, HeartbeatMonitor};

/// The default deadline of every wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How a client is set up.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Deadline of each request (and of `execute` unless its options say otherwise).
    pub timeout: Duration,
    /// The user name in our message headers.
    pub username: String,
    /// Our session id; also the routing id of the shell and stdin sockets. `None` = a new UUID.
    pub session_id: Option<String>,
    /// Size limits on incoming messages.
    pub limits: Limits,
    /// Replay protection of incoming messages (`None` turns it off; not recommended).
    pub replay: Option<ReplayConfig>,
    /// Accept a connection file with an empty key (no signatures at all). Off by default.
    pub allow_unauthenticated: bool,
    /// The CURVE keypair to present when the kernel uses CURVE.
    pub curve: CurveIdentity,
    /// At most this many IOPub messages not claimed by a running request are kept for
    /// [`KernelClient::recv_iopub`]; older ones are dropped.
    pub iopub_backlog: usize,
    /// And at most about this many bytes of them (default 256 MiB).
    pub iopub_backlog_bytes: usize,
}

/// How long a message may wait unread at a client and still be judged by when it arrived.
pub const CLIENT_MAX_QUEUE_WAIT: Duration = Duration::from_secs(10 * 60);

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: DEFAULT_TIMEOUT,
            username: std::env::var("USER")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "username".into()),
            session_id: None,
            limits: Limits::default(),
            replay: Some(ReplayConfig {
                // A client has a reader per socket and most programs never read some of them
                // (control, often IOPub): each holds the history's sweeps back as far as this.
                // Ten minutes keeps a long-lived client's history small; a kernel, whose shell
                // lags only while a cell runs, keeps the default day.
                max_queue_wait: CLIENT_MAX_QUEUE_WAIT,
                ..ReplayConfig::default()
            }),
            allow_unauthenticated: false,
            curve: CurveIdentity::default(),
            iopub_backlog: 10_000,
            iopub_backlog_bytes: 256 << 20,
        }
    }
}

/// A far-future instant for "no deadline" (Duration::MAX would overflow).
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Receives one message on `socket` and verifies it. `Ok(None)`: a message was dropped
/// (failed verification or over the size limits), counted and logged.
async fn recv_verified(
    socket: &mut AsyncSocket,
    reader: &Reader,
    rejections: &Rejections,
    channel: Channel,
) -> Result<Option<Message>> {
    // A program may leave messages queued for a while before it asks for them: they are judged
    // fresh by when they arrived, not by when they are read.
    let frames = match socket.recv_multipart_noting(|| reader.caught_up()).await {
        Ok(f) => f,
        Err(kernelgate_zmq::Error::TooLarge { frames, bytes, .. }) => {
            if let Some(suppressed) = rejections.record(ErrorKind::TooLarge) {
                tracing::warn!(
                    channel = channel.name(),
                    frames,
                    bytes,
                    suppressed_since_last_log = suppressed,
                    "dropped oversized message"
                );
            }
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    match reader.receive(frames) {
        Ok(msg) => Ok(Some(msg.into_inner())),
        Err(e) => {
            // The error text holds kinds, lengths and field names only: never key material.
            // At most one line a second: a flooding peer cannot flood the log.
            if let Some(suppressed) = rejections.record(e.kind()) {
                tracing::warn!(
                    channel = channel.name(),
                    code = e.code(),
                    detail = e.detail(),
                    suppressed_since_last_log = suppressed,
                    "dropped a message that failed verification"
                );
            }
            Ok(None)
        }
    }
}

/// One replay-guard reader per receiving socket (see [`Reader`]).
#[derive(Debug)]
struct Readers {
    shell: Reader,
    control: Reader,
    stdin: Reader,
    iopub: Reader,
}

/// A connection to one kernel's five channels. See the crate documentation.
pub struct KernelClient {
    info: ConnectionInfo,
    config: ClientConfig,
    session: Session,
    readers: Readers,
    ctx: Context,
    curve: Option<CurveKeys>,
    shell: AsyncSocket,
    control: AsyncSocket,
    stdin: AsyncSocket,
    iopub: AsyncSocket,
    hb: Option<AsyncSocket>,
    hb_count: u64,
    /// IOPub messages no request claimed (see [`ClientConfig::iopub_backlog`]).
    backlog: kernelgate_wire::BoundedQueue<Message>,
    rejections: Rejections,
    last_input_request: Option<Message>,
    monitor: Option<HeartbeatMonitor>,
    dead: Option<watch::Receiver<bool>>,
}

impl std::fmt::Debug for KernelClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelClient")
            .field("info", &self.info)
            .field("session", &self.session.session_id())
            .field("curve", &self.curve.is_some())
            .finish_non_exhaustive()
    }
}

impl KernelClient {
    /// Connects to the kernel described by `info` (must be called inside a tokio runtime with
    /// I/O and time enabled). Connecting does not wait for the kernel: use
    /// [`KernelClient::wait_for_ready`].
    pub async fn connect(info: ConnectionInfo, config: ClientConfig) -> Result<KernelClient> {
        Self::connect_with_context(info, config, Context::new()?)
    }

    /// Reads the connection file at `path` and connects.
    pub async fn from_file(path: impl AsRef<Path>, config: ClientConfig) -> Result<KernelClient> {
        let info = read_connection_file(path.as_ref())?;
        Self::connect(info, config).await
    }

    /// Connects using an existing ZeroMQ context (must be called inside a tokio runtime).
    pub fn connect_with_context(
        info: ConnectionInfo,
        config: ClientConfig,
        ctx: Context,
    ) -> Result<KernelClient> {
        info.validate_for_connect()?;
        let signer = info.signer(config.allow_unauthenticated)?;
        if info.key.is_empty() {
            tracing::warn!("connection has an empty key: messages are neither signed nor verified");
        }
        let session_config = SessionConfig {
            session_id: config
                .session_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            username: config.username.clone(),
            limits: config.limits,
            replay: config.replay,
        };
        let session = Session::new(signer, session_config);
        let curve = CurveKeys::resolve(&info, &config.curve)?;
        let backlog =
            kernelgate_wire::BoundedQueue::new(config.iopub_backlog, config.iopub_backlog_bytes);
        let id = session.session_id().as_bytes().to_vec();
        let open = |ty: SocketType, ch: Channel, id: Option<&[u8]>| -> Result<AsyncSocket> {
            let socket = client_socket(&ctx, ty, &info.endpoint(ch), curve.as_ref(), id)?;
            Ok(AsyncSocket::new(socket)?)
        };
        // jupyter_client gives shell and stdin the same routing id: the kernel sends
        // input_request to the identity of the shell request on its stdin ROUTER.
        let shell = open(SocketType::Dealer, Channel::Shell, Some(&id))?;
        let stdin = open(SocketType::Dealer, Channel::Stdin, Some(&id))?;
        let control = open(SocketType::Dealer, Channel::Control, None)?;
        let iopub = open(SocketType::Sub, Channel::IoPub, None)?;
        Ok(KernelClient {
            info,
            config,
            readers: Readers {
                shell: session.reader(),
                control: session.reader(),
                stdin: session.reader(),
                iopub: session.reader(),
            },
            session,
            ctx,
            curve,
            shell,
            control,
            stdin,
            iopub,
            hb: None,
            hb_count: 0,
            backlog,
            rejections: Rejections::default(),
            last_input_request: None,
            monitor: None,
            dead: None,
        })
    }

    /// The connection info in use.
    pub fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Our session (to build messages for [`KernelClient::send`]).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The default deadline of waits.
    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Changes the default deadline of waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.config.timeout = timeout;
    }

    /// How many incoming messages were dropped because they failed verification.
    pub fn rejected_count(&self) -> u64 {
        self.rejections.total()
    }

    /// Dropped incoming messages by kind of failure (kinds with a zero count omitted).
    pub fn rejections(&self) -> Vec<(ErrorKind, u64)> {
        self.rejections.snapshot()
    }

    fn socket(&mut self, channel: Channel) -> Result<&mut AsyncSocket> {
        match channel {
            Channel::Shell => Ok(&mut self.shell),
            Channel::Control => Ok(&mut self.control),
            Channel::Stdin => Ok(&mut self.stdin),
            Channel::IoPub | Channel::Heartbeat => Err(Error::InvalidArgument(format!(
                "cannot send on the {} channel",
                channel.name()
            ))),
        }
    }

    /// Signs and sends `msg` on `channel` (shell, control or stdin); returns its msg_id.
    pub async fn send(&mut self, channel: Channel, msg: Message) -> Result<String> {
        self.send_within(channel, msg, self.config.timeout).await
    }

    /// [`KernelClient::send`] with a deadline (a DEALER with no live connection, e.g. after a
    /// failed CURVE handshake, does not accept messages).
    async fn send_within(
        &mut self,
        channel: Channel,
        msg: Message,
        timeout: Duration,
    ) -> Result<String> {
        let msg_type = msg.header.msg_type.clone();
        let msg_id = msg.header.msg_id.clone();
        // Consumes the message: its parts move into the frames instead of being copied.
        let frames = self.session.encode_owned(msg)?;
        let socket = self.socket(channel)?;
        tokio::time::timeout(timeout, socket.send_multipart(&frames))
            .await
            .map_err(|_| {
                Error::timeout(format!("sending {msg_type} on {}", channel.name()), timeout)
            })??;
        Ok(msg_id)
    }

    /// Builds, signs and sends a request with `content`; returns its msg_id.
    pub async fn send_request<C: Serialize>(
        &mut self,
        channel: Channel,
        msg_type: &str,
        content: &C,
    ) -> Result<String> {
        self.send_request_within(channel, msg_type, content, self.config.timeout)
            .await
    }

    async fn send_request_within<C: Serialize>(
        &mut self,
        channel: Channel,
        msg_type: &str,
        content: &C,
        timeout: Duration,
    ) -> Result<String> {
        let msg = self.session.message(msg_type, content, None)?;
        self.send_within(channel, msg, timeout).await
    }

    /// Waits up to `timeout` for the reply to `msg_id` on `channel` (shell or control). Replies
    /// to other requests are dropped.
    pub async fn wait_reply(
        &mut self,
        channel: Channel,
        msg_id: &str,
        timeout: Duration,
    ) -> Result<Message> {
        if !matches!(channel, Channel::Shell | Channel::Control) {
            return Err(Error::InvalidArgument(format!(
                "no replies on the {} channel",
                channel.name()
            )));
        }
        let deadline = deadline_after(timeout);
        let Self {
            shell,
            control,
            readers,
            rejections,
            dead,
            ..
        } = self;
        let (socket, reader) = if channel == Channel::Shell {
            (shell, &readers.shell)
        } else {
            (control, &readers.control)
        };
        loop {
            tokio::select! {
                r = recv_verified(socket, reader, rejections, channel) => {
                    match r? {
                        Some(m) if m.parent_msg_id() == msg_id => return Ok(m),
                        Some(m) => tracing::debug!(msg_type = m.msg_type(), "dropped a reply to another request"),
                        None => {}
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Error::timeout(format!("the reply on {} to {msg_id}", channel.name()), timeout));
                }
                () = died(dead.as_mut()) => return Err(Error::KernelDied),
            }
        }
    }

    /// Sends a request and returns the reply message, within the default deadline.
    pub async fn request(
        &mut self,
        channel: Channel,
        msg_type: &str,
        content: Value,
    ) -> Result<Message> {
        // The content moves into the message (Session::message would copy it through
        // serde_json::to_value).
        let msg = Message {
            identities: Vec::new(),
            header: self.session.header(msg_type),
            parent_header: None,
            metadata: serde_json::Map::new(),
            content,
            buffers: Vec::new(),
        };
        let id = self.send(channel, msg).await?;
        self.wait_reply(channel, &id, self.config.timeout).await
    }

    /// A request whose reply is decoded as `R`; `aborted` and `error` replies become errors.
    async fn typed<C: Serialize, R: DeserializeOwned>(
        &mut self,
        channel: Channel,
        msg_type: &str,
        content: &C,
    ) -> Result<R> {
        let id = self.send_request(channel, msg_type, content).await?;
        let reply = self.wait_reply(channel, &id, self.config.timeout).await?;
        check_status(&reply)?;
        Ok(reply.content_as()?)
    }

    /// Runs `code`: returns once both the `execute_reply` and the IOPub `status: idle` for this
    /// request have arrived. `handler` sees outputs and input requests as they arrive; IOPub
    /// messages of other requests are kept for [`KernelClient::recv_iopub`].
    pub async fn execute(
        &mut self,
        code: &str,
        options: &ExecuteOptions,
        handler: &mut (dyn OutputHandler + Send),
    ) -> Result<ExecuteOutcome> {
        let timeout = options.timeout.unwrap_or(self.config.timeout);
        let deadline = deadline_after(timeout);
        let msg_id = self
            .send_request_within(
                Channel::Shell,
                "execute_request",
                &options.request(code),
                timeout,
            )
            .await?;
        let mut reply: Option<Message> = None;
        let mut idle = false;
        let mut outputs = KeptOutputs::new(options.keep_output_bytes);
        while reply.is_none() || !idle {
            let Self {
                shell,
                stdin,
                iopub,
                readers,
                rejections,
                dead,
                ..
            } = self;
            let event = tokio::select! {
                r = recv_verified(shell, &readers.shell, rejections, Channel::Shell) => (Channel::Shell, r?),
                r = recv_verified(iopub, &readers.iopub, rejections, Channel::IoPub) => (Channel::IoPub, r?),
                r = recv_verified(stdin, &readers.stdin, rejections, Channel::Stdin) => (Channel::Stdin, r?),
                () = tokio::time::sleep_until(deadline) => {
                    let what = if reply.is_none() { "the execute_reply" } else { "the idle status after execute" };
                    return Err(Error::timeout(what, timeout));
                }
                () = died(dead.as_mut()) => return Err(Error::KernelDied),
            };
            let (channel, Some(msg)) = event else {
                continue;
            };
            let ours = msg.parent_msg_id() == msg_id;
            match channel {
                Channel::Shell if ours && msg.msg_type() == "execute_reply" => reply = Some(msg),
                Channel::Shell => tracing::debug!(
                    msg_type = msg.msg_type(),
                    "dropped a reply to another request"
                ),
                Channel::IoPub if ours && msg.msg_type() == "status" => {
                    idle |=
                        msg.content.get("execution_state").and_then(Value::as_str) == Some("idle");
                }
                Channel::IoPub if ours => {
                    handler.on_iopub(&msg);
                    outputs.push(msg);
                }
                Channel::IoPub => self.keep_iopub(msg),
                Channel::Stdin if ours && msg.msg_type() == InputRequest::MSG_TYPE => {
                    let req: InputRequest = msg.content_as()?;
                    // Without allow_stdin the kernel should not ask; one that does gets an
                    // empty line, and the user is never prompted behind their back.
                    let value = if options.allow_stdin {
                        handler
                            .on_input_request(&req.prompt, req.password)
                            .unwrap_or_default()
                    } else {
                        tracing::warn!("the kernel asked for input although stdin is not allowed; answered with an empty line");
                        String::new()
                    };
                    self.last_input_request = Some(msg);
                    self.send_input(&value).await?;
                }
                _ => tracing::debug!(msg_type = msg.msg_type(), "ignored an unexpected message"),
            }
        }
        let reply_message = reply.ok_or_else(|| Error::timeout("the execute_reply", timeout))?;
        check_status(&reply_message)?;
        let reply: ExecuteReply = reply_message.content_as()?;
        let (outputs, outputs_dropped) = outputs.into_parts();
        Ok(ExecuteOutcome {
            reply,
            reply_message,
            outputs,
            outputs_dropped,
        })
    }
}

/// `aborted` and (for non-execute replies) `error` statuses as errors.
fn check_status(reply: &Message) -> Result<()> {
    let field = |name: &str| {
        reply
            .content
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match reply.content.get("status").and_then(Value::as_str) {
        Some("aborted") => Err(Error::Aborted {
            msg_type: reply.msg_type().to_owned(),
        }),
        Some("error") if reply.msg_type() != "execute_reply" => Err(Error::Reply {
            msg_type: reply.msg_type().to_owned(),
            ename: field("ename"),
            evalue: field("evalue"),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: T) {}

    /// The async API can be driven from `tokio::spawn` (compile-time check only).
    #[allow(dead_code)]
    fn futures_are_send(c: &mut KernelClient) {
        is_send(c.execute("", &ExecuteOptions::default(), &mut ()));
        is_send(c.wait_for_ready(DEFAULT_TIMEOUT));
        is_send(c.heartbeat_ok(DEFAULT_TIMEOUT));
    }

    #[test]
    fn no_deadline_does_not_overflow() {
        let _ = deadline_after(Duration::MAX);
    }
}
