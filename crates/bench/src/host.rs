//! `host`: speed and scale of `kernelgate serve` (issue 4, "Speed and scale").
//!
//! - Execute round trip ("1+1", `execute_request` -> `execute_reply`) over the WebSocket (legacy
//!   JSON protocol) through `kernelgate serve` to a built-in kernel; against the same through
//!   jupyter_server to an ipykernel (`python/peers/bench_host.py`, websocket-client); and against
//!   our direct ZeroMQ client (`BlockingKernelClient`) to a built-in kernel, the floor. The
//!   `rtt-quickack` rows repeat both WebSocket cases with TCP_QUICKACK set on the client socket
//!   before every read: a diagnostic that removes the ~40 ms a server without TCP_NODELAY loses to
//!   the client's delayed ACK (Nagle) on every multi-frame reply.
//! - Scale: N built-in kernels started through `POST /api/kernels` (N = 10, 100, and 1000 with
//!   `--max-kernels 1000`): time until all report `execution_state: idle`, host CPU while they sit
//!   idle, RSS of the host and per kernel; the anchor is jupyter_server with 8 ipykernels.
//!
//! The token is written to an owner-only file for `--token-file` (and, for jupyter_server, passed
//! in the environment as `JUPYTER_TOKEN`); it is never on a command line.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use kernelgate_client::{BlockingKernelClient, Channel, ClientConfig};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::procs::{kernelgate_binary, start_builtin_kernel, vmrss_mib, Child};
use crate::python::Python;

/// Options of `kernelgate-bench host`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Largest N of the scale cases (10, 100, 1000 up to this).
    #[arg(long, default_value_t = 100)]
    max_kernels: usize,
    /// Timed round trips per client.
    #[arg(long, default_value_t = 500)]
    rounds: usize,
    /// Untimed round trips first.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Seconds the kernels sit idle while the host's CPU time is measured.
    #[arg(long, default_value_t = 5.0)]
    idle_secs: f64,
    /// Kernels of the jupyter_server anchor.
    #[arg(long, default_value_t = 8)]
    peer_kernels: usize,
}

/// One result row: our figure, the comparison figure, and how the ratio reads.
#[derive(Debug, Clone)]
struct Case {
    case: String,
    unit: &'static str,
    ours: f64,
    peer_name: Option<String>,
    peer: Option<f64>,
    /// `true`: ratio = peer / ours (ours is smaller-is-better, ratio is "x better");
    /// `false`: ratio = ours / peer (an overhead factor over a floor).
    ratio_peer_over_ours: bool,
    target: Option<String>,
    met: Option<bool>,
}

impl Case {
    fn new(case: String, unit: &'static str, ours: f64) -> Case {
        Case {
            case,
            unit,
            ours,
            peer_name: None,
            peer: None,
            ratio_peer_over_ours: true,
            target: None,
            met: None,
        }
    }
    fn peer(mut self, name: &str, v: Option<f64>) -> Case {
        self.peer_name = Some(name.to_owned());
        self.peer = v;
        self
    }
    fn overhead(mut self) -> Case {
        self.ratio_peer_over_ours = false;
        self
    }
    fn target(mut self, text: &str, met: bool) -> Case {
        self.target = Some(text.to_owned());
        self.met = Some(met);
        self
    }
    fn ratio(&self) -> Option<f64> {
        let p = self.peer.filter(|p| *p > 0.0 && p.is_finite())?;
        if self.ours <= 0.0 {
            return None;
        }
        Some(if self.ratio_peer_over_ours {
            p / self.ours
        } else {
            self.ours / p
        })
    }
}

