//! The shell channel: runs the kernel's handlers one request at a time, with busy/idle status
//! around each, execution counting, history, and aborting queued cells after an error.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use kernelgate_wire::content::{
    CompleteRequest, ExecuteRequest, HistoryRequest, InspectRequest, IsCompleteRequest,
};
use kernelgate_wire::{Channel, Message, Session};
use kernelgate_zmq::Socket;
use serde_json::{json, Value};

use crate::control::shutdown;
use crate::handler::{Completeness, Kernel, KernelInfo, Outcome};
use crate::history::History;
use crate::io::{ExecContext, Flags, Publisher, Stdin};
use crate::server::{kernel_info_reply, receive, send_reply, wait_readable};
use kernelgate_wire::Rejections;

pub(crate) struct ShellLoop {
    pub(crate) socket: Socket,
    pub(crate) stdin: Arc<Mutex<Stdin>>,
    pub(crate) session: Session,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) flags: Flags,
    pub(crate) rejections: Arc<Rejections>,
    pub(crate) info: KernelInfo,
    pub(crate) execution_count: i64,
    pub(crate) history: History,
    /// Requests taken off the queue by a failed cell, to be aborted or served next.
    pub(crate) queued: Vec<Message>,
}

impl ShellLoop {
    pub(crate) fn run<K: Kernel>(&mut self, kernel: &mut K) {
        while let Some(ready) = wait_readable(&self.socket, &self.flags) {
            if !ready {
                continue;
            }
            let Some(msg) = receive(
                &self.socket,
                &self.session,
                Channel::Shell,
                &self.rejections,
            ) else {
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
                        Completeness::Incomplete(indent) => {
                            json!({ "status": "incomplete", "indent": indent })
                        }
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
                self.reply(
                    "comm_info_reply",
                    &json!({ "status": "ok", "comms": {} }),
                    msg,
                );
            }
            "comm_open" => {
                // No comm targets: tell the frontend the comm is closed, as the spec asks.
                let comm_id = msg.content.get("comm_id").cloned().unwrap_or(Value::Null);
                self.publisher.publish(
                    "comm_close",
                    &json!({ "comm_id": comm_id, "data": {} }),
                    Some(msg),
                );
            }
            "comm_msg" | "comm_close" => {}
            // Old clients send it on shell.
            "shutdown_request" => shutdown(
                &self.socket,
                &self.session,
                &self.publisher,
                &self.flags,
                msg,
            ),
            other => tracing::warn!("unknown shell message type {other:?}; ignored"),
        }
        false
    }

    fn reply<C: serde::Serialize>(&self, msg_type: &str, content: &C, parent: &Message) {
        send_reply(&self.socket, &self.session, msg_type, content, parent);
    }

    fn reply_error(&self, msg_type: &str, e: &kernelgate_wire::Error, parent: &Message) {
        crate::rejections::record(&self.rejections, Channel::Shell, e);
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
            self.publisher.publish(
                "execute_input",
                &json!({ "code": req.code, "execution_count": count }),
                Some(msg),
            );
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
                let plain = data
                    .as_ref()
                    .and_then(|d| d.get("text/plain"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
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
            Outcome::Error {
                ename,
                evalue,
                traceback,
            } => {
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
                Err(e) => crate::rejections::record(&self.rejections, Channel::Shell, &e),
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
