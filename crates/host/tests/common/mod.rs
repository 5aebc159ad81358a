//! Test harness: an in-process host on 127.0.0.1:0 running the real `kernelgate` binary's
//! built-in kernel, and a small WebSocket client. Every wait has a timeout.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kernelgate_host::auth::Token;
use kernelgate_host::{Host, HostConfig};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub const T: Duration = Duration::from_secs(20);

/// The `kernelgate` binary: $KERNELGATE_BIN, else next to this test's `deps` directory.
/// Build it first: `cargo build --bin kernelgate`.
pub fn kernelgate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KERNELGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("kernelgate");
    assert!(
        p.is_file(),
        "{} missing: run `cargo build --bin kernelgate` first (or set KERNELGATE_BIN)",
        p.display()
    );
    p
}

pub struct TestHost {
    pub host: Host,
    pub base: String,
    pub token: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn config(dir: &std::path::Path) -> HostConfig {
    let mut c = HostConfig::new(&kernelgate_bin(), dir.join("runtime"));
    c.state_file = Some(dir.join("state.json"));
    c.shutdown.request_wait = Duration::from_secs(2);
    c.shutdown.term_wait = Duration::from_secs(1);
    c.post_wait = Duration::from_secs(20);
    c
}

impl TestHost {
    pub async fn start(tweak: impl FnOnce(&mut HostConfig)) -> TestHost {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        tweak(&mut c);
        Self::start_with(c, dir).await
    }

    pub async fn start_with(c: HostConfig, dir: tempfile::TempDir) -> TestHost {
        let token = Token::generate().unwrap();
        let tok = token.expose().to_owned();
        let host = Host::new(c, token);
        host.recover().await.expect("the state file is usable");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = host.clone();
        let task = tokio::spawn(async move {
            let _ = h
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await;
        });
        TestHost {
            host,
            base,
            token: tok,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops serving and shuts every kernel down.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("host stops")
                .unwrap();
        }
    }

    pub async fn req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        http(
            method,
            &url,
            Some(&format!("token {}", self.token)),
            body.map(|b| b.to_string()),
            &[],
        )
        .await
    }

    pub async fn start_kernel(&self, name: Option<&str>) -> String {
        let body = name.map(|n| json!({ "name": n }));
        let (status, model) = self.req("POST", "/api/kernels", body).await;
        assert_eq!(status, 201, "{model}");
        model["id"].as_str().unwrap().to_owned()
    }

    /// Waits (at most [`T`]) until the kernel's model says idle.
    pub async fn wait_idle(&self, kernel: &str) {
        self.wait_model(kernel, T, "idle", |m| m["execution_state"] == "idle")
            .await;
    }