/// Runs the benchmark and prints the table (or JSON lines).
pub fn run(args: &Args, python: &Python, json_out: bool) -> Result<()> {
    let bin = kernelgate_binary(None)?;
    let dir = TempDir::new()?;
    let mut cases = Vec::new();

    // The floor: our direct ZeroMQ client to a built-in kernel (outside any async runtime).
    let floor = floor_rtt(&bin, dir.path(), args)?;

    // The peer: jupyter_server + ipykernel, round trips and the N = 8 anchor.
    let peer = run_peer(python, args)?;
    let pget = |case: &str, key: &str| -> Option<f64> {
        peer.iter()
            .find(|v| v["case"] == case)
            .and_then(|v| v[key].as_f64())
    };
    let js = format!(
        "jupyter_server {}",
        peer.iter()
            .find_map(|v| v["jupyter_server"].as_str())
            .unwrap_or("?")
    );

    // Ours: kernelgate serve.
    let host = Host::start(&bin, dir.path())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ws, wsq) = rt.block_on(ws_rtt(&host, args))?;

    let (wm, wp) = (pct(&ws, 0.5), pct(&ws, 0.99));
    let (fm, fp) = (pct(&floor, 0.5), pct(&floor, 0.99));
    let jm = pget("rtt", "median_us");
    let jp = pget("rtt", "p99_us");
    cases.push(
        Case::new(
            "rtt/ws kernelgate vs jupyter_server (median)".into(),
            "us",
            wm,
        )
        .peer(&js, jm)
        .target(">= 10x", jm.is_some_and(|j| j / wm >= 10.0)),
    );
    cases.push(
        Case::new("rtt/ws kernelgate vs jupyter_server (p99)".into(), "us", wp).peer(&js, jp),
    );
    cases.push(
        Case::new("rtt/ws kernelgate vs zmq direct (median)".into(), "us", wm)
            .peer("zmq direct (floor)", Some(fm))
            .overhead()
            .target("<= 1.5x", wm / fm <= 1.5),
    );
    cases.push(
        Case::new("rtt/ws kernelgate vs zmq direct (p99)".into(), "us", wp)
            .peer("zmq direct (floor)", Some(fp))
            .overhead(),
    );
    // Diagnostic: the same with TCP_QUICKACK on the client socket, which takes the ~40 ms of
    // delayed ACK x Nagle (a server socket without TCP_NODELAY) out of each round trip.
    let (qm, qp) = (pct(&wsq, 0.5), pct(&wsq, 0.99));
    let (jqm, jqp) = (
        pget("rtt_quickack", "median_us"),
        pget("rtt_quickack", "p99_us"),
    );
    cases.push(
        Case::new(
            "rtt-quickack/ws vs jupyter_server (median)".into(),
            "us",
            qm,
        )
        .peer(&js, jqm)
        .target(">= 10x", jqm.is_some_and(|j| j / qm >= 10.0)),
    );
    cases
        .push(Case::new("rtt-quickack/ws vs jupyter_server (p99)".into(), "us", qp).peer(&js, jqp));
    cases.push(
        Case::new("rtt-quickack/ws vs zmq direct (median)".into(), "us", qm)
            .peer("zmq direct (floor)", Some(fm))
            .overhead()
            .target("<= 1.5x", qm / fm <= 1.5),
    );
    cases.push(
        Case::new("rtt-quickack/ws vs zmq direct (p99)".into(), "us", qp)
            .peer("zmq direct (floor)", Some(fp))
            .overhead(),
    );

    let pn = args.peer_kernels;
    let anchor = format!("{js} + ipykernel, N={pn}");
    for n in [10usize, 100, 1000]
        .into_iter()
        .filter(|n| *n <= args.max_kernels.max(10))
    {
        let s = rt.block_on(scale(&host, n, args))?;
        let ready = Case::new(format!("scale/N={n} ready (all idle)"), "ms", s.ready_ms)
            .peer(&anchor, pget("scale", "ready_ms"));
        cases.push(if n == 1000 {
            ready.target("< 10000 ms", s.ready_ms < 10_000.0)
        } else {
            ready
        });
        cases.push(
            Case::new(
                format!("scale/N={n} host idle CPU"),
                "% core",
                s.host_cpu_pct,
            )
            .peer(&anchor, pget("scale", "server_cpu_pct"))
            .target("< 2%", s.host_cpu_pct < 2.0),
        );
        cases.push(
            Case::new(
                format!("scale/N={n} kernels idle CPU (sum)"),
                "% core",
                s.kernels_cpu_pct,
            )
            .peer(&anchor, pget("scale", "kernels_cpu_pct")),
        );
        cases.push(
            Case::new(format!("scale/N={n} host RSS"), "MiB", s.host_rss_mib)
                .peer(&anchor, pget("scale", "server_rss_mib")),
        );
        cases.push(
            Case::new(
                format!("scale/N={n} RSS per kernel"),
                "MiB",
                s.per_kernel_rss_mib,
            )
            .peer(&anchor, pget("scale", "per_kernel_rss_mib")),
        );
        cases.push(
            Case::new(format!("scale/N={n} delete all"), "ms", s.delete_ms)
                .peer(&anchor, pget("scale", "delete_ms")),
        );
    }
    drop(rt);
    host.stop();

    print(&cases, json_out, args, ws.len(), floor.len());
    Ok(())
}

