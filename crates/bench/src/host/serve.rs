//! Ours: a `kernelgate serve` child, its HTTP API and WebSocket round trips.

use std::borrow::Cow;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{execute_content, random_token};
use crate::procs::Child;

pub(super) struct Host {
    pub(super) proc: Child,
    /// `host:port`
    pub(super) addr: String,
    pub(super) token: String,
}

impl Host {
    pub(super) fn start(bin: &Path, dir: &Path, libzmq_relay: bool) -> Result<Host> {
        let token = random_token()?;
        let token_file = dir.join("token");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_file)?;
        f.write_all(token.as_bytes())?;
        drop(f);
        let specs = dir.join("kernelspecs");
        fs::create_dir_all(&specs)?;
        let child = Command::new(bin)
            .args(["serve", "--port", "0", "--log", "warn", "--no-recover"])
            .args(libzmq_relay.then_some("--no-zmtp-links"))
            .arg("--token-file")
            .arg(&token_file)
            .arg("--state-file")
            .arg(dir.join("state.json"))
            .arg("--kernel-dirs")
            .arg(&specs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} serve", bin.display()))?;
        let mut proc = Child(child);
        let stdout = proc.0.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        // http://127.0.0.1:PORT/?token=...
        let base = line.split("/?").next().unwrap_or("").trim().to_owned();
        let addr = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("kernelgate serve printed no URL (got {line:?})"))?
            .to_owned();
        Ok(Host { proc, addr, token })
    }

    pub(super) fn stop(self) {
        drop(self.proc);
    }

    pub(super) async fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&self.addr).await?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: token {}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(120), s.read_to_end(&mut out)).await??;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad HTTP response {text:?}"))?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    pub(super) async fn start_kernel(&self) -> Result<String> {
        let (st, v) = self
            .http("POST", "/api/kernels", Some(&json!({"name": "rhai"})))
            .await?;
        if st / 100 != 2 {
            bail!("POST /api/kernels: {st} {v}");
        }
        v.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("POST /api/kernels returned no id: {v}"))
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((len, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(after.get(..n).unwrap_or(""));
        rest = after.get(n + 2..).unwrap_or("");
    }
    out
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn ws_request(
    ws: &mut Ws,
    seq: &mut u64,
    msg_type: &str,
    content: &Value,
    quickack: bool,
) -> Result<Value> {
    *seq += 1;
    let id = format!("bench-{}-{seq}", std::process::id());
    let m = json!({"channel": "shell",
        "header": {"msg_id": id, "msg_type": msg_type, "session": "bench", "username": "bench", "version": "5.4"},
        "parent_header": {}, "metadata": {}, "content": content});
    ws.send(WsMessage::Text(m.to_string().into())).await?;
    let reply_type = msg_type.replace("_request", "_reply");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if quickack {
            // Linux clears TCP_QUICKACK after use: set it before every read.
            socket2::SockRef::from(ws.get_ref()).set_tcp_quickack(true)?;
        }
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("no {reply_type} within 30 s"))?
            .ok_or_else(|| anyhow!("WebSocket closed"))??;
        let WsMessage::Text(t) = frame else { continue };
        // Every message is parsed as JSON, but only into the fields that route it (as the
        // floor client, which leaves IOPub unread, never builds values it does not use);
        // the reply is then parsed whole.
        let r: Routing<'_> = serde_json::from_str(t.as_str())?;
        if r.channel == "shell"
            && r.parent_header.msg_id.as_deref() == Some(id.as_str())
            && r.header.msg_type == reply_type
        {
            return Ok(serde_json::from_str(t.as_str())?);
        }
    }
}

/// What a client reads of every message to route it.
#[derive(serde::Deserialize)]
struct Routing<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow)]
    header: RoutingHeader<'a>,
    #[serde(borrow)]
    parent_header: RoutingParent<'a>,
}

#[derive(serde::Deserialize)]
struct RoutingHeader<'a> {
    #[serde(borrow)]
    msg_type: Cow<'a, str>,
}

#[derive(serde::Deserialize)]
struct RoutingParent<'a> {
    #[serde(borrow, default)]
    msg_id: Option<Cow<'a, str>>,
}

/// A WebSocket client of one kernel started through `kernelgate serve`.
pub(super) struct WsClient {
    ws: Ws,
    seq: u64,
    kernel_id: String,
    execute: Value,
}

impl WsClient {
    /// Starts a kernel, connects to its channels and waits for its first kernel_info reply.
    pub(super) async fn connect(host: &Host) -> Result<WsClient> {
        let kernel_id = host.start_kernel().await?;
        let url = format!(
            "ws://{}/api/kernels/{kernel_id}/channels?session_id=bench",
            host.addr
        );
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("Authorization", format!("token {}", host.token).parse()?);
        // TCP_NODELAY on our side (as websocket-client does): without it Nagle holds a frame's
        // second write until the peer's delayed ACK, ~40 ms per round trip.
        let tcp = tokio::net::TcpStream::connect(&host.addr).await?;
        tcp.set_nodelay(true)?;
        let (ws, _) = tokio_tungstenite::client_async(req, tcp)
            .await
            .context("WebSocket connect to kernelgate serve")?;
        let mut client = WsClient {
            ws,
            seq: 0,
            kernel_id,
            execute: execute_content(),
        };
        // Ready: the first kernel_info reply (retried while the kernel starts).
        let t0 = Instant::now();
        loop {
            let info = ws_request(
                &mut client.ws,
                &mut client.seq,
                "kernel_info_request",
                &json!({}),
                false,
            )
            .await;
            match info {
                Ok(_) => return Ok(client),
                Err(_) if t0.elapsed() < Duration::from_secs(30) => {}
                Err(e) => {
                    return Err(
                        e.context("kernel through kernelgate serve never answered kernel_info")
                    )
                }
            }
        }
    }

    /// One execute round trip, in microseconds.
    pub(super) async fn round(&mut self, quickack: bool) -> Result<f64> {
        let t = Instant::now();
        let r = ws_request(
            &mut self.ws,
            &mut self.seq,
            "execute_request",
            &self.execute,
            quickack,
        )
        .await?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        if r.pointer("/content/status").and_then(Value::as_str) != Some("ok") {
            bail!(
                "ws: execute_reply {}",
                r.get("content").unwrap_or(&Value::Null)
            );
        }
        Ok(us)
    }

    /// Closes the WebSocket and deletes the kernel.
    pub(super) async fn close(mut self, host: &Host) -> Result<()> {
        let _ = self.ws.close(None).await;
        let (st, v) = host
            .http("DELETE", &format!("/api/kernels/{}", self.kernel_id), None)
            .await?;
        if st / 100 != 2 {
            bail!("DELETE kernel: {st} {v}");
        }
        Ok(())
    }
}
