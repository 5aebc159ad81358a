//! Host integration tests: auth, REST lifecycle, WebSocket in both protocols, faults, recovery.
//! Needs the `kernelgate` binary: `cargo build --bin kernelgate` first.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_lifecycle_and_errors() {
    let h = TestHost::start(|_| {}).await;
    let (s, v) = h.req("GET", "/api", None).await;
    assert_eq!(s, 200);
    assert!(v["version"].is_string());
    let (s, specs) = h.req("GET", "/api/kernelspecs", None).await;
    assert_eq!(s, 200);
    assert_eq!(specs["default"], "rhai");
    assert_eq!(specs["kernelspecs"]["rhai"]["name"], "rhai");
    assert!(specs["kernelspecs"]["rhai"]["spec"]["argv"].is_array());

    let id = h.start_kernel(Some("rhai")).await;
    // The host's own kernel_info probe makes the kernel briefly busy: wait (bounded) for idle.
    let mut m = Value::Null;
    for _ in 0..100 {
        let (s, model) = h.req("GET", &format!("/api/kernels/{id}"), None).await;
        assert_eq!(s, 200);
        m = model;
        if m["execution_state"] == "idle" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for f in [
        "id",
        "name",
        "last_activity",
        "execution_state",
        "connections",
    ] {
        assert!(!m[f].is_null(), "model has {f}: {m}");
    }
    assert_eq!(m["execution_state"], "idle");
    let (s, list) = h.req("GET", "/api/kernels", None).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, _) = h
        .req("POST", &format!("/api/kernels/{id}/interrupt"), None)
        .await;
    assert_eq!(s, 204);
    let pid_before = h.host.shared.registry.get(&id).unwrap().pid();
    let (s, m) = h
        .req("POST", &format!("/api/kernels/{id}/restart"), None)
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["id"], id.as_str());
    assert_ne!(h.host.shared.registry.get(&id).unwrap().pid(), pid_before);
    let pid = h.host.shared.registry.get(&id).unwrap().pid().unwrap();
    let (s, _) = h.req("DELETE", &format!("/api/kernels/{id}"), None).await;
    assert_eq!(s, 204);
    assert!(
        !kernelgate_host::provision::process_alive(pid),
        "process gone after DELETE"
    );
    let (s, e) = h.req("GET", &format!("/api/kernels/{id}"), None).await;
    assert_eq!(s, 404);
    assert!(e["message"].is_string() && e["reason"].is_string());

    // Errors.
    let url = format!("{}/api/kernels", h.base);
    let (s, e) = http(
        "POST",
        &url,
        Some(&format!("token {}", h.token)),
        Some("{not json".into()),
        &[],
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (s, _) = http(
        "POST",
        &url,
        Some(&format!("token {}", h.token)),
        Some("{\"name\": 5}".into()),
        &[],
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = h
        .req(
            "POST",
            "/api/kernels",
            Some(json!({"name": "no-such-spec"})),
        )
        .await;
    assert_eq!(s, 404);
    for (m, p) in [
        ("DELETE", "/api/kernels/nope"),
        ("POST", "/api/kernels/nope/restart"),
        ("POST", "/api/kernels/nope/interrupt"),
        ("GET", "/api/nothing"),
        ("GET", "/kernelspecs/rhai/kernel.json"),
        ("GET", "/kernelspecs/nope/logo-64x64.png"),
    ] {
        let (s, _) = h.req(m, p, None).await;
        assert_eq!(s, 404, "{m} {p}");
    }
    // Default kernel with an empty body.
    let id2 = h.start_kernel(None).await;
    let (_, m) = h.req("GET", &format!("/api/kernels/{id2}"), None).await;
    assert_eq!(m["name"], "rhai");
    h.stop().await;
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_restarts_and_executes_again() {
    let h = TestHost::start(|_| {}).await;
    let id = h.start_kernel(None).await;
    let mut ws = ws_connect(&h.ws_url(&id, true), true, None).await.unwrap();
    execute(&mut ws, true, "let x = 1;").await;
    let pid = h.host.shared.registry.get(&id).unwrap().pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let seen = wait_status(&mut ws, true, "restarting", T).await;
    assert_eq!(seen.last().map(String::as_str), Some("restarting"));
    wait_status(&mut ws, true, "idle", T).await;
    let (_, r, status) = execute(&mut ws, true, "20 + 22").await;
    assert_eq!((r.as_str(), status.as_str()), ("42", "ok"));
    let (_, m) = h.req("GET", &format!("/api/kernels/{id}"), None).await;
    assert_eq!(m["execution_state"], "idle");
    assert_eq!(m["restarts"], 1);
    h.stop().await;
}

fn spec_dir(
    root: &std::path::Path,
    name: &str,
    argv: Value,
) -> BTreeMap<String, std::path::PathBuf> {
    let d = root.join("kernels").join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("kernel.json"),
        json!({"argv": argv, "display_name": name, "language": "sh"}).to_string(),
    )
    .unwrap();
    BTreeMap::from([(name.to_owned(), d)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_dying_at_start_goes_dead_after_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.add_specs(&spec_dir(
        dir.path(),
        "dies",
        json!(["sh", "-c", "exit 3", "{connection_file}"]),
    ));
    c.restart.limit = 3;
    let h = TestHost::start_with(c, dir).await;
    let (s, m) = h
        .req("POST", "/api/kernels", Some(json!({"name": "dies"})))
        .await;
    assert_eq!(s, 201);
    assert_eq!(m["execution_state"], "dead", "{m}");
    assert_eq!(m["restarts"], 3);
    // A dead kernel can still be deleted, and leaves no connection file.
    let id = m["id"].as_str().unwrap();
    let (s, _) = h.req("DELETE", &format!("/api/kernels/{id}"), None).await;
    assert_eq!(s, 204);
    let left: Vec<_> = std::fs::read_dir(h.dir.path().join("runtime"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_kernel_is_detected_by_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    // Answers kernel_info (it is the built-in kernel) until SIGSTOP freezes it.
    c.heartbeat.interval = Duration::from_millis(200);
    c.heartbeat.max_misses = 3;
    let h = TestHost::start_with(c, dir).await;
    let id = h.start_kernel(None).await;
    // Frozen before it is ready, it would be left to `ready_timeout` (60 s): not this test.
    h.wait_idle(&id).await;
    let mut ws = ws_connect(&h.ws_url(&id, true), false, None).await.unwrap();
    let pid = h.host.shared.registry.get(&id).unwrap().pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    wait_status(&mut ws, false, "restarting", T).await;
    wait_status(&mut ws, false, "idle", T).await;
    assert!(
        !kernelgate_host::provision::process_alive(pid),
        "the hung process was killed"
    );
    let (_, r, _) = execute(&mut ws, false, "2 + 2").await;
    assert_eq!(r, "4");
    h.stop().await;
}

/// A kernel that answers heartbeats but never kernel_info, then freezes, is found hung by its
/// heartbeat, not left to the (here 60 s) start-up timeout. The "kernel" is a shell that copies
/// its connection file for the test and sleeps; the test answers its heartbeat port itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_freezing_before_it_is_ready_is_detected_by_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let drop_box = dir.path().join("connection-files");
    std::fs::create_dir(&drop_box).unwrap();
    let mut c = config(dir.path());
    // Copied, then renamed: the test never reads a half-written file.
    let script = "cp \"$1\" \"$0/.part\" && mv \"$0/.part\" \"$0/connection.json\"; exec sleep 600";
    c.add_specs(&spec_dir(
        dir.path(),
        "half-started",
        json!(["sh", "-c", script, drop_box, "{connection_file}"]),
    ));
    c.heartbeat.interval = Duration::from_millis(200);
    c.heartbeat.max_misses = 3;
    c.ready_timeout = Duration::from_secs(60);
    c.post_wait = Duration::from_millis(100);
    let h = TestHost::start_with(c, dir).await;
    let id = h.start_kernel(Some("half-started")).await;

    let deadline = std::time::Instant::now() + T;
    let file = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the kernel never started"
        );
        let f = drop_box.join("connection.json");
        if f.exists() {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let info: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let hb_port = info["hb_port"].as_u64().unwrap();
    // Answer pings for a second, then freeze (the socket closes: pings go unanswered).
    tokio::task::spawn_blocking(move || {
        let ctx = kernelgate_zmq::Context::new().unwrap();
        let rep = ctx.socket(kernelgate_zmq::SocketType::Rep).unwrap();
        rep.set_rcvtimeo(Some(Duration::from_millis(100))).unwrap();
        rep.set_linger(Some(Duration::ZERO)).unwrap();
        rep.bind(&format!("tcp://127.0.0.1:{hb_port}")).unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(1);
        let mut answered = 0;
        while std::time::Instant::now() < until {
            if let Ok(ping) = rep.recv_multipart(false) {
                rep.send_multipart(&ping, false).unwrap();
                answered += 1;
            }
        }
        assert!(answered >= 2, "the host sent {answered} pings in a second");
    })
    .await
    .unwrap();

    // Found hung (3 misses of 200 ms) and restarted, long before the 60 s start-up timeout.
    let restarted = |m: &Value| m["restarts"].as_u64().unwrap_or(0) >= 1;
    h.wait_model(
        &id,
        Duration::from_secs(10),
        "restarted after it froze",
        restarted,
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_crash_readopts_and_stop_leaves_nothing() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state_file = dir.path().join("state.json");
    let runtime = dir.path().join("runtime");
    // The first host is a real `kernelgate serve` process, so it can be killed with -9.
    let mut serve = std::process::Command::new(kernelgate_bin())
        .args(["serve", "--port", "0", "--kernel-dirs", "/nonexistent"])
        .arg("--state-file")
        .arg(&state_file)
        .arg("--token-file")
        .arg(&token_file)
        .env("JUPYTER_RUNTIME_DIR", &runtime)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().split("/?token=").next().unwrap().to_owned();
    let auth = "token 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (s, m) = http(
            "POST",
            &format!("{base}/api/kernels"),
            Some(auth),
            None,
            &[],
        )
        .await;
        assert_eq!(s, 201, "{m}");
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(800)).await; // state file written (debounced)
    let state = kernelgate_host::state::HostState::read(&state_file).expect("state file");
    assert_eq!(state.kernels.len(), 2);
    serve.kill().unwrap(); // SIGKILL: a crash
    serve.wait().unwrap();
    // Kernel b dies while the host is away.
    let rec_b = state.kernels.iter().find(|k| k.id == ids[1]).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(rec_b.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let h2 = TestHost::start(|c| {
        c.state_file = Some(state_file.clone());
        c.provision.runtime_dir = runtime.clone();
    })
    .await;
    let (_, list) = h2.req("GET", "/api/kernels", None).await;
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        vec![a.as_str()],
        "live kernel re-adopted under its id, dead one ({b}) dropped"
    );
    assert!(
        !runtime.join(format!("kernel-{b}.json")).exists(),
        "dead kernel's connection file cleaned up"
    );
    let mut ws = ws_connect(&h2.ws_url(&a, true), true, None).await.unwrap();
    let (_, r, _) = execute(&mut ws, true, "3 * 3").await;
    assert_eq!(r, "9");
    let pid_a = h2.host.shared.registry.get(&a).unwrap().pid().unwrap();
    h2.stop().await;
    assert!(
        !kernelgate_host::provision::process_alive(pid_a),
        "kernel stopped with the host"
    );
    assert!(!state_file.exists(), "state file removed");
    let left: Vec<_> = std::fs::read_dir(&runtime)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "no connection file left: {left:?}");
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
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /api HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)).await,
        "a connection with unfinished headers stays open"
    );
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
