//! The client against a scripted kernel written with kernelgate-zmq: forged, stray and replayed
//! messages are counted and dropped without disturbing the genuine exchange.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use kernelgate_client::{BlockingKernelClient, ClientConfig, Error};
use kernelgate_wire::{
    Channel, ConnectionInfo, ErrorKind, Key, Session, SessionConfig, Signer, Transport,
};
use kernelgate_zmq::{Context, Socket, SocketType};
use serde_json::json;

fn bind(ctx: &Context, ty: SocketType) -> (Socket, u16) {
    let s = ctx.socket(ty).unwrap();
    s.bind("tcp://127.0.0.1:*").unwrap();
    s.set_rcvtimeo(Some(Duration::from_secs(10))).unwrap();
    let ep = s.last_endpoint().unwrap();
    let port = ep.rsplit(':').next().unwrap().parse().unwrap();
    (s, port)
}

/// A fake kernel's five sockets on loopback: its connection info and the sockets of `wanted`,
/// in that order. The other channels' sockets stay open, unused, for the test's lifetime.
fn fake_kernel(ctx: &Context, wanted: &[Channel]) -> (ConnectionInfo, Vec<Socket>) {
    let mut info = ConnectionInfo::generate(Transport::Tcp, "127.0.0.1").unwrap();
    let mut sockets = Vec::new();
    for ch in [
        Channel::Shell,
        Channel::IoPub,
        Channel::Control,
        Channel::Stdin,
        Channel::Heartbeat,
    ] {
        let ty = match ch {
            Channel::IoPub => SocketType::Pub,
            Channel::Heartbeat => SocketType::Rep,
            _ => SocketType::Router,
        };
        let (s, p) = bind(ctx, ty);
        info.set_port(ch, p);
        match wanted.iter().position(|w| *w == ch) {
            Some(at) => sockets.push((at, s)),
            None => std::mem::forget(s),
        }
    }
    sockets.sort_by_key(|(at, _)| *at);
    (info, sockets.into_iter().map(|(_, s)| s).collect())
}

