//! The control channel (served while the shell is busy) and the heartbeat echo.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use kernelgate_wire::content::ShutdownRequest;
use kernelgate_wire::{Channel, Message, Session};
use kernelgate_zmq::Socket;
use serde_json::json;

use crate::handler::KernelInfo;
use crate::io::{Flags, Publisher};
use crate::server::{kernel_info_reply, receive, send_reply, wait_readable, Received};
use crate::sweep::ReplaySweep;
use kernelgate_wire::Rejections;

pub(crate) struct ControlLoop {
    pub(crate) socket: Socket,
    pub(crate) session: Session,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) flags: Flags,
    pub(crate) rejections: Arc<Rejections>,
    pub(crate) info: KernelInfo,
}

impl ControlLoop {
    pub(crate) fn run(self) {
        let mut sweep = ReplaySweep::default();
        loop {
            let timeout = sweep.timeout(&self.session);
            let Some(ready) = wait_readable(&self.socket, &self.flags, timeout) else {
                break;
            };
            if !ready {
                sweep.after_wait(&self.session);
                continue;
            }
            let Received::Message(msg) = receive(
                &self.socket,
                |frames| self.session.receive(frames),
                Channel::Control,
                &self.rejections,
            ) else {
                continue;
            };
            self.handle(&msg);
        }
    }

    fn handle(&self, msg: &Message) {
        match msg.msg_type() {
            "shutdown_request" => shutdown(
                &self.socket,
                &self.session,
                &self.publisher,
                &self.flags,
                msg,
            ),
            "interrupt_request" => {
                self.flags.interrupt.store(true, Ordering::SeqCst);
                send_reply(
                    &self.socket,
                    &self.session,
                    "interrupt_reply",
                    &json!({ "status": "ok" }),
                    msg,
                );
            }
            "kernel_info_request" => {
                send_reply(
                    &self.socket,
                    &self.session,
                    "kernel_info_reply",
                    &kernel_info_reply(&self.info),
                    msg,
                );
            }
            "kernelgate_stats_request" => {
                let rejected: serde_json::Map<String, serde_json::Value> = self
                    .rejections
                    .snapshot()
                    .into_iter()
                    .map(|(k, n)| (k.code().to_owned(), n.into()))
                    .collect();
                let reply = json!({ "status": "ok", "rejected": rejected });
                send_reply(
                    &self.socket,
                    &self.session,
                    "kernelgate_stats_reply",
                    &reply,
                    msg,
                );
            }
            other => tracing::debug!("ignoring {other} on control"),
        }
    }
}

/// Answers a shutdown_request, broadcasts the reply on IOPub (as ipykernel does, so every client
/// learns of the shutdown) and stops the kernel.
pub(crate) fn shutdown(
    socket: &Socket,
    session: &Session,
    publisher: &Publisher,
    flags: &Flags,
    msg: &Message,
) {
    let restart = msg
        .content_as::<ShutdownRequest>()
        .map(|r| r.restart)
        .unwrap_or(false);
    let reply = json!({ "status": "ok", "restart": restart });
    send_reply(socket, session, "shutdown_reply", &reply, msg);
    publisher.publish("shutdown_reply", &reply, Some(msg));
    tracing::info!(restart, "shutdown requested");
    flags.request_shutdown();
}

/// Echoes each heartbeat frame back: the heartbeat is raw bytes, not a signed message.
pub(crate) fn heartbeat_loop(socket: Socket, flags: Flags, rejections: &Rejections) {
    while let Some(ready) = wait_readable(&socket, &flags, None) {
        if !ready {
            continue;
        }
        match socket.recv_multipart(true) {
            Ok(frames) => {
                if let Err(e) = socket.send_multipart(&frames, true) {
                    tracing::debug!("heartbeat echo failed: {e}");
                }
            }
            Err(e) if e.is_again() => {}
            Err(e) => {
                // A refused ping (too many frames, too large) was still taken by the REP
                // socket, which now waits to reply and would never read again: answer it with
                // an empty frame so that it serves the next ping.
                if matches!(e, kernelgate_zmq::Error::TooLarge { .. }) {
                    crate::rejections::record_too_large(rejections, Channel::Heartbeat, &e);
                } else {
                    tracing::debug!("heartbeat receive failed: {e}");
                }
                let empty: [&[u8]; 1] = [b""];
                if let Err(e) = socket.send_multipart(&empty, true) {
                    tracing::debug!("heartbeat reset failed: {e}");
                }
            }
        }
    }
}
