//! Socket basics: capabilities, round trips, limits, poll.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

mod common;

use std::time::Duration;

use common::*;
use kernelgate_zmq::{
    has, poll, version, wait_readable, Context, Error, Latch, PollEvents, PollItem, RecvLimits,
    SocketConfig, SocketType,
};

#[test]
fn libzmq_435_with_curve() {
    assert_eq!(version(), (4, 3, 5));
    assert!(has("curve"), "libzmq must be built with CURVE");
    assert!(has("ipc"));
    assert!(!has("no-such-thing"));
}

#[test]
fn router_dealer_tcp() {
    let ctx = Context::new().unwrap();
    let (r, ep) = router(&ctx, "tcp://127.0.0.1:*");
    assert!(
        ep.starts_with("tcp://127.0.0.1:") && !ep.ends_with(":*"),
        "{ep}"
    );
    let d = dealer(&ctx, &ep);
    roundtrip(&r, &d, &[b"<IDS|MSG>", b"sig", b"{}", b""]);
    roundtrip(&r, &d, &[&[0u8; 100_000]]);
}

#[test]
fn router_dealer_ipc() {
    let dir = tempfile::tempdir().unwrap();
    let ep = format!("ipc://{}/kernel-shell", dir.path().display());
    let ctx = Context::new().unwrap();
    let (r, _) = router(&ctx, &ep);
    let d = dealer(&ctx, &ep);
    d.set_routing_id(b"client-1").unwrap();
    roundtrip(&r, &d, &[b"a", b"b", b"c"]);
}

#[test]
fn oversized_frame_drops_peer_not_socket() {
    let ctx = Context::new().unwrap();
    let cfg = SocketConfig {
        max_msg_size: Some(1024),
        ..SocketConfig::default()
    };
    let r = ctx.socket_with(SocketType::Router, &cfg).unwrap();
    r.bind("tcp://127.0.0.1:*").unwrap();
    let ep = r.last_endpoint().unwrap();

    let bad = dealer(&ctx, &ep);
    bad.send_multipart([vec![7u8; 4096]], false).unwrap();
    r.set_rcvtimeo(Some(QUIET)).unwrap();
    assert!(
        r.recv_multipart(false).unwrap_err().is_again(),
        "oversized frame must not arrive"
    );
    r.set_rcvtimeo(Some(TIMEOUT)).unwrap();

    let good = dealer(&ctx, &ep);
    roundtrip(&r, &good, &[b"still", b"working"]);
}