#[test]
fn forged_stray_and_replayed_messages_are_dropped() {
    let ctx = Context::new().unwrap();
    let (info, sockets) = fake_kernel(&ctx, &[Channel::Shell, Channel::IoPub]);
    let [shell, iopub]: [Socket; 2] = sockets.try_into().unwrap();
    let kernel = Session::new(info.signer(false).unwrap(), SessionConfig::default());
    let forger = Session::new(
        Signer::new(info.signature_scheme, &Key::new(*b"not the key")).unwrap(),
        SessionConfig::default(),
    );

    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let frames = shell.recv_multipart(false).unwrap();
        let req = kernel.receive(frames).unwrap().into_inner();
        assert_eq!(req.msg_type(), "kernel_info_request");
        // The shell routing id is the session id, as jupyter_client sets it.
        assert_eq!(req.identities, vec![req.header.session.as_bytes().to_vec()]);
        let content = json!({"status": "ok", "protocol_version": "5.4", "implementation": "fake",
            "implementation_version": "0", "language_info": {"name": "fake"}});
        let forged = forger
            .message("kernel_info_reply", &json!({"status": "ok"}), Some(&req))
            .unwrap();
        shell
            .send_multipart(forger.encode(&forged).unwrap(), false)
            .unwrap();
        let mut other = req.clone();
        other.header.msg_id = "someone-else".into();
        let stray = kernel
            .message("kernel_info_reply", &content, Some(&other))
            .unwrap();
        shell
            .send_multipart(kernel.encode(&stray).unwrap(), false)
            .unwrap();
        let genuine = kernel
            .message("kernel_info_reply", &content, Some(&req))
            .unwrap();
        shell
            .send_multipart(kernel.encode(&genuine).unwrap(), false)
            .unwrap();

        std::thread::sleep(Duration::from_millis(300)); // let the SUB subscription arrive
        let mut status = kernel
            .message("status", &json!({"execution_state": "idle"}), None)
            .unwrap();
        status.identities = vec![b"kernel.fake.status".to_vec()];
        let mut bad = forger
            .message("status", &json!({"execution_state": "busy"}), None)
            .unwrap();
        bad.identities = status.identities.clone();
        let good = kernel.encode(&status).unwrap();
        iopub
            .send_multipart(forger.encode(&bad).unwrap(), false)
            .unwrap();
        iopub.send_multipart(&good, false).unwrap();
        iopub.send_multipart(&good, false).unwrap(); // a replay
        iopub
            .send_multipart([b"garbage".as_slice()], false)
            .unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(20)); // keep the sockets open until the client is done
    });

    let mut client = BlockingKernelClient::connect(
        info,
        ClientConfig {
            timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let reply = client.kernel_info().unwrap();
    assert_eq!(reply.implementation, "fake");
    let msg = client.recv_iopub(Duration::from_secs(5)).unwrap();
    assert_eq!(msg.content["execution_state"], "idle");
    let err = client.recv_iopub(Duration::from_millis(500)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let mut kinds = client.inner().rejections();
    kinds.sort_by_key(|(k, _)| k.index());
    assert_eq!(
        kinds,
        vec![
            (ErrorKind::BadSignature, 2),
            (ErrorKind::Replayed, 1),
            (ErrorKind::MalformedFrames, 1)
        ]
    );
    assert_eq!(client.inner().rejected_count(), 4);
    done_tx.send(()).unwrap();
    thread.join().unwrap();
}

/// A program may leave output queued for longer than the replay window before it asks for it:
/// messages are judged fresh by when they arrived, not by when they are read.
#[test]
fn output_left_queued_longer_than_the_window_is_still_delivered() {
    let ctx = Context::new().unwrap();
    let (info, sockets) = fake_kernel(&ctx, &[Channel::IoPub]);
    let [iopub]: [Socket; 1] = sockets.try_into().unwrap();
    let kernel = Session::new(info.signer(false).unwrap(), SessionConfig::default());
    let (joined_tx, joined_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let publish = |text: &str| {
            let mut msg = kernel
                .message("stream", &json!({"name": "stdout", "text": text}), None)
                .unwrap();
            msg.identities = vec![b"kernel.fake.stream".to_vec()];
            iopub
                .send_multipart(kernel.encode(&msg).unwrap(), false)
                .unwrap();
        };
        // Probes until the client's subscription has joined (bounded: 10 s at most).
        for _ in 0..500 {
            publish("probe");
            if joined_rx.recv_timeout(Duration::from_millis(20)).is_ok() {
                break;
            }
        }
        publish("late");
        let _ = done_rx.recv_timeout(Duration::from_secs(20));
    });

    let window = Duration::from_millis(300);
    let mut client = BlockingKernelClient::connect(
        info,
        ClientConfig {
            replay: Some(kernelgate_wire::ReplayConfig {
                window,
                clock_skew: Duration::from_millis(100),
                ..kernelgate_wire::ReplayConfig::default()
            }),
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let first = client.recv_iopub(Duration::from_secs(10)).unwrap();
    assert_eq!(first.content["text"], "probe");
    joined_tx.send(()).unwrap();
    std::thread::sleep(window * 3); // the program is busy; "late" waits in the queue
    let mut texts = Vec::new();
    while let Ok(msg) = client.recv_iopub(Duration::from_secs(2)) {
        texts.push(msg.content["text"].as_str().unwrap_or_default().to_owned());
        if texts.last().map(String::as_str) == Some("late") {
            break;
        }
    }
    assert_eq!(texts.last().map(String::as_str), Some("late"), "{texts:?}");
    assert_eq!(client.inner().rejected_count(), 0);
    done_tx.send(()).unwrap();
    thread.join().unwrap();
}