fn print(cases: &[Case], json_out: bool, args: &Args, ws_n: usize, floor_n: usize) {
    if json_out {
        for c in cases {
            println!(
                "{}",
                json!({"case": c.case, "unit": c.unit, "ours": c.ours, "peer": c.peer_name, "peer_value": c.peer,
                       "ratio": c.ratio(), "ratio_is": if c.ratio_peer_over_ours { "peer/ours" } else { "ours/peer" },
                       "target": c.target, "met": c.met})
            );
        }
        return;
    }
    println!(
        "round trips: execute_request \"1+1\" -> execute_reply, {} timed after {} warm-up (ws {ws_n}, zmq {floor_n}); \
         ratio = peer/ours (x faster or smaller) except vs zmq direct: ours/floor (overhead)",
        args.rounds, args.warmup
    );
    println!(
        "{:<44} {:>16} {:>42} {:>9}  target",
        "case", "ours", "peer", "ratio"
    );
    for c in cases {
        let ours = format!("{} {}", fmt(c.ours), c.unit);
        let peer = match (&c.peer_name, c.peer) {
            (Some(n), Some(v)) => format!("{} ({n})", fmt(v)),
            (Some(n), None) => format!("- ({n})"),
            _ => "-".into(),
        };
        let ratio = c.ratio().map_or("-".into(), |r| format!("{r:.2}x"));
        let target = match (&c.target, c.met) {
            (Some(t), Some(m)) => format!("{t} {}", if m { "met" } else { "MISSED" }),
            _ => String::new(),
        };
        println!(
            "{:<44} {:>16} {:>42} {:>9}  {target}",
            c.case, ours, peer, ratio
        );
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn pct(samples: &[f64], q: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i.min(v.len() - 1)).copied().unwrap_or(f64::NAN)
}

/// A private temporary directory (0700), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "kernelgate-bench-host-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700))?;
        Ok(TempDir(p))
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// 256 random bits as hex, from the OS.
fn random_token() -> Result<String> {
    let mut b = [0u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

// ---------------------------------------------------------------------------------------------
// The floor: direct ZeroMQ.

fn floor_rtt(bin: &Path, dir: &Path, args: &Args) -> Result<Vec<f64>> {
    let file = dir.join("floor.json");
    let kernel = start_builtin_kernel(bin, &file)?;
    let mut client = BlockingKernelClient::from_file(&file, ClientConfig::default())?;
    client.wait_for_ready(Duration::from_secs(30))?;
    let execute = execute_content();
    let mut out = Vec::with_capacity(args.rounds);
    for i in 0..args.warmup + args.rounds {
        let t = Instant::now();
        let r = client.request(Channel::Shell, "execute_request", execute.clone())?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        if r.content.get("status").and_then(Value::as_str) != Some("ok") {
            bail!("floor: execute_reply status {:?}", r.content.get("status"));
        }
        if i >= args.warmup {
            out.push(us);
        }
    }
    drop(client);
    drop(kernel);
    Ok(out)
}

fn execute_content() -> Value {
    json!({"code": "1+1", "silent": false, "store_history": true, "user_expressions": {},
           "allow_stdin": false, "stop_on_error": true})
}

// ---------------------------------------------------------------------------------------------
// The peer.

fn run_peer(python: &Python, args: &Args) -> Result<Vec<Value>> {
    let out = python.run_peer(
        "bench_host.py",
        &[
            "--rounds".into(),
            args.rounds.to_string(),
            "--warmup".into(),
            args.warmup.to_string(),
            "--kernels".into(),
            args.peer_kernels.to_string(),
            "--idle-secs".into(),
            args.idle_secs.to_string(),
        ],
    )?;
    if !out.iter().any(|v| v["case"] == "rtt") || !out.iter().any(|v| v["case"] == "scale") {
        bail!("python/peers/bench_host.py printed no rtt/scale result: {out:?}");
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Ours: kernelgate serve.

struct Host {
    proc: Child,
    /// `host:port`
    addr: String,
    token: String,
}

impl Host {
    fn start(bin: &Path, dir: &Path) -> Result<Host> {
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

    fn stop(self) {
        drop(self.proc);
    }

    async fn http(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
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

    async fn start_kernel(&self) -> Result<String> {
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
    loop {
        if quickack {
            // Linux clears TCP_QUICKACK after use: set it before every read.
            socket2::SockRef::from(ws.get_ref()).set_tcp_quickack(true)?;
        }
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| anyhow!("no {reply_type} within 30 s"))?
            .ok_or_else(|| anyhow!("WebSocket closed"))??;
        let WsMessage::Text(t) = frame else { continue };
        let v: Value = serde_json::from_str(t.as_str())?;
        let field = |ptr: &str| v.pointer(ptr).and_then(Value::as_str);
        if field("/channel") == Some("shell")
            && field("/parent_header/msg_id") == Some(id.as_str())
            && field("/header/msg_type") == Some(reply_type.as_str())
        {
            return Ok(v);
        }
    }
}

/// (plain round trips, round trips with TCP_QUICKACK on the client socket).
async fn ws_rtt(host: &Host, args: &Args) -> Result<(Vec<f64>, Vec<f64>)> {
    let id = host.start_kernel().await?;
    let url = format!(
        "ws://{}/api/kernels/{id}/channels?session_id=bench",
        host.addr
    );
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Authorization", format!("token {}", host.token).parse()?);
    // TCP_NODELAY on our side (as websocket-client does): without it Nagle holds a frame's second
    // write until the peer's delayed ACK, ~40 ms per round trip.
    let tcp = tokio::net::TcpStream::connect(&host.addr).await?;
    tcp.set_nodelay(true)?;
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .context("WebSocket connect to kernelgate serve")?;
    let mut seq = 0;
    // Ready: the first kernel_info reply (retried while the kernel starts).
    let t0 = Instant::now();
    loop {
        match ws_request(&mut ws, &mut seq, "kernel_info_request", &json!({}), false).await {
            Ok(_) => break,
            Err(e) if t0.elapsed() < Duration::from_secs(30) => {
                let _ = e;
            }
            Err(e) => {
                return Err(e.context("kernel through kernelgate serve never answered kernel_info"))
            }
        }
    }
    let execute = execute_content();
    let mut out = Vec::with_capacity(args.rounds);
    let mut quick = Vec::with_capacity(args.rounds);
    for quickack in [false, true] {
        for i in 0..args.warmup + args.rounds {
            let t = Instant::now();
            let r = ws_request(&mut ws, &mut seq, "execute_request", &execute, quickack).await?;
            let us = t.elapsed().as_secs_f64() * 1e6;
            if r.pointer("/content/status").and_then(Value::as_str) != Some("ok") {
                bail!(
                    "ws: execute_reply {}",
                    r.get("content").unwrap_or(&Value::Null)
                );
            }
            if i >= args.warmup {
                if quickack { &mut quick } else { &mut out }.push(us);
            }
        }
    }
    let _ = ws.close(None).await;
    let (st, v) = host
        .http("DELETE", &format!("/api/kernels/{id}"), None)
        .await?;
    if st / 100 != 2 {
        bail!("DELETE kernel: {st} {v}");
    }
    Ok((out, quick))
}

struct Scale {
    ready_ms: f64,
    host_cpu_pct: f64,
    kernels_cpu_pct: f64,
    host_rss_mib: f64,
    per_kernel_rss_mib: f64,
    delete_ms: f64,
}

/// Requests in flight at once when starting or deleting many kernels.
const CONCURRENCY: usize = 32;

async fn scale(host: &Host, n: usize, args: &Args) -> Result<Scale> {
    let pid = host.proc.pid();
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let k = left.min(CONCURRENCY);
        let batch = futures_util::future::join_all((0..k).map(|_| host.start_kernel())).await;
        for r in batch {
            ids.push(r?);
        }
        left -= k;
    }
    // Poll until every one of ours is idle.
    loop {
        let (st, v) = host.http("GET", "/api/kernels", None).await?;
        if st != 200 {
            bail!("GET /api/kernels: {st} {v}");
        }
        let list = v.as_array().cloned().unwrap_or_default();
        let idle = list
            .iter()
            .filter(|k| ids.iter().any(|i| k["id"] == i.as_str()) && k["execution_state"] == "idle")
            .count();
        if idle == n {
            break;
        }
        if let Some(dead) = list.iter().find(|k| k["execution_state"] == "dead") {
            bail!("a kernel died while starting: {dead}");
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("only {idle} of {n} kernels idle after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_ms = t0.elapsed().as_secs_f64() * 1e3;

    // Let start-up work settle, then measure CPU over the idle window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kids = children(pid);
    let hz = clk_tck();
    let (h0, k0) = (
        cpu_ticks(pid),
        kids.iter().map(|k| cpu_ticks(*k)).sum::<u64>(),
    );
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
    let wall = w0.elapsed().as_secs_f64();
    let (h1, k1) = (
        cpu_ticks(pid),
        kids.iter().map(|k| cpu_ticks(*k)).sum::<u64>(),
    );
    let host_cpu_pct = (h1.saturating_sub(h0)) as f64 / hz / wall * 100.0;
    let kernels_cpu_pct = (k1.saturating_sub(k0)) as f64 / hz / wall * 100.0;
    let host_rss_mib = rss_mib(pid);
    let kids = children(pid);
    let per_kernel_rss_mib = if kids.is_empty() {
        f64::NAN
    } else {
        kids.iter().map(|k| rss_mib(*k)).sum::<f64>() / kids.len() as f64
    };
    if kids.len() != n {
        eprintln!(
            "kernelgate-bench: note: {} kernel processes under the host for N={n}",
            kids.len()
        );
    }

    let t1 = Instant::now();
    for chunk in ids.chunks(CONCURRENCY) {
        let rs = futures_util::future::join_all(chunk.iter().map(|id| async move {
            host.http("DELETE", &format!("/api/kernels/{id}"), None)
                .await
        }))
        .await;
        for r in rs {
            let (st, v) = r?;
            if st / 100 != 2 {
                bail!("DELETE kernel: {st} {v}");
            }
        }
    }
    // Until the kernel processes are gone.
    while !children(pid).is_empty() && t1.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delete_ms = t1.elapsed().as_secs_f64() * 1e3;
    Ok(Scale {
        ready_ms,
        host_cpu_pct,
        kernels_cpu_pct,
        host_rss_mib,
        per_kernel_rss_mib,
        delete_ms,
    })
}

// ---------------------------------------------------------------------------------------------
// /proc.

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = s.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    // After ')': state(0) ppid(1) ... utime(11) stime(12).
    stat_fields(pid)
        .map(|f| {
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .unwrap_or(0)
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(f) = stat_fields(p) {
            // Zombies (state Z) are not kernels any more.
            if f.get(1).and_then(|v| v.parse::<u32>().ok()) == Some(pid)
                && f.first().map(String::as_str) != Some("Z")
            {
                out.push(p);
            }
        }
    }
    out
}

/// Resident memory in MiB, 0 for a process that is gone.
fn rss_mib(pid: u32) -> f64 {
    vmrss_mib(pid).unwrap_or(0.0)
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}
