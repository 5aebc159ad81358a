//! The shell channel: runs the kernel's handlers one request at a time, with busy/idle status
//! around each, execution counting, history, and aborting queued cells after an error.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kernelgate_wire::content::{
    CompleteRequest, ExecuteRequest, HistoryRequest, InspectRequest, IsCompleteRequest,
};
use kernelgate_wire::{Channel, Message, Reader, Session};
use kernelgate_zmq::Socket;
use serde_json::{json, Value};

use crate::answer::{Answering, Frames};
use crate::control::shutdown;
use crate::handler::{Completeness, Kernel, KernelInfo, Outcome};
use crate::history::History;
use crate::io::{ExecContext, Flags, Publisher, Stdin};
use crate::server::{kernel_info_reply, receive, wait_readable, Received, IDLE_AFTER};
use crate::sweep::ReplaySweep;
use kernelgate_wire::Rejections;

/// Digests forgotten by one idle sweep that make it worth calling `when_idle` (at 24 bytes and
/// the tree's nodes each, a few hundred KiB).
const GIVE_BACK_AFTER: usize = 10_000;

pub(crate) struct ShellLoop {
    pub(crate) socket: Socket,
    pub(crate) stdin: Arc<Mutex<Stdin>>,
    pub(crate) session: Session,
    /// Reads the shell socket, which falls behind while a cell runs: freshness is judged by when
    /// the loop was last caught up, so requests queued behind a long cell are still served.
    pub(crate) reader: Reader,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) flags: Flags,
    pub(crate) rejections: Arc<Rejections>,
    pub(crate) info: KernelInfo,
    pub(crate) execution_count: i64,
    pub(crate) history: History,
    /// Requests taken off the queue by a failed cell, to be aborted or served next.
    pub(crate) queued: Vec<Message>,
    /// See [`crate::server::KernelOptions::when_idle`].
    pub(crate) when_idle: Option<fn()>,
}

impl ShellLoop {
    pub(crate) fn run<K: Kernel>(&mut self, kernel: &mut K) {
        // Try a receive before waiting: a request queued behind the one just served is taken
        // without another zmq_poll.
        let mut try_first = true;
        // Whether requests were served since `when_idle` last ran, and when the last one was.
        let mut served = false;
        let mut last_served = Instant::now();
        let mut sweep = ReplaySweep::default();
        while !self.flags.shutting_down() {
            if !try_first {
                let idle_hook = self.when_idle.filter(|_| served);
                let until_idle =
                    idle_hook.map(|_| IDLE_AFTER.saturating_sub(last_served.elapsed()));
                let timeout = until_idle
                    .into_iter()
                    .chain(sweep.timeout(&self.session))
                    .min();
                // The queue was empty when the wait began: whatever is read next arrived since.
                self.reader.waiting();
                let waited = wait_readable(&self.socket, &self.flags, timeout);
                self.reader.caught_up();
                match waited {
                    None => break,
                    Some(false) => {
                        let forgotten = sweep.after_wait(&self.session);
                        // A tick (without the wake-up latch) may end the wait early.
                        let idle = idle_hook.filter(|_| last_served.elapsed() >= IDLE_AFTER);
                        // A burst's digests are worth giving back; a few are not worth the
                        // page faults the next request pays after the hook.
                        let burst_gone = self.when_idle.filter(|_| forgotten >= GIVE_BACK_AFTER);
                        if let Some(hook) = idle.or(burst_gone) {
                            hook();
                            served = false;
                        }
                        continue;
                    }
                    Some(true) => {}
                }
            }
            match receive(
                &self.socket,
                |frames| self.reader.receive(frames),
                Channel::Shell,
                &self.rejections,
            ) {
                Received::Message(msg) => {
                    self.serve(kernel, msg.into_inner(), false);
                    try_first = true;
                    served = true;
                    last_served = Instant::now();
                }
                // More of a backlog may follow a refused message: read on before waiting.
                Received::Refused => try_first = true,
                Received::Empty => try_first = false,
            }
        }
    }

