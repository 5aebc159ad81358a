//! The ZMTP links against libzmq 4.3.5 itself (ROUTER and PUB peers, as a kernel has), and
//! against a hostile peer that breaks the protocol.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::time::Duration;

use kernelgate_zmq::zmtp::{self, Link, LinkConfig, Role, ZmtpError};
use kernelgate_zmq::{AsyncSocket, Context, Error, RecvLimits, SocketType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn bound(ctx: &Context, ty: SocketType, endpoint: &str) -> (AsyncSocket, String) {
    let s = ctx.socket(ty).unwrap();
    s.bind(endpoint).unwrap();
    let ep = s.last_endpoint().unwrap();
    (AsyncSocket::new(s).unwrap(), ep)
}

fn dealer(ep: &str, id: &[u8]) -> Link {
    let role = Role::Dealer {
        routing_id: id.to_vec(),
    };
    Link::new(ep, role, LinkConfig::default()).unwrap()
}

async fn round_trip_with_router(endpoint: &str) {
    let ctx = Context::new().unwrap();
    let (mut router, ep) = bound(&ctx, SocketType::Router, endpoint);
    let mut link = dealer(&ep, b"client-1");
    let big = vec![7u8; 1 << 20];
    let sent = vec![
        b"<IDS|MSG>".to_vec(),
        Vec::new(),
        b"{}".to_vec(),
        big.clone(),
    ];
    timeout(WAIT, link.send_multipart(&sent))
        .await
        .unwrap()
        .unwrap();
    let got = timeout(WAIT, router.recv_multipart())
        .await
        .unwrap()
        .unwrap();
    // The ROUTER sees our routing id first, from the READY's Identity.
    assert_eq!(got[0], b"client-1");
    assert_eq!(&got[1..], &sent[..]);
    let reply = vec![b"client-1".to_vec(), b"reply".to_vec(), big];
    timeout(WAIT, router.send_multipart(&reply))
        .await
        .unwrap()
        .unwrap();
    let back = timeout(WAIT, link.recv_multipart()).await.unwrap().unwrap();
    assert_eq!(back, &reply[1..]);
    assert!(link.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dealer_talks_to_a_libzmq_router_over_tcp() {
    round_trip_with_router("tcp://127.0.0.1:*").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dealer_talks_to_a_libzmq_router_over_ipc() {
    let dir = tempfile::tempdir().unwrap();
    round_trip_with_router(&format!("ipc://{}/r", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_receives_from_a_libzmq_pub() {
    let ctx = Context::new().unwrap();
    let (publisher, ep) = bound(&ctx, SocketType::Pub, "tcp://127.0.0.1:*");
    let mut link = Link::new(&ep, Role::Sub, LinkConfig::default()).unwrap();
    // A subscription joins some time after the connection: publish until one arrives.
    let got = timeout(WAIT, async {
        loop {
            publisher
                .get_ref()
                .send_multipart([&b"topic"[..], b"body"], true)
                .unwrap();
            if let Ok(m) = timeout(Duration::from_millis(20), link.recv_multipart()).await {
                break m;
            }
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, vec![b"topic".to_vec(), b"body".to_vec()]);
    // A SUB never sends.
    assert!(matches!(
        link.send_multipart(&[b"x"]).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dealer_reconnects_when_the_peer_comes_back_on_the_same_port() {
    let ctx = Context::new().unwrap();
    let (router, ep) = bound(&ctx, SocketType::Router, "tcp://127.0.0.1:*");
    let mut link = dealer(&ep, b"again");
    timeout(WAIT, link.send_multipart(&[b"one"]))
        .await
        .unwrap()
        .unwrap();
    drop(router);
    // The first send after the peer left may be lost (as with libzmq); keep sending until the
    // new peer on the same port gets one.
    let (mut router, _) = {
        let s = ctx.socket(SocketType::Router).unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        while let Err(e) = s.bind(&ep) {
            assert!(std::time::Instant::now() < deadline, "rebind: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
        (AsyncSocket::new(s).unwrap(), ())
    };
    let got = timeout(WAIT, async {
        loop {
            let _ = link.send_multipart(&[b"two"]).await;
            if let Ok(m) = timeout(Duration::from_millis(50), router.recv_multipart()).await {
                break m;
            }
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, vec![b"again".to_vec(), b"two".to_vec()]);
}

/// What a ROUTER sends first: its greeting and READY.
fn router_hello() -> Vec<u8> {
    let mut out = zmtp::greeting().to_vec();
    zmtp::encode_command(&mut out, "READY", &zmtp::ready_properties("ROUTER", None));
    out
}

/// A listener that answers the greeting properly and then sends `after` (or, with
/// `greeting: false`, sends `after` instead of a greeting).
async fn hostile_peer(greet: bool, after: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = format!("tcp://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let after = after.clone();
            tokio::spawn(async move {
                let mut out = if greet { router_hello() } else { Vec::new() };
                out.extend_from_slice(&after);
                let _ = s.write_all(&out).await;
                let mut sink = vec![0u8; 4096];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    ep
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_huge_frame_is_refused_from_its_header() {
    // 0x02: a long frame; 2^60 bytes announced, none sent.
    let mut evil = vec![0x02];
    evil.extend_from_slice(&(1u64 << 60).to_be_bytes());
    let ep = hostile_peer(true, evil).await;
    let mut link = dealer(&ep, b"x");
    let e = timeout(WAIT, link.recv_multipart())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(e, Error::Zmtp(ZmtpError::FrameTooLarge { .. })),
        "{e}"
    );
    assert!(!link.is_connected(), "the connection is dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_frames_and_bad_flags_are_typed_errors() {
    let mut many = Vec::new();
    zmtp::encode_message(&mut many, &vec![b"f".to_vec(); 10]);
    let ep = hostile_peer(true, many).await;
    let config = LinkConfig {
        limits: RecvLimits {
            max_frames: 4,
            max_total_bytes: 1 << 20,
        },
        ..LinkConfig::default()
    };
    let role = Role::Dealer {
        routing_id: b"x".to_vec(),
    };
    let mut link = Link::new(&ep, role, config).unwrap();
    let e = timeout(WAIT, link.recv_multipart())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(e, Error::Zmtp(ZmtpError::MessageTooLarge { .. })),
        "{e}"
    );

    let ep = hostile_peer(true, vec![0xF0, 0]).await;
    let mut link = dealer(&ep, b"x");
    let e = timeout(WAIT, link.recv_multipart())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Zmtp(ZmtpError::BadFlags(0xF0))), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_not_zmtp_never_connects_and_never_hangs_the_caller() {
    let ep = hostile_peer(false, b"HTTP/1.1 200 OK\r\n\r\n".to_vec()).await;
    let mut link = dealer(&ep, b"x");
    // Handshakes keep failing (and are retried with backoff): the receive just waits.
    assert!(timeout(Duration::from_millis(300), link.recv_multipart())
        .await
        .is_err());
    assert!(!link.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_is_answered_and_messages_keep_flowing() {
    let mut after = Vec::new();
    zmtp::encode_command(&mut after, "PING", b"\x00\x0aab");
    zmtp::encode_message(&mut after, &[b"hello"]);
    let ep = hostile_peer(true, after).await;
    let mut link = dealer(&ep, b"x");
    let m = timeout(WAIT, link.recv_multipart()).await.unwrap().unwrap();
    assert_eq!(m, vec![b"hello".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_from_a_peer_that_reads_nothing_queues_one_pong() {
    // The hostile peer reads what we send (into a sink); this one stops reading at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = format!("tcp://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut out = router_hello();
        for _ in 0..20_000 {
            zmtp::encode_command(&mut out, "PING", b"\x00\x0a0123456789abcdef");
        }
        zmtp::encode_message(&mut out, &[b"after"]);
        let _ = s.write_all(&out).await;
        tokio::time::sleep(WAIT).await;
        drop(s);
    });
    let mut link = dealer(&ep, b"x");
    let m = timeout(WAIT, link.recv_multipart()).await.unwrap().unwrap();
    assert_eq!(m, vec![b"after".to_vec()]);
    assert!(
        link.queued_bytes() <= 100,
        "{} bytes queued",
        link.queued_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_hangs_up_after_each_handshake_is_retried_ever_more_slowly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = format!("tcp://{}", listener.local_addr().unwrap());
    let accepts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepts.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = s.write_all(&router_hello()).await;
            let _ = s.shutdown().await;
        }
    });
    let mut link = dealer(&ep, b"x");
    let _ = timeout(Duration::from_millis(500), link.recv_multipart()).await;
    // Backing off 2, 4, 8 ... 50 ms: about a dozen in half a second; a backoff reset by each
    // handshake would make it a couple of hundred.
    let n = accepts.load(std::sync::atomic::Ordering::Relaxed);
    assert!((2..40).contains(&n), "{n} connections in 500 ms");
}

#[test]
fn only_tcp_and_ipc_endpoints() {
    let e = Link::new("inproc://x", Role::Sub, LinkConfig::default()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}
