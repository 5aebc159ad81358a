//! Output and input for running code: IOPub publishing and stdin requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kernelgate_wire::content::{InputReply, InputRequest};
use kernelgate_wire::{iopub_topic, Channel, Message, Session};
use kernelgate_zmq::{poll, Latch, PollEvents, PollItem, Socket};
use serde::Serialize;
use serde_json::{json, Value};

use crate::answer::{Answering, Frames};
use kernelgate_wire::Rejections;

/// How long the busy status and execute_input of a running cell may be held back (see
/// [`Publisher::hold`]) before a progress check ([`ExecContext::interrupted`]) sends them.
const HOLD_AT_MOST: Duration = Duration::from_millis(1);

/// Publishes on IOPub. Shared by the shell and control threads (a libzmq socket may be used by
/// several threads when access is serialized, which the mutex does).
///
/// Messages can be held back and sent with the next one: a short request's busy, execute_input,
/// result, reply and idle then leave in one burst, which wakes libzmq's I/O thread once instead
/// of once per message (on a 2-core machine each wake-up is a context switch on the critical
/// path). Whatever is sent next always sends the held messages first, so the protocol order
/// holds.
pub struct Publisher {
    out: Mutex<Outbox>,
    /// Whether `out.held` is non-empty, read without the lock by progress checks.
    holding: AtomicBool,
    session: Session,
    kernel_id: String,
}

struct Outbox {
    socket: Socket,
    held: Vec<Frames>,
    held_since: Option<Instant>,
}

impl Outbox {
    fn send(&self, frames: &Frames) {
        // PUB never blocks: with no subscriber or a full queue the message is dropped, as in
        // every Jupyter kernel.
        if let Err(e) = self.socket.send_multipart(frames, true) {
            tracing::debug!("iopub send failed: {e}");
        }
    }

    fn flush(&mut self, holding: &AtomicBool) {
        for frames in std::mem::take(&mut self.held) {
            self.send(&frames);
        }
        self.held_since = None;
        holding.store(false, Ordering::Release);
    }
}

impl Publisher {
    pub(crate) fn new(socket: Socket, session: Session, kernel_id: String) -> Publisher {
        Publisher {
            out: Mutex::new(Outbox {
                socket,
                held: Vec::new(),
                held_since: None,
            }),
            holding: AtomicBool::new(false),
            session,
            kernel_id,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kernel id of the IOPub topics.
    pub(crate) fn kernel_id(&self) -> &str {
        &self.kernel_id
    }

    /// Publishes a message of `msg_type` with `content`, child of `parent`.
    pub fn publish<C: Serialize>(&self, msg_type: &str, content: &C, parent: Option<&Message>) {
        let topic = vec![iopub_topic(&self.kernel_id, msg_type)];
        if let Some(frames) = encode_child(&self.session, msg_type, content, parent, Some(topic)) {
            self.send(frames);
        }
    }

    /// Publishes `status` with `execution_state`.
    pub fn status(&self, state: &str, parent: Option<&Message>) {
        self.publish("status", &json!({ "execution_state": state }), parent);
    }

    /// Sends the held messages, then `frames`.
    pub(crate) fn send(&self, frames: Frames) {
        let mut out = self.lock();
        out.flush(&self.holding);
        out.send(&frames);
    }

    /// Holds `frames` back until something else is sent (or [`Publisher::flush`]).
    pub(crate) fn hold(&self, frames: Frames) {
        let mut out = self.lock();
        out.held.push(frames);
        out.held_since.get_or_insert_with(Instant::now);
        self.holding.store(true, Ordering::Release);
    }

    /// Sends the held messages now.
    pub(crate) fn flush(&self) {
        if self.holding.load(Ordering::Acquire) {
            self.lock().flush(&self.holding);
        }
    }

    /// Sends the held messages if they have waited longer than [`HOLD_AT_MOST`]: a long cell
    /// shows busy soon, not only when it ends. Cheap when nothing is held.
    pub(crate) fn flush_if_stale(&self) {
        if !self.holding.load(Ordering::Acquire) {
            return;
        }
        let mut out = self.lock();
        if out.held_since.is_some_and(|t| t.elapsed() >= HOLD_AT_MOST) {
            out.flush(&self.holding);
        }
    }

    /// Ends a request: sends the held messages, `iopub`, the `reply` on its socket and `last`
    /// back to back, in that order.
    pub(crate) fn finish(
        &self,
        iopub: Vec<Frames>,
        reply: Option<(&Socket, Frames)>,
        last: Option<Frames>,
    ) {
        let mut out = self.lock();
        out.flush(&self.holding);
        for frames in &iopub {
            out.send(frames);
        }
        if let Some((socket, frames)) = reply {
            if let Err(e) = socket.send_multipart(&frames, true) {
                tracing::warn!("cannot send a reply: {e}");
            }
        }
        if let Some(frames) = last {
            out.send(&frames);
        }
    }
}

/// Builds and signs a message of `msg_type` with `content`, child of `parent`. Its identities are
/// `identities` when given (the IOPub topic), else the parent's (so a reply routes back). Failures
/// are logged, not returned: a kernel cannot do more about an unencodable message.
pub(crate) fn encode_child<C: Serialize>(
    session: &Session,
    msg_type: &str,
    content: &C,
    parent: Option<&Message>,
    identities: Option<Vec<Vec<u8>>>,
) -> Option<Vec<Vec<u8>>> {
    let built = session
        .message(msg_type, content, parent)
        .and_then(|mut msg| {
            if let Some(ids) = identities {
                msg.identities = ids;
            }
            session.encode_owned(msg)
        });
    match built {
        Ok(frames) => Some(frames),
        Err(e) => {
            tracing::error!("cannot build {msg_type}: {e}");
            None
        }
    }
}

/// Why reading input failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// The request did not allow stdin (`allow_stdin: false`).
    NotAllowed,
    /// The kernel was interrupted or is shutting down while waiting.
    Interrupted,
    /// The stdin socket failed.
    Transport(String),
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputError::NotAllowed => f.write_str("the frontend does not support input requests"),
            InputError::Interrupted => f.write_str("interrupted while waiting for input"),
            InputError::Transport(e) => write!(f, "stdin channel failed: {e}"),
        }
    }
}