    /// Waits (at most `within`) until the kernel's model satisfies `done`; `what` names the
    /// condition when it fails.
    pub async fn wait_model(
        &self,
        kernel: &str,
        within: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let (_, m) = self
                .req("GET", &format!("/api/kernels/{kernel}"), None)
                .await;
            if done(&m) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kernel not {what} after {within:?}: {m}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn ws_url(&self, kernel: &str, with_token: bool) -> String {
        let base = self.base.replacen("http", "ws", 1);
        let tok = if with_token {
            format!("&token={}", self.token)
        } else {
            String::new()
        };
        format!("{base}/api/kernels/{kernel}/channels?session_id=test{tok}")
    }
}

/// A minimal HTTP/1.1 client over a TCP stream (no extra dependencies).
pub async fn http(
    method: &str,
    url: &str,
    authz: Option<&str>,
    body: Option<String>,
    extra: &[(&str, &str)],
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = tokio::time::timeout(T, tokio::net::TcpStream::connect(hostport))
        .await
        .unwrap()
        .unwrap();
    let body = body.unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(a) = authz {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .expect("http response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((len, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket; Err(status) when the upgrade is refused.
pub async fn ws_connect(url: &str, v1: bool, origin: Option<&str>) -> Result<Ws, u16> {
    let mut req = url.into_client_request().unwrap();
    if v1 {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "v1.kernel.websocket.jupyter.org".parse().unwrap(),
        );
    }
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tokio::time::timeout(T, tokio_tungstenite::connect_async(req))
        .await
        .expect("ws connect in time")
    {
        Ok((ws, resp)) => {
            let proto = resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                proto.as_deref() == Some("v1.kernel.websocket.jupyter.org"),
                v1
            );
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("ws connect: {e}"),
    }
}

pub fn header(msg_type: &str) -> Value {
    json!({
        "msg_id": uuid::Uuid::new_v4().to_string(),
        "msg_type": msg_type,
        "session": "test",
        "username": "test",
        "date": chrono::Utc::now().to_rfc3339(),
        "version": "5.4",
    })
}

pub fn encode_v1(channel: &str, parts: [&Value; 4], buffers: &[Vec<u8>]) -> Vec<u8> {
    let ws = kernelgate_wire::websocket::WsParts {
        channel: channel.into(),
        parts: parts.map(|v| serde_json::to_vec(v).unwrap()),
        buffers: buffers.to_vec(),
    };
    kernelgate_wire::websocket::encode_v1(&ws)
}

/// A message as (channel, whole JSON with header/parent_header/content, buffers).
pub fn decode(frame: WsMessage, v1: bool) -> Option<(String, Value, Vec<Vec<u8>>)> {
    match frame {
        WsMessage::Text(t) => {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            Some((v["channel"].as_str().unwrap().to_owned(), v, Vec::new()))
        }
        WsMessage::Binary(b) if v1 => {
            let p = kernelgate_wire::websocket::decode_v1(&b, 1024).unwrap();
            let j = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap();
            let v = json!({"header": j(&p.parts[0]), "parent_header": j(&p.parts[1]), "metadata": j(&p.parts[2]), "content": j(&p.parts[3])});
            Some((p.channel, v, p.buffers))
        }
        WsMessage::Binary(b) => {
            let (json, bufs) = kernelgate_wire::websocket::decode_legacy_binary(&b, 1024).unwrap();
            let v: Value = serde_json::from_slice(&json).unwrap();
            Some((v["channel"].as_str().unwrap().to_owned(), v, bufs))
        }
        _ => None,
    }
}

/// Sends a shell/control request; returns its msg_id.
pub async fn send(
    ws: &mut Ws,
    v1: bool,
    channel: &str,
    msg_type: &str,
    content: Value,
    buffers: &[Vec<u8>],
) -> String {
    let h = header(msg_type);
    let id = h["msg_id"].as_str().unwrap().to_owned();
    let frame = if v1 {
        WsMessage::Binary(
            encode_v1(channel, [&h, &json!({}), &json!({}), &content], buffers).into(),
        )
    } else {
        let m = json!({"channel": channel, "header": h, "parent_header": {}, "metadata": {}, "content": content});
        if buffers.is_empty() {
            WsMessage::Text(m.to_string().into())
        } else {
            WsMessage::Binary(
                kernelgate_wire::websocket::encode_legacy_binary(m.to_string().as_bytes(), buffers)
                    .into(),
            )
        }
    };
    ws.send(frame).await.unwrap();
    id
}

/// Receives the next message, or None on timeout/close.
pub async fn recv(
    ws: &mut Ws,
    v1: bool,
    timeout: Duration,
) -> Option<(String, Value, Vec<Vec<u8>>)> {
    loop {
        match tokio::time::timeout(timeout, ws.next()).await {
            Ok(Some(Ok(m))) => {
                if let Some(d) = decode(m, v1) {
                    return Some(d);
                }
            }
            _ => return None,
        }
    }
}

/// Runs `code`; returns (stdout, execute_result text/plain, reply status) once the kernel is idle
/// again after the reply.
pub async fn execute(ws: &mut Ws, v1: bool, code: &str) -> (String, String, String) {
    let id = send(ws, v1, "shell", "execute_request", json!({"code": code, "silent": false, "store_history": true, "user_expressions": {}, "allow_stdin": false}), &[]).await;
    let (mut out, mut result, mut status) = (String::new(), String::new(), String::new());
    let mut idle = false;
    let deadline = tokio::time::Instant::now() + T;
    while status.is_empty() || !idle {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((ch, m, _)) = recv(ws, v1, left).await else {
            panic!("no reply to execute in time (status {status:?}, idle {idle})")
        };
        if m["parent_header"]["msg_id"] != id.as_str() {
            continue;
        }
        match (ch.as_str(), m["header"]["msg_type"].as_str().unwrap()) {
            ("iopub", "stream") => out.push_str(m["content"]["text"].as_str().unwrap()),
            ("iopub", "execute_result") => {
                result = m["content"]["data"]["text/plain"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
            ("iopub", "status") if m["content"]["execution_state"] == "idle" => idle = true,
            ("shell", "execute_reply") => {
                status = m["content"]["status"].as_str().unwrap().to_owned()
            }
            _ => {}
        }
    }
    (out, result, status)
}

/// Waits for an iopub status with `state` (any parent), returning every state seen on the way.
pub async fn wait_status(ws: &mut Ws, v1: bool, state: &str, timeout: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some((ch, m, _)) = recv(ws, v1, left).await else {
            panic!("no {state} status in time; saw {seen:?}")
        };
        if ch == "iopub" && m["header"]["msg_type"] == "status" {
            let s = m["content"]["execution_state"].as_str().unwrap().to_owned();
            seen.push(s.clone());
            if s == state {
                return seen;
            }
        }
    }
}

/// Processes whose command line mentions `needle`.
pub fn processes_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
                .unwrap_or(false);
            if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// A kernelspec directory `root/kernels/NAME` with this argv, as the host loads specs.
pub fn spec_dir(
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

/// A child process killed and reaped when the test ends, also when an assertion fails first.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
