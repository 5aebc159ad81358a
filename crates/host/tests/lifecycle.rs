//! Host integration tests: the REST lifecycle, faults (kill -9, death at start, hangs),
//! shutdown escalation and culling (crash recovery: `recovery.rs`).
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
use serde_json::{json, Value};

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
    // The model follows IOPub in its own task: it may read busy for a moment after the
    // WebSocket has delivered idle.
    h.wait_idle(&id).await;
    let (_, m) = h.req("GET", &format!("/api/kernels/{id}"), None).await;
    assert_eq!(m["restarts"], 1);
    h.stop().await;
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

/// Sends `code` for execution and waits until the kernel has started running it (its busy
/// status or execute_input arrived); returns the request's msg_id.
async fn start_running(ws: &mut Ws, code: &str) -> String {
    let id = send(
        ws,
        true,
        "shell",
        "execute_request",
        json!({"code": code, "silent": false, "store_history": false, "user_expressions": {}, "allow_stdin": false}),
        &[],
    )
    .await;
    loop {
        let Some((ch, m, _)) = recv(ws, true, T).await else {
            panic!("the cell never started")
        };
        let started =
            m["header"]["msg_type"] == "execute_input" || m["content"]["execution_state"] == "busy";
        if ch == "iopub" && m["parent_header"]["msg_id"] == id.as_str() && started {
            return id;
        }
    }
}

/// The execute_reply to `id`.
async fn reply_to(ws: &mut Ws, id: &str) -> Value {
    loop {
        let Some((ch, m, _)) = recv(ws, true, T).await else {
            panic!("no execute_reply in time")
        };
        if ch == "shell" && m["parent_header"]["msg_id"] == id {
            return m["content"].clone();
        }
    }
}

/// `POST .../interrupt` stops a cell that would otherwise run for a long time, by signal (the
/// built-in kernelspec) and by interrupt_request (a spec saying `interrupt_mode: message`); the
/// model says busy while it runs, and the kernel executes again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_stops_a_running_cell_by_signal_and_by_message() {
    let h = TestHost::start(|c| {
        let mut by_message = c.specs["rhai"].clone();
        by_message.name = "rhai-message".into();
        by_message.spec.interrupt_mode = kernelgate_wire::InterruptMode::Message;
        c.specs.insert(by_message.name.clone(), by_message);
    })
    .await;
    for spec in ["rhai", "rhai-message"] {
        let id = h.start_kernel(Some(spec)).await;
        h.wait_idle(&id).await;
        let mut ws = ws_connect(&h.ws_url(&id, true), true, None).await.unwrap();
        let cell = start_running(&mut ws, "let n = 0; loop { n += 1; }").await;
        h.wait_model(&id, T, "busy", |m| m["execution_state"] == "busy")
            .await;
        let (s, e) = h
            .req("POST", &format!("/api/kernels/{id}/interrupt"), None)
            .await;
        assert_eq!(s, 204, "{spec}: {e}");
        let reply = reply_to(&mut ws, &cell).await;
        assert_eq!(reply["status"], "error", "{spec}: {reply}");
        assert_eq!(reply["ename"], "Interrupted", "{spec}: {reply}");
        let (_, r, status) = execute(&mut ws, true, "1 + 2").await;
        assert_eq!((r.as_str(), status.as_str()), ("3", "ok"), "{spec}");
        h.wait_idle(&id).await;
    }
    h.stop().await;
}

