//! tokio bridge over the edge-triggered ZMQ_FD.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::time::{Duration, Instant};

use kernelgate_zmq::{AsyncSocket, Context, SocketType};
use tokio::time::timeout;

const N: usize = 10_000;
const WINDOW: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_dealer_echo_10k() {
    let ctx = Context::new().unwrap();
    let router = ctx.socket(SocketType::Router).unwrap();
    router.bind("tcp://127.0.0.1:*").unwrap();
    let ep = router.last_endpoint().unwrap();
    let mut router = AsyncSocket::new(router).unwrap();
    let server = tokio::spawn(async move {
        for _ in 0..N {
            let msg = router.recv_multipart().await.unwrap();
            router.send_multipart(&msg).await.unwrap();
        }
        router
    });

    let dealer = ctx.socket(SocketType::Dealer).unwrap();
    dealer.connect(&ep).unwrap();
    let mut dealer = AsyncSocket::new(dealer).unwrap();
    let client = tokio::spawn(async move {
        // Keep at most WINDOW in flight so neither side's high-water mark is reached.
        let mut next = 0usize;
        for i in 0..N {
            while next < N && next < i + WINDOW {
                let seq = next.to_le_bytes();
                dealer
                    .send_multipart(&[b"msg".as_slice(), &seq, &[0u8; 64]])
                    .await
                    .unwrap();
                next += 1;
            }
            let back = dealer.recv_multipart().await.unwrap();
            assert_eq!(back.len(), 3);
            assert_eq!(back[1], i.to_le_bytes());
        }
        dealer
    });
    let (c, s) = timeout(Duration::from_secs(20), async {
        (client.await, server.await)
    })
    .await
    .expect("echo timed out");
    c.unwrap();
    s.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_recv_wakes_on_late_message() {
    let ctx = Context::new().unwrap();
    let pull = ctx.socket(SocketType::Dealer).unwrap();
    pull.bind("inproc://late").unwrap();
    let mut pull = AsyncSocket::new(pull).unwrap();
    let push = ctx.socket(SocketType::Dealer).unwrap();
    push.connect("inproc://late").unwrap();

    let start = Instant::now();
    let waiter =
        tokio::spawn(async move { pull.recv_multipart().await.map(|m| (m, start.elapsed())) });
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        push.send_multipart([b"late"], false).unwrap();
        push // keep the socket open until the message is out (linger)
    });
    let (msg, elapsed) = timeout(Duration::from_secs(5), waiter)
        .await
        .expect("recv never woke")
        .unwrap()
        .unwrap();
    assert_eq!(msg, vec![b"late".to_vec()]);
    assert!(elapsed >= Duration::from_millis(90), "{elapsed:?}");
}

/// A bound DEALER under the bridge and a plain one connected to it over TCP.
fn dealer_pair() -> (Context, AsyncSocket, kernelgate_zmq::Socket) {
    let ctx = Context::new().unwrap();
    let a = ctx.socket(SocketType::Dealer).unwrap();
    a.bind("tcp://127.0.0.1:*").unwrap();
    let ep = a.last_endpoint().unwrap();
    let b = ctx.socket(SocketType::Dealer).unwrap();
    b.connect(&ep).unwrap();
    (ctx, AsyncSocket::new(a).unwrap(), b)
}

/// A receive future dropped and made again (a losing `select!` branch), while the socket is
/// quiet, while a send on it processes libzmq's commands, and with messages queued behind one
/// another: each message still arrives, none waits for a later edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_receives_on_a_quiet_socket_miss_nothing() {
    let (_ctx, mut a, b) = dealer_pair();
    let b = AsyncSocket::new(b).unwrap();
    for round in 0..200u32 {
        // Lose a few races against an always-ready branch: the socket goes quiet.
        for _ in 0..3 {
            // Polled once (it finds nothing and waits), then dropped.
            let r = timeout(Duration::ZERO, a.recv_multipart()).await;
            assert!(r.is_err(), "nothing was sent yet");
        }
        if round % 2 == 0 {
            // A send on the quiet socket lets libzmq process whatever commands are queued.
            a.send_multipart(&[b"ping"]).await.unwrap();
        }
        let burst = 1 + round % 3;
        for i in 0..burst {
            b.get_ref()
                .send_multipart([round.to_le_bytes(), i.to_le_bytes()], false)
                .unwrap();
        }
        for i in 0..burst {
            let m = timeout(Duration::from_secs(5), a.recv_multipart())
                .await
                .expect("a queued message waited for another edge")
                .unwrap();
            assert_eq!(
                m,
                vec![round.to_le_bytes().to_vec(), i.to_le_bytes().to_vec()]
            );
        }
    }
}

/// A quiet socket whose signal was drained by another call on it (ZMQ_EVENTS through
/// `get_ref`, or a send) before the reactor saw it still gets its message. One thread, so that
/// the reactor cannot look between the signal and the drain.
#[tokio::test(flavor = "current_thread")]
async fn a_drained_signal_does_not_strand_a_message() {
    let (_ctx, mut a, b) = dealer_pair();
    for round in 0..50u32 {
        // Polled once (it finds nothing and waits), then dropped: the socket is quiet.
        let r = timeout(Duration::ZERO, a.recv_multipart()).await;
        assert!(r.is_err(), "nothing was sent yet");
        b.send_multipart([round.to_le_bytes()], false).unwrap();
        // Wait until libzmq has the message, and let these calls consume its signal.
        let deadline = Instant::now() + Duration::from_secs(5);
        if round % 2 == 0 {
            while !a
                .get_ref()
                .events()
                .unwrap()
                .contains(kernelgate_zmq::PollEvents::READABLE)
            {
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(1));
            }
        } else {
            std::thread::sleep(Duration::from_millis(5));
            a.send_multipart(&[b"pong"]).await.unwrap();
        }
        let m = timeout(Duration::from_secs(5), a.recv_multipart())
            .await
            .expect("the message was stranded")
            .unwrap();
        assert_eq!(m, vec![round.to_le_bytes().to_vec()]);
    }
}

#[test]
fn new_outside_runtime_is_an_error() {
    let ctx = Context::new().unwrap();
    let s = ctx.socket(SocketType::Dealer).unwrap();
    assert!(AsyncSocket::new(s).is_err());
}

fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<AsyncSocket>();
    is_send::<kernelgate_zmq::Socket>();
    is_send::<Context>();
    is_send::<kernelgate_zmq::zap::ZapHandle>();
}