/// Flags that stop running code.
#[derive(Debug, Clone)]
pub struct Flags {
    /// Set by an interrupt (SIGINT or interrupt_request); cleared when a new cell starts.
    pub interrupt: Arc<AtomicBool>,
    /// Set once the kernel is shutting down.
    pub shutdown: Arc<AtomicBool>,
    /// Set while the shell runs a request.
    pub busy: Arc<AtomicBool>,
    /// Set with `shutdown`, and polled beside the sockets: an idle kernel's channel threads
    /// sleep until a message or shutdown arrives instead of waking every tick (a thousand idle
    /// kernels waking ten times a second per thread cost a noticeable share of a core).
    /// `None` only if the OS refused an eventfd; the loops then look at `shutdown` every tick.
    pub(crate) wake: Option<Arc<Latch>>,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            interrupt: Arc::default(),
            shutdown: Arc::default(),
            busy: Arc::default(),
            wake: Latch::new().ok().map(Arc::new),
        }
    }
}

impl Flags {
    /// Asks the kernel to stop: running code is interrupted and every loop ends.
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.interrupt.store(true, Ordering::SeqCst);
        if let Some(wake) = &self.wake {
            wake.set();
        }
    }

    /// Whether shutdown was requested.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}

pub(crate) struct Stdin {
    pub socket: Socket,
}

/// Stream text is gathered for at most this long (or [`STREAM_BYTES`]) before it is published:
/// a cell printing in a tight loop then sends a few messages, not one per line, which a client
/// reading IOPub at its own pace can keep up with (past libzmq's queue of 1000 messages the
/// oldest would be dropped), as ipykernel's stream flushing does.
const STREAM_WAIT: Duration = Duration::from_millis(50);
/// See [`STREAM_WAIT`].
const STREAM_BYTES: usize = 64 * 1024;

/// Stream text not yet published (see [`STREAM_WAIT`]).
#[derive(Debug, Default)]
pub(crate) struct PendingStream {
    name: String,
    text: String,
    since: Option<Instant>,
}

/// The context handed to [`crate::Kernel::execute`]: where output goes for the current request.
/// Cheap to clone and `'static`, so interpreters can capture it in callbacks.
#[derive(Clone)]
pub struct ExecContext {
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) stdin: Arc<Mutex<Stdin>>,
    pub(crate) session: Session,
    pub(crate) answering: Arc<Answering>,
    pub(crate) allow_stdin: bool,
    pub(crate) flags: Flags,
    pub(crate) rejections: Arc<Rejections>,
    pub(crate) execution_count: i64,
    /// Payloads for the execute_reply (the pager), in order.
    pub(crate) payloads: Arc<Mutex<Vec<Value>>>,
    /// Stream text gathered for the next stream message.
    pub(crate) pending_stream: Arc<Mutex<PendingStream>>,
}

impl ExecContext {
    /// Publishes a message after any gathered stream text, so that the order of outputs holds.
    fn send<C: Serialize + ?Sized>(&self, msg_type: &str, content: &C) {
        self.flush_output();
        self.send_now(msg_type, content);
    }

