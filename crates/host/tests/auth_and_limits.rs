//! Host integration tests: authentication, the Origin check and the HTTP limits (header
//! deadline, connection cap). Needs the `kernelgate` binary: `cargo build --bin kernelgate` first.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::*;
use tower::ServiceExt;

async fn oneshot(app: &axum::Router, req: Request<Body>) -> u16 {
    app.clone().oneshot(req).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_everywhere() {
    let h = TestHost::start(|_| {}).await;
    let app = h.host.router();
    let tok = h.token.clone();
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    for path in [
        "/api",
        "/api/kernels",
        "/api/kernelspecs",
        "/kernelspecs/rhai/logo-64x64.png",
        "/api/kernels/x/channels",
        "/nope",
    ] {
        assert_eq!(oneshot(&app, get(path)).await, 401, "{path} without token");
        assert_eq!(
            oneshot(
                &app,
                Request::get(path)
                    .header("Authorization", "token wrongwrongwrong")
                    .body(Body::empty())
                    .unwrap()
            )
            .await,
            403,
            "{path} wrong token"
        );
    }
    // Right token, right places.
    assert_eq!(
        oneshot(
            &app,
            Request::get("/api")
                .header("Authorization", format!("token {tok}"))
                .body(Body::empty())
                .unwrap()
        )
        .await,
        200
    );
    assert_eq!(oneshot(&app, get(&format!("/api?token={tok}"))).await, 200);
    // Right token, wrong places: other headers, Basic auth, cookie, path.
    for (k, v) in [
        ("X-Token", tok.clone()),
        ("Authorization", format!("Basic {tok}")),
        ("Cookie", format!("token={tok}")),
        ("X-Authorization", format!("token {tok}")),
    ] {
        assert_eq!(
            oneshot(
                &app,
                Request::get("/api")
                    .header(k, v)
                    .body(Body::empty())
                    .unwrap()
            )
            .await,
            401,
            "token in {k}"
        );
    }
    assert_eq!(oneshot(&app, get(&format!("/api/{tok}"))).await, 401);
    // A near miss (one character off) is refused.
    let mut near = tok.clone();
    near.pop();
    near.push(if tok.ends_with('0') { '1' } else { '0' });
    assert_eq!(oneshot(&app, get(&format!("/api?token={near}"))).await, 403);

    // WebSocket: no token, wrong token, cross-origin refused; same-origin and no-origin allowed.
    let id = h.start_kernel(None).await;
    assert_eq!(
        ws_connect(&h.ws_url(&id, false), false, None).await.err(),
        Some(401)
    );
    let wrong = h.ws_url(&id, false) + "&token=abcdefabcdefabcdefabcdefabcdefabcdef";
    assert_eq!(ws_connect(&wrong, false, None).await.err(), Some(403));
    assert_eq!(
        ws_connect(&h.ws_url(&id, true), false, Some("http://evil.example"))
            .await
            .err(),
        Some(403)
    );
    assert!(ws_connect(&h.ws_url(&id, true), false, None).await.is_ok());
    assert!(ws_connect(&h.ws_url(&id, true), false, Some(&h.base))
        .await
        .is_ok());
    // Every refusal above was counted by kind.
    let (status, body) = h.req("GET", "/api/status", None).await;
    assert_eq!(status, 200);
    let refused = &body["refused"]["requests"];
    assert_eq!(refused["no_token"], 12, "{body}");
    assert_eq!(refused["wrong_token"], 8, "{body}");
    assert_eq!(refused["origin_not_allowed"], 1, "{body}");
    assert_eq!(refused["connection_limit"], 0, "{body}");
    h.stop().await;
}

/// Reads until the server closes the connection (EOF or reset), failing after `within`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Whether `GET /api` on a new connection to `addr` is answered 200 (false when the connection
/// is closed first).
async fn answers_200(addr: &str, token: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!(
        "GET /api HTTP/1.1\r\nHost: {addr}\r\nAuthorization: token {token}\r\nConnection: close\r\n\r\n"
    );
    if tcp.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut response)).await;
    matches!(read, Ok(Ok(_))) && response.starts_with(b"HTTP/1.1 200")
}

/// Slowloris: a client that never finishes its request headers is cut off at the deadline,
/// before any token is checked, and the host keeps answering others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_request_headers_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let host = TestHost::start(|c| c.header_read_timeout = Duration::from_millis(500)).await;
    let addr = host.base.trim_start_matches("http://").to_owned();
    // Unfinished headers; nothing at all (hyper must not wait without a deadline for bytes to
    // tell HTTP/1 from HTTP/2); a part of, and the whole, HTTP/2 preface.
    let starts: [&[u8]; 4] = [
        b"GET /api HTTP/1.1\r\nHost: x\r\n",
        b"",
        b"PRI * HTTP/2.0\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    let mut open = Vec::new();
    for start in starts {
        let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
        slow.write_all(start).await.unwrap();
        if !closed_within(&mut slow, Duration::from_secs(5)).await {
            open.push(String::from_utf8_lossy(start).into_owned());
        }
    }
    assert!(open.is_empty(), "connections that sent {open:?} stay open");
    let (status, _) = host.req("GET", "/api", None).await;
    assert_eq!(status, 200);
    host.stop().await;
}

/// Past `max_connections` a new connection is closed at once; when one closes, its place is
/// free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed() {
    let host = TestHost::start(|c| c.max_connections = 2).await;
    let addr = host.base.trim_start_matches("http://").to_owned();
    let first = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let second = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Accepting is asynchronous (which of the connections gets a place is not fixed), so try a
    // few times: each attempt over the limit is closed at once, one admitted is dropped.
    let mut refused = false;
    for _ in 0..50 {
        let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
        if closed_within(&mut third, Duration::from_millis(200)).await {
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "a third connection was kept open with a limit of 2"
    );
    drop(first);
    drop(second);
    // The host notices the closes asynchronously: a request may still be turned away.
    let mut ok = false;
    for _ in 0..50 {
        if answers_200(&addr, &host.token).await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "no place freed after two connections closed");
    let (_, body) = host.req("GET", "/api/status", None).await;
    let counted = body["refused"]["requests"]["connection_limit"].as_u64();
    assert!(
        counted >= Some(1),
        "the refused connection was not counted: {body}"
    );
    host.stop().await;
}