    /// Serves one request between busy and idle (an execute_request queued behind a failed cell
    /// is answered `aborted` when `abort` is set). Busy is held back and leaves with the first
    /// output or with the reply; the reply and idle leave back to back.
    fn serve<K: Kernel>(&mut self, kernel: &mut K, msg: Message, abort: bool) {
        let answering = match Answering::new(&self.session, self.publisher.kernel_id(), &msg) {
            Ok(a) => Arc::new(a),
            Err(e) => {
                tracing::error!("cannot answer {}: {e}", msg.msg_type());
                return;
            }
        };
        self.flags.busy.store(true, Ordering::SeqCst);
        if let Some(busy) = answering.status("busy") {
            self.publisher.hold(busy);
        }
        let mut answer = Answer::default();
        if abort && msg.msg_type() == "execute_request" {
            let reply = json!({ "status": "aborted", "execution_count": self.execution_count });
            answer.reply = answering.reply("execute_reply", &reply);
        } else {
            self.dispatch(kernel, &msg, &answering, &mut answer);
        }
        let idle = answering.status("idle");
        self.publisher
            .finish(answer.iopub, answer.reply.map(|r| (&self.socket, r)), idle);
        self.flags.busy.store(false, Ordering::SeqCst);
        if answer.errored {
            self.abort_queued(kernel);
        }
    }

    /// Handles one request, leaving what it sends in `answer`.
    fn dispatch<K: Kernel>(
        &mut self,
        kernel: &mut K,
        msg: &Message,
        answering: &Arc<Answering>,
        answer: &mut Answer,
    ) {
        match msg.msg_type() {
            "kernel_info_request" => {
                answer.reply = answering.reply("kernel_info_reply", &kernel_info_reply(&self.info));
            }
            "execute_request" => self.execute(kernel, msg, answering, answer),
            "complete_request" => match msg.content_as::<CompleteRequest>() {
                Ok(req) => {
                    let c = kernel.complete(&req.code, req.cursor_pos);
                    let reply = json!({
                        "status": "ok", "matches": c.matches, "cursor_start": c.cursor_start,
                        "cursor_end": c.cursor_end, "metadata": {},
                    });
                    answer.reply = answering.reply("complete_reply", &reply);
                }
                Err(e) => answer.reply = self.reply_error("complete_reply", &e, answering),
            },
            "inspect_request" => match msg.content_as::<InspectRequest>() {
                Ok(req) => {
                    let found = kernel.inspect(&req.code, req.cursor_pos, req.detail_level);
                    let reply = json!({
                        "status": "ok", "found": found.is_some(),
                        "data": found.unwrap_or_default(), "metadata": {},
                    });
                    answer.reply = answering.reply("inspect_reply", &reply);
                }
                Err(e) => answer.reply = self.reply_error("inspect_reply", &e, answering),
            },
            "is_complete_request" => match msg.content_as::<IsCompleteRequest>() {
                Ok(req) => {
                    let reply = match kernel.is_complete(&req.code) {
                        Completeness::Complete => json!({ "status": "complete" }),
                        Completeness::Incomplete(indent) => {
                            json!({ "status": "incomplete", "indent": indent })
                        }
                        Completeness::Invalid => json!({ "status": "invalid" }),
                        Completeness::Unknown => json!({ "status": "unknown" }),
                    };
                    answer.reply = answering.reply("is_complete_reply", &reply);
                }
                Err(e) => answer.reply = self.reply_error("is_complete_reply", &e, answering),
            },
            "history_request" => match msg.content_as::<HistoryRequest>() {
                Ok(req) => {
                    let reply = match self.history.query(&req) {
                        Ok(history) => json!({ "status": "ok", "history": history }),
                        Err(e) => json!({
                            "status": "error", "ename": "HistoryError",
                            "evalue": e.to_string(), "traceback": [],
                        }),
                    };
                    answer.reply = answering.reply("history_reply", &reply);
                }
                Err(e) => answer.reply = self.reply_error("history_reply", &e, answering),
            },
            "comm_info_request" => {
                let reply = json!({ "status": "ok", "comms": {} });
                answer.reply = answering.reply("comm_info_reply", &reply);
            }
            "comm_open" => {
                // No comm targets: tell the frontend the comm is closed, as the spec asks.
                let comm_id = msg.content.get("comm_id").cloned().unwrap_or(Value::Null);
                let close = json!({ "comm_id": comm_id, "data": {} });
                answer.iopub.extend(answering.iopub("comm_close", &close));
            }
            "comm_msg" | "comm_close" => {}
            // Old clients send it on shell.
            "shutdown_request" => {
                // Busy first, then the reply that shutdown() sends itself.
                self.publisher.flush();
                shutdown(
                    &self.socket,
                    &self.session,
                    &self.publisher,
                    &self.flags,
                    msg,
                );
            }
            other => tracing::warn!("unknown shell message type {other:?}; ignored"),
        }
    }

