//! Host integration tests: the WebSocket in both protocols, several clients, bad input.
//! Needs the `kernelgate` binary: `cargo build --bin kernelgate` first.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn ws_execute(v1: bool) {
    let h = TestHost::start(|_| {}).await;
    let id = h.start_kernel(None).await;
    let mut a = ws_connect(&h.ws_url(&id, true), v1, None).await.unwrap();
    let mut b = ws_connect(&h.ws_url(&id, true), v1, None).await.unwrap();
    let (out, result, status) = execute(&mut a, v1, "print(\"hello\"); 6 * 7").await;
    assert_eq!(
        (out.as_str(), result.as_str(), status.as_str()),
        ("hello\n", "42", "ok")
    );
    // The second client saw the first one's output on iopub.
    let mut saw = false;
    while let Some((ch, m, _)) = recv(&mut b, v1, Duration::from_secs(2)).await {
        if ch == "iopub" && m["header"]["msg_type"] == "stream" && m["content"]["text"] == "hello\n"
        {
            saw = true;
            break;
        }
    }
    assert!(saw, "iopub is broadcast to every connection");
    // Its own requests get its own replies.
    let (_, result, _) = execute(&mut b, v1, "1 + 1").await;
    assert_eq!(result, "2");
    // A message with binary buffers is decoded, signed and forwarded (the kernel answers it).
    let bufs = vec![vec![0u8, 1, 2, 255], Vec::new(), vec![7; 10_000]];
    let mid = send(&mut a, v1, "shell", "kernel_info_request", json!({}), &bufs).await;
    let mut ok = false;
    while let Some((ch, m, _)) = recv(&mut a, v1, T).await {
        if ch == "shell" && m["parent_header"]["msg_id"] == mid.as_str() {
            assert_eq!(m["header"]["msg_type"], "kernel_info_reply");
            ok = true;
            break;
        }
    }
    assert!(ok);
    let (s, m) = h.req("GET", &format!("/api/kernels/{id}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(m["connections"], 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_legacy_protocol() {
    ws_execute(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_v1_protocol() {
    ws_execute(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_bad_input_is_survived() {
    let h = TestHost::start(|c| c.ws_max_message = 1 << 20).await;
    let id = h.start_kernel(None).await;
    let mut ws = ws_connect(&h.ws_url(&id, true), false, None).await.unwrap();
    let mut other = ws_connect(&h.ws_url(&id, true), true, None).await.unwrap();
    let hdr = header("execute_request");
    let bad = [
        WsMessage::Text("{not json".into()),
        WsMessage::Text("[]".into()),
        WsMessage::Text(json!({"channel": "nope", "header": hdr}).to_string().into()),
        WsMessage::Text(
            json!({"channel": "iopub", "header": hdr})
                .to_string()
                .into(),
        ),
        WsMessage::Text(json!({"channel": "hb", "header": hdr}).to_string().into()),
        WsMessage::Text(json!({"channel": "shell"}).to_string().into()),
        WsMessage::Text(
            json!({"channel": "shell", "header": {"msg_id": "x"}})
                .to_string()
                .into(),
        ),
        WsMessage::Text(
            json!({"channel": "shell", "header": hdr, "content": "str"})
                .to_string()
                .into(),
        ),
        WsMessage::Binary(vec![0xff; 100].into()),
        WsMessage::Binary(Vec::new().into()),
        WsMessage::Binary(vec![0, 0, 0, 1, 0, 0, 0, 200].into()),
    ];
    for m in bad {
        ws.send(m).await.unwrap();
    }
    let (_, r, _) = execute(&mut ws, false, "3 + 4").await;
    assert_eq!(r, "7", "connection still works after bad input");
    // Oversized: that connection is closed, the other is unaffected.
    let _ = ws.send(WsMessage::Text("x".repeat(2 << 20).into())).await;
    let closed = recv(&mut ws, false, Duration::from_secs(10)).await;
    assert!(closed.is_none(), "oversized message closes the connection");
    let (_, r, _) = execute(&mut other, true, "5 + 5").await;
    assert_eq!(r, "10");
    // Non-upgrade GET on the channels route, unknown kernel: errors, not crashes.
    let (s, _) = h.req("GET", "/api/kernels/nope/channels", None).await;
    assert!(s == 404 || s == 400 || s == 426, "{s}");
    h.stop().await;
}

/// Runs a cell printing 40 MiB in 64 KiB lines (far more than loopback socket buffers hold)
/// through `ws`, which reads it all.
async fn print_40_mib(ws: &mut Ws) {
    let (out, _, status) = execute(
        ws,
        true,
        r#"let s = "x"; for i in 0..16 { s += s; } for i in 0..640 { print(s); }"#,
    )
    .await;
    assert_eq!(status, "ok");
    assert!(!out.is_empty());
}

/// A client that stops reading costs the host at most the IOPub budget, however much the kernel
/// prints: it misses the oldest messages instead, and its connection still works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_costs_at_most_the_iopub_budget() {
    const BUDGET: usize = 1 << 20;
    let h = TestHost::start(|c| c.iopub_buffer = BUDGET).await;
    let id = h.start_kernel(None).await;
    let mut stalled = ws_connect(&h.ws_url(&id, true), true, None).await.unwrap();
    let mut active = ws_connect(&h.ws_url(&id, true), true, None).await.unwrap();
    // Most of it would wait in the host for the stalled client.
    print_40_mib(&mut active).await;
    let kernel = h.host.shared.registry.get(&id).unwrap();
    let (messages, bytes) = kernel.iopub_held();
    assert!(
        bytes <= BUDGET,
        "{bytes} bytes in {messages} messages held for the stalled client"
    );
    assert!(
        messages > 0,
        "the stalled client's backlog was dropped entirely"
    );
    // Reading again, it skips what it missed and is served normally.
    let (_, r, status) = execute(&mut stalled, true, "6 * 7").await;
    assert_eq!((r.as_str(), status.as_str()), ("42", "ok"));
    drop((stalled, active));
    h.stop().await;
}

/// A client that takes nothing for `ws_write_timeout` is disconnected: it would otherwise hold
/// its connection's place, sockets and the kernel's "connected" mark for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_nothing_is_disconnected() {
    let h = TestHost::start(|c| c.ws_write_timeout = Duration::from_secs(1)).await;
    let id = h.start_kernel(None).await;
    let _stalled = ws_connect(&h.ws_url(&id, true), true, None).await.unwrap();
    let mut active = ws_connect(&h.ws_url(&id, true), true, None).await.unwrap();
    let kernel = h.host.shared.registry.get(&id).unwrap();
    assert_eq!(kernel.connections(), 2);
    // The writes to the stalled client block.
    print_40_mib(&mut active).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while kernel.connections() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled client is still connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, r, status) = execute(&mut active, true, "6 * 7").await;
    assert_eq!((r.as_str(), status.as_str()), ("42", "ok"));
    h.stop().await;
}

/// With CURVE on, the host speaks it to the built-in kernel: cells run over the WebSocket, a
/// plaintext subscriber to the kernel's IOPub reads nothing, and after a crash the restarted
/// kernel (fresh keys) is reached the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curve_kernels_are_reached_encrypted_also_after_a_restart() {
    let h = TestHost::start(|c| c.provision.curve = true).await;
    let id = h.start_kernel(None).await;
    let mut ws = ws_connect(&h.ws_url(&id, true), true, None).await.unwrap();
    let file = h.dir.path().join(format!("runtime/kernel-{id}.json"));
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let first_key = info["curve_publickey"].as_str().unwrap().to_owned();
    assert_eq!(first_key.len(), 40);
    let port = info["iopub_port"].as_u64().unwrap();
    let eavesdropper = tokio::task::spawn_blocking(move || {
        let ctx = kernelgate_zmq::Context::new().unwrap();
        let sub = ctx.socket(kernelgate_zmq::SocketType::Sub).unwrap();
        sub.subscribe(b"").unwrap();
        sub.set_linger(Some(Duration::ZERO)).unwrap();
        sub.set_rcvtimeo(Some(Duration::from_secs(3))).unwrap();
        sub.connect(&format!("tcp://127.0.0.1:{port}")).unwrap();
        sub.recv_multipart(false).is_ok()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let (out, _, status) = execute(&mut ws, true, r#"print("private")"#).await;
        assert_eq!((out.as_str(), status.as_str()), ("private\n", "ok"));
    }
    assert!(
        !eavesdropper.await.unwrap(),
        "a plaintext subscriber read the kernel's IOPub"
    );

    let pid = h.host.shared.registry.get(&id).unwrap().pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_status(&mut ws, true, "restarting", T).await;
    wait_status(&mut ws, true, "idle", T).await;
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_ne!(info["curve_publickey"].as_str(), Some(first_key.as_str()));
    let (_, r, _) = execute(&mut ws, true, "6 * 7").await;
    assert_eq!(r, "42");
    h.stop().await;
}