    fn send_now<C: Serialize + ?Sized>(&self, msg_type: &str, content: &C) {
        if let Some(frames) = self.answering.iopub(msg_type, content) {
            self.publisher.send(frames);
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, PendingStream> {
        self.pending_stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn publish_stream(&self, pending: &mut PendingStream) {
        let text = std::mem::take(&mut pending.text);
        pending.since = None;
        if !text.is_empty() {
            self.send_now("stream", &json!({ "name": pending.name, "text": text }));
        }
    }

    /// Sends text to the `stdout` or `stderr` stream. Text printed in quick succession leaves
    /// in one message (after at most 50 ms or 64 KiB, or before any other output).
    pub fn stream(&self, name: &str, text: &str) {
        let mut pending = self.pending();
        if pending.name != name {
            self.publish_stream(&mut pending);
            name.clone_into(&mut pending.name);
        }
        pending.text.push_str(text);
        let since = *pending.since.get_or_insert_with(Instant::now);
        if pending.text.len() >= STREAM_BYTES || since.elapsed() >= STREAM_WAIT {
            self.publish_stream(&mut pending);
        }
    }

    /// Publishes the stream text gathered so far. The framework calls it when a cell ends;
    /// kernels call it before output of their own that must follow the text.
    pub fn flush_output(&self) {
        let mut pending = self.pending();
        self.publish_stream(&mut pending);
    }

    /// Displays a MIME bundle.
    pub fn display(&self, data: crate::MimeBundle) {
        self.send(
            "display_data",
            &json!({ "data": data, "metadata": {}, "transient": {} }),
        );
    }

    /// Shows `data` in the frontend's pager (a `page` payload of the execute_reply), as
    /// IPython's `?` does.
    pub fn page(&self, data: crate::MimeBundle) {
        let payload = json!({ "source": "page", "data": data, "start": 0 });
        self.payloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(payload);
    }

    /// Publishes any IOPub message as a child of the current request.
    pub fn publish(&self, msg_type: &str, content: &Value) {
        self.send(msg_type, content);
    }

    /// Whether the running code should stop (interrupt or shutdown). Call it in long work:
    /// it also publishes the cell's busy status once the cell has run for a millisecond (the
    /// framework holds it back so that a short cell's messages leave together).
    pub fn interrupted(&self) -> bool {
        self.publisher.flush_if_stale();
        {
            let mut pending = self.pending();
            if pending.since.is_some_and(|t| t.elapsed() >= STREAM_WAIT) {
                self.publish_stream(&mut pending);
            }
        }
        self.flags.interrupt.load(Ordering::Relaxed) || self.flags.shutdown.load(Ordering::Relaxed)
    }

    /// The execution count of the running cell.
    pub fn execution_count(&self) -> i64 {
        self.execution_count
    }

    /// Asks the frontend for a line of input over the stdin channel and waits for the answer,
    /// until it arrives or the kernel is interrupted.
    pub fn input(&self, prompt: &str, password: bool) -> Result<String, InputError> {
        if !self.allow_stdin {
            return Err(InputError::NotAllowed);
        }
        let request = InputRequest {
            prompt: prompt.to_owned(),
            password,
            ..Default::default()
        };
        let (prompt_id, frames) = self
            .answering
            .to_requester(InputRequest::MSG_TYPE, &request)
            .ok_or_else(|| InputError::Transport("cannot build the input_request".into()))?;
        // The frontend must see busy (and execute_input), and what was printed, before the
        // prompt.
        self.flush_output();
        self.publisher.flush();
        let stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        // Drop stale replies to earlier prompts before asking.
        while let Ok(_stale) = stdin.socket.recv_multipart(true) {}
        stdin
            .socket
            .send_multipart(&frames, false)
            .map_err(|e| InputError::Transport(e.to_string()))?;
        loop {
            if self.interrupted() {
                return Err(InputError::Interrupted);
            }
            let mut items = [PollItem::new(&stdin.socket, PollEvents::READABLE)];
            match poll(&mut items, Some(Duration::from_millis(50))) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(e) => return Err(InputError::Transport(e.to_string())),
            }
            let frames = match stdin.socket.recv_multipart(true) {
                Ok(f) => f,
                Err(e) if e.is_again() => continue,
                Err(e) => {
                    tracing::warn!("stdin receive failed: {e}");
                    continue;
                }
            };
            match self.session.receive(frames) {
                // jupyter_client sends input_reply without a parent header; accept that, but not
                // a reply to some other prompt.
                // Only from the client that was asked: another client of the kernel must not
                // answer someone's password prompt.
                Ok(reply)
                    if reply.msg_type() == InputReply::MSG_TYPE
                        && self.answering.is_requester(&reply.identities)
                        && (reply.parent_header.is_none()
                            || reply.parent_msg_id() == prompt_id) =>
                {
                    let value = reply
                        .content
                        .get("value")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    return Ok(value.to_owned());
                }
                Ok(other) => tracing::debug!("ignoring {} on stdin", other.msg_type()),
                Err(e) => crate::rejections::record(&self.rejections, Channel::Stdin, &e),
            }
        }
    }
}