/// A kernel that ignores both shutdown_request and SIGTERM is killed: DELETE sends SIGTERM
/// after the request wait (the kernel's trap records it) and SIGKILL after the term wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_escalates_to_sigterm_then_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("signals.log");
    let mut c = config(dir.path());
    let script = "trap 'echo TERM >> \"$0\"' TERM; while :; do sleep 0.05; done";
    c.add_specs(&spec_dir(
        dir.path(),
        "stubborn",
        json!(["sh", "-c", script, log, "{connection_file}"]),
    ));
    c.shutdown.request_wait = Duration::from_millis(300);
    c.shutdown.term_wait = Duration::from_millis(500);
    c.post_wait = Duration::from_millis(100);
    let h = TestHost::start_with(c, dir).await;
    let id = h.start_kernel(Some("stubborn")).await;
    let kernel = h.host.shared.registry.get(&id).unwrap();
    let deadline = std::time::Instant::now() + T;
    let pid = loop {
        if let Some(pid) = kernel.pid() {
            break pid;
        }
        assert!(std::time::Instant::now() < deadline, "never launched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The trap is set once the shell runs its loop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, _) = h.req("DELETE", &format!("/api/kernels/{id}"), None).await;
    assert_eq!(s, 204);
    assert!(
        !kernelgate_host::provision::process_alive(pid),
        "the kernel survived DELETE"
    );
    let signals = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        signals.contains("TERM"),
        "SIGTERM came before SIGKILL: {signals:?}"
    );
    assert!(
        processes_with(&log.display().to_string()).is_empty(),
        "nothing of the kernel's process group is left"
    );
    h.stop().await;
}

/// Restarts that keep failing end in `dead`, which connected clients are told; a user restart
/// of a dead kernel brings it back once it can start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_told_dead_and_a_dead_kernel_can_be_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started-once");
    let mut c = config(dir.path());
    // Starts the built-in kernel the first time, exits at once while the marker exists.
    let script = "[ -e \"$0\" ] && exit 3; touch \"$0\"; exec \"$1\" kernel -f \"$2\"";
    c.add_specs(&spec_dir(
        dir.path(),
        "once",
        json!([
            "sh",
            "-c",
            script,
            marker,
            kernelgate_bin(),
            "{connection_file}"
        ]),
    ));
    c.restart.limit = 2;
    let h = TestHost::start_with(c, dir).await;
    let id = h.start_kernel(Some("once")).await;
    h.wait_idle(&id).await;
    let mut ws = ws_connect(&h.ws_url(&id, true), true, None).await.unwrap();
    let pid = h.host.shared.registry.get(&id).unwrap().pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let seen = wait_status(&mut ws, true, "dead", T).await;
    assert_eq!(
        seen.first().map(String::as_str),
        Some("restarting"),
        "{seen:?}"
    );
    let (_, m) = h.req("GET", &format!("/api/kernels/{id}"), None).await;
    assert_eq!(m["execution_state"], "dead", "{m}");

    std::fs::remove_file(&marker).unwrap();
    let (s, m) = h
        .req("POST", &format!("/api/kernels/{id}/restart"), None)
        .await;
    assert_eq!(s, 200, "{m}");
    h.wait_idle(&id).await;
    let (_, r, _) = execute(&mut ws, true, "6 * 7").await;
    assert_eq!(r, "42", "the same WebSocket reaches the revived kernel");
    h.stop().await;
}

/// With culling on, an idle kernel nobody is connected to is shut down after the timeout; one
/// with an open WebSocket is kept (cull_connected is off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kernels_are_culled_and_connected_ones_kept() {
    let h = TestHost::start(|c| {
        c.cull.idle_timeout = Some(Duration::from_secs(1));
        c.cull.interval = Duration::from_millis(200);
    })
    .await;
    let connected = h.start_kernel(None).await;
    let ws = ws_connect(&h.ws_url(&connected, true), true, None)
        .await
        .unwrap();
    let alone = h.start_kernel(None).await;
    let pid = h.host.shared.registry.get(&alone).unwrap().pid().unwrap();
    let deadline = std::time::Instant::now() + T;
    while h.host.shared.registry.get(&alone).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "idle kernel not culled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, _) = h.req("GET", &format!("/api/kernels/{alone}"), None).await;
    assert_eq!(s, 404);
    let gone = std::time::Instant::now() + T;
    while kernelgate_host::provision::process_alive(pid) {
        assert!(
            std::time::Instant::now() < gone,
            "culled kernel's process left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several culling rounds later the connected one is still there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, m) = h
        .req("GET", &format!("/api/kernels/{connected}"), None)
        .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["connections"], 1);
    drop(ws);
    h.stop().await;
}