    /// The error reply to a request whose content is unusable (counted as a refusal).
    fn reply_error(
        &self,
        msg_type: &str,
        e: &kernelgate_wire::Error,
        answering: &Answering,
    ) -> Option<Frames> {
        crate::rejections::record(&self.rejections, Channel::Shell, e);
        let reply = json!({ "status": "error", "ename": "BadRequest", "evalue": e.to_string(), "traceback": [] });
        answering.reply(msg_type, &reply)
    }

    fn execute<K: Kernel>(
        &mut self,
        kernel: &mut K,
        msg: &Message,
        answering: &Arc<Answering>,
        answer: &mut Answer,
    ) {
        let req = match msg.content_as::<ExecuteRequest>() {
            Ok(r) => r,
            Err(e) => {
                answer.reply = self.reply_error("execute_reply", &e, answering);
                return;
            }
        };
        let store = req.store_history && !req.silent;
        if store {
            self.execution_count += 1;
        }
        let count = self.execution_count;
        if !req.silent {
            let input = json!({ "code": req.code, "execution_count": count });
            if let Some(frames) = answering.iopub("execute_input", &input) {
                self.publisher.hold(frames);
            }
        }
        self.flags.interrupt.store(false, Ordering::SeqCst);
        let ctx = ExecContext {
            publisher: self.publisher.clone(),
            stdin: self.stdin.clone(),
            session: self.session.clone(),
            answering: answering.clone(),
            allow_stdin: req.allow_stdin,
            flags: self.flags.clone(),
            rejections: self.rejections.clone(),
            execution_count: count,
            payloads: Arc::default(),
            pending_stream: Arc::default(),
        };
        let outcome = kernel.execute(&req.code, &ctx);
        ctx.flush_output();
        self.flags.interrupt.store(false, Ordering::SeqCst);
        let payload = std::mem::take(&mut *ctx.payloads.lock().unwrap_or_else(|p| p.into_inner()));
        match outcome {
            Outcome::Ok(data) => {
                let plain = data
                    .as_ref()
                    .and_then(|d| d.get("text/plain"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if let (Some(data), false) = (data, req.silent) {
                    let result = json!({ "execution_count": count, "data": data, "metadata": {} });
                    answer
                        .iopub
                        .extend(answering.iopub("execute_result", &result));
                }
                if store {
                    self.history.record(count, &req.code, plain);
                }
                let reply = json!({
                    "status": "ok", "execution_count": count, "user_expressions": {}, "payload": payload,
                });
                answer.reply = answering.reply("execute_reply", &reply);
            }
            Outcome::Error {
                ename,
                evalue,
                traceback,
            } => {
                if store {
                    self.history.record(count, &req.code, None);
                }
                let error = json!({ "ename": ename, "evalue": evalue, "traceback": traceback });
                answer.iopub.extend(answering.iopub("error", &error));
                if req.stop_on_error {
                    // Take what was queued while this cell ran BEFORE replying: those requests
                    // were sent without knowing of the error and are aborted; anything sent
                    // after the client saw the error reply runs normally.
                    self.queued = self.drain_queue();
                }
                let reply = json!({
                    "status": "error", "execution_count": count, "ename": ename, "evalue": evalue,
                    "traceback": traceback, "user_expressions": {}, "payload": payload,
                });
                answer.reply = answering.reply("execute_reply", &reply);
                answer.errored = req.stop_on_error;
            }
        }
    }

    fn drain_queue(&self) -> Vec<Message> {
        let mut queued = Vec::new();
        while let Ok(frames) = self.socket.recv_multipart(true) {
            match self.reader.receive(frames) {
                Ok(msg) => queued.push(msg.into_inner()),
                Err(e) => crate::rejections::record(&self.rejections, Channel::Shell, &e),
            }
        }
        queued
    }

    /// After an error with stop_on_error, the execute requests queued during that cell are
    /// answered `aborted` (as ipykernel does); other queued requests are served normally.
    fn abort_queued<K: Kernel>(&mut self, kernel: &mut K) {
        for msg in std::mem::take(&mut self.queued) {
            self.serve(kernel, msg, true);
        }
    }
}

/// What serving a request sends besides busy and idle.
#[derive(Default)]
struct Answer {
    /// IOPub messages after the held ones (execute_result, error, comm_close).
    iopub: Vec<Frames>,
    /// The reply on shell.
    reply: Option<Frames>,
    /// An execute_request failed with stop_on_error: the queued requests are aborted next.
    errored: bool,
}
