//! Shared test helpers: every blocking receive has a timeout.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::Duration;

use kernelgate_zmq::{Context, Socket, SocketType};

/// Long enough for a loaded CI machine, short enough to fail fast.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(300);

pub fn socket(ctx: &Context, ty: SocketType) -> Socket {
    let s = ctx.socket(ty).unwrap();
    s.set_rcvtimeo(Some(TIMEOUT)).unwrap();
    s.set_sndtimeo(Some(TIMEOUT)).unwrap();
    s
}

/// A ROUTER bound to `endpoint` and the resolved endpoint.
pub fn router(ctx: &Context, endpoint: &str) -> (Socket, String) {
    let r = socket(ctx, SocketType::Router);
    r.bind(endpoint).unwrap();
    let ep = r.last_endpoint().unwrap();
    (r, ep)
}

pub fn dealer(ctx: &Context, endpoint: &str) -> Socket {
    let d = socket(ctx, SocketType::Dealer);
    d.connect(endpoint).unwrap();
    d
}

/// Asserts nothing arrives on `s` within [`QUIET`].
pub fn assert_quiet(s: &Socket) {
    s.set_rcvtimeo(Some(QUIET)).unwrap();
    match s.recv_multipart(false) {
        Err(e) if e.is_again() => {}
        other => panic!("expected nothing, got {other:?}"),
    }
    s.set_rcvtimeo(Some(TIMEOUT)).unwrap();
}

/// DEALER -> ROUTER -> DEALER round trip of a multipart message.
pub fn roundtrip(router: &Socket, dealer: &Socket, frames: &[&[u8]]) {
    dealer.send_multipart(frames, false).unwrap();
    let mut got = router.recv_multipart(false).unwrap();
    assert_eq!(got.len(), frames.len() + 1, "routing id + frames");
    assert_eq!(&got[1..], frames);
    got.iter_mut().skip(1).for_each(|f| f.reverse());
    router.send_multipart(&got, false).unwrap();
    let back = dealer.recv_multipart(false).unwrap();
    let want: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| f.iter().rev().copied().collect())
        .collect();
    assert_eq!(back, want);
}