#[test]
fn too_many_frames_is_typed_error_and_socket_recovers() {
    let ctx = Context::new().unwrap();
    let limits = RecvLimits {
        max_frames: 8,
        max_total_bytes: 1000,
    };
    let cfg = SocketConfig {
        recv_limits: limits,
        ..SocketConfig::default()
    };
    let r = ctx.socket_with(SocketType::Router, &cfg).unwrap();
    r.set_rcvtimeo(Some(TIMEOUT)).unwrap();
    r.bind("tcp://127.0.0.1:*").unwrap();
    let d = dealer(&ctx, &r.last_endpoint().unwrap());

    d.send_multipart(vec![b"x".to_vec(); 50], false).unwrap();
    match r.recv_multipart(false) {
        Err(Error::TooLarge {
            frames, limits: l, ..
        }) => {
            assert_eq!(frames, 51); // routing id + 50
            assert_eq!(l, limits);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Too many bytes in few frames.
    d.send_multipart([vec![1u8; 600], vec![2u8; 600]], false)
        .unwrap();
    assert!(matches!(
        r.recv_multipart(false),
        Err(Error::TooLarge { frames: 3, .. })
    ));
    // The next message is intact: nothing of the discarded ones leaked into it.
    roundtrip(&r, &d, &[b"ok"]);
}

#[test]
fn empty_multipart_rejected() {
    let ctx = Context::new().unwrap();
    let d = socket(&ctx, SocketType::Dealer);
    let none: [&[u8]; 0] = [];
    assert!(matches!(
        d.send_multipart(none, true),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn poll_several_sockets() {
    let ctx = Context::new().unwrap();
    let (r1, ep1) = router(&ctx, "tcp://127.0.0.1:*");
    let (r2, ep2) = router(&ctx, "inproc://poll-test");
    assert_eq!(ep2, "inproc://poll-test");
    let _d1 = dealer(&ctx, &ep1);
    let d2 = dealer(&ctx, &ep2);
    let mut items = [
        PollItem::new(&r1, PollEvents::READABLE),
        PollItem::new(&r2, PollEvents::READABLE),
    ];
    assert_eq!(
        poll(&mut items, Some(Duration::from_millis(20))).unwrap(),
        0
    );
    d2.send_multipart([b"hi"], false).unwrap();
    assert_eq!(poll(&mut items, Some(TIMEOUT)).unwrap(), 1);
    assert!(!items[0].is_readable());
    assert!(items[1].is_readable());
    assert!(r2.events().unwrap().is_readable());
    assert!(r2.fd().unwrap() >= 0);
    assert_eq!(r2.recv_multipart(true).unwrap()[1], b"hi");
    assert!(r2.recv_multipart(true).unwrap_err().is_again());
}

#[test]
fn wait_readable_wakes_for_each_message_for_the_latch_and_at_the_timeout() {
    let ctx = Context::new().unwrap();
    let (r, ep) = router(&ctx, "tcp://127.0.0.1:*");
    let d = dealer(&ctx, &ep);
    let latch = Latch::new().unwrap();
    let short = Some(Duration::from_millis(30));
    let started = std::time::Instant::now();
    assert!(
        !wait_readable(&r, &latch, short).unwrap(),
        "nothing sent yet"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(30),
        "returned before its timeout"
    );
    // Two queued: after one is read, the next wait returns at once (no edge is needed).
    d.send_multipart([b"one"], false).unwrap();
    d.send_multipart([b"two"], false).unwrap();
    assert!(wait_readable(&r, &latch, Some(TIMEOUT)).unwrap());
    assert_eq!(r.recv_multipart(true).unwrap()[1], b"one");
    let started = std::time::Instant::now();
    assert!(wait_readable(&r, &latch, Some(TIMEOUT)).unwrap());
    assert!(started.elapsed() < TIMEOUT);
    assert_eq!(r.recv_multipart(true).unwrap()[1], b"two");
    // A message arriving while it sleeps wakes it.
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        d.send_multipart([b"three"], false).unwrap();
        d
    });
    assert!(wait_readable(&r, &latch, Some(TIMEOUT)).unwrap());
    assert_eq!(r.recv_multipart(true).unwrap()[1], b"three");
    let _d = sender.join().unwrap();
    // The latch ends a wait that would otherwise last forever.
    let latch = std::sync::Arc::new(latch);
    let setter = {
        let latch = latch.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            latch.set();
        })
    };
    let started = std::time::Instant::now();
    assert!(!wait_readable(&r, &latch, Some(Duration::from_secs(20))).unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the latch did not end the wait"
    );
    setter.join().unwrap();
}

#[test]
fn pub_sub_and_req_rep_heartbeat() {
    let ctx = Context::new().unwrap();
    let rep = socket(&ctx, SocketType::Rep);
    rep.bind("inproc://hb").unwrap();
    let req = socket(&ctx, SocketType::Req);
    req.connect("inproc://hb").unwrap();
    req.send(b"ping", false, false).unwrap();
    let (ping, more) = rep.recv(false).unwrap();
    assert!(!more);
    rep.send(&ping, false, false).unwrap();
    assert_eq!(req.recv(false).unwrap().0, b"ping");

    let publ = socket(&ctx, SocketType::Pub);
    publ.bind("inproc://iopub").unwrap();
    let sub = socket(&ctx, SocketType::Sub);
    sub.subscribe(b"").unwrap();
    sub.connect("inproc://iopub").unwrap();
    // Subscriptions propagate asynchronously: publish until one arrives.
    sub.set_rcvtimeo(Some(Duration::from_millis(20))).unwrap();
    let got = (0..200).find_map(|_| {
        publ.send_multipart([b"status".as_slice(), b"idle"], false)
            .unwrap();
        sub.recv_multipart(false).ok()
    });
    assert_eq!(got.unwrap(), vec![b"status".to_vec(), b"idle".to_vec()]);
}

#[test]
fn bad_arguments_are_errors() {
    let ctx = Context::new().unwrap();
    let s = socket(&ctx, SocketType::Dealer);
    assert!(s.set_routing_id(b"").is_err());
    assert!(s.set_routing_id(b"\0abc").is_err());
    assert!(matches!(
        s.bind("tcp://nul\0"),
        Err(Error::InvalidArgument(_))
    ));
    let e = s.bind("nonsense://x").unwrap_err();
    assert!(e.errno().is_some(), "{e}");
    // Binding the same port twice fails with a typed errno.
    let (r, ep) = router(&ctx, "tcp://127.0.0.1:*");
    let e = socket(&ctx, SocketType::Router).bind(&ep).unwrap_err();
    assert_eq!(e.errno(), Some(libc_eaddrinuse()), "{e}");
    drop(r);
}

fn libc_eaddrinuse() -> i32 {
    98 // Linux EADDRINUSE
}

/// The host raises libzmq's socket limit per context: the setting must take effect.
#[test]
fn max_sockets_limits_the_context() {
    let ctx = Context::new().unwrap();
    ctx.set_max_sockets(2).unwrap();
    let a = ctx.socket(SocketType::Dealer).unwrap();
    let b = ctx.socket(SocketType::Dealer).unwrap();
    assert!(
        ctx.socket(SocketType::Dealer).is_err(),
        "a third socket in a context limited to two"
    );
    drop((a, b));
}
