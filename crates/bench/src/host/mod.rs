//! `host`: speed and scale of `kernelgate serve` (issue 4, "Speed and scale").
//!
//! - Execute round trip ("1+1", `execute_request` -> `execute_reply`) over the WebSocket (legacy
//!   JSON protocol) through `kernelgate serve` to a built-in kernel; against the same through
//!   jupyter_server to an ipykernel (`python/peers/bench_host.py`, websocket-client); and against
//!   our direct ZeroMQ client (`BlockingKernelClient`) to a built-in kernel, the floor. Ours and
//!   the floor take turns in blocks of rounds, so the machine's load weighs on both alike. The
//!   `rtt-quickack` rows repeat both WebSocket cases with TCP_QUICKACK set on the client socket
//!   before every read: a diagnostic that removes the ~40 ms a server without TCP_NODELAY loses to
//!   the client's delayed ACK (Nagle) on every multi-frame reply.
//! - Scale: N built-in kernels started through `POST /api/kernels` (N = 10, 100 and 1000;
//!   `--max-kernels 100` stops earlier): time until all report `execution_state: idle`, host CPU while they sit
//!   idle, RSS of the host and per kernel; the anchor is jupyter_server with 8 ipykernels.
//!
//! The token is written to an owner-only file for `--token-file` (and, for jupyter_server, passed
//! in the environment as `JUPYTER_TOKEN`); it is never on a command line.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kernelgate_client::{BlockingKernelClient, Channel};
use serde_json::{json, Value};

mod scale;
mod serve;

use scale::scale;
use serve::{Host, WsClient};

use crate::kernel::connected;
use crate::procs::{kernelgate_binary, start_builtin_kernel, Child};
use crate::python::Python;

/// Options of `kernelgate-bench host`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Largest N of the scale cases (10, 100, 1000 up to this).
    #[arg(long, default_value_t = 1000)]
    max_kernels: usize,
    /// Timed round trips per client.
    #[arg(long, default_value_t = 500)]
    rounds: usize,
    /// Untimed round trips first.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Seconds the kernels sit idle while the host's CPU time is measured (CPU time is
    /// counted in 10 ms ticks: 10 s resolves 0.1 % of a core).
    #[arg(long, default_value_t = 10.0)]
    idle_secs: f64,
    /// Kernels of the jupyter_server anchor.
    #[arg(long, default_value_t = 8)]
    peer_kernels: usize,
    /// Only the round trips of ours against the floor (no jupyter_server, no scale cases): a
    /// quick check while working on the relay.
    #[arg(long)]
    rtt_only: bool,
    /// Start the host with `--no-zmtp-links` (its libzmq relay), to compare the two.
    #[arg(long)]
    libzmq_relay: bool,
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

    // The peer: jupyter_server + ipykernel, round trips and the N = 8 anchor. It runs alone, so
    // its processes never compete with ours.
    let peer = if args.rtt_only {
        Vec::new()
    } else {
        run_peer(python, args)?
    };
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

    // Ours, kernelgate serve, and the floor, our direct ZeroMQ client to a built-in kernel
    // (outside any async runtime), measured in alternating blocks.
    let host = Host::start(&bin, dir.path(), args.libzmq_relay)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut floor_client = FloorClient::start(&bin, dir.path())?;
    let mut ws_client = rt.block_on(WsClient::connect(&host))?;
    let Rtt { floor, ws, wsq } = interleaved_rtt(&mut floor_client, &mut ws_client, &rt, args)?;
    drop(floor_client);
    rt.block_on(ws_client.close(&host))?;

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

    if args.rtt_only {
        drop(rt);
        host.stop();
        cases.retain(|c| c.peer_name.as_deref() == Some("zmq direct (floor)"));
        print(&cases, json_out, args, ws.len(), floor.len());
        return Ok(());
    }
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
// The floor, direct ZeroMQ, and the interleaving.

/// Our blocking ZeroMQ client of a built-in kernel of its own.
struct FloorClient {
    client: BlockingKernelClient,
    file: PathBuf,
    execute: Value,
    _kernel: Child,
}

impl FloorClient {
    fn start(bin: &Path, dir: &Path) -> Result<FloorClient> {
        let file = dir.join("floor.json");
        let kernel = start_builtin_kernel(bin, &file)?;
        Ok(FloorClient {
            client: connected(&file)?,
            file,
            execute: execute_content(),
            _kernel: kernel,
        })
    }

    /// A new client, with an empty IOPub queue. This client never reads IOPub: left alone, its
    /// SUB queue fills after about 250 requests and the kernel then drops its IOPub messages,
    /// which makes its round trips cheaper than the WebSocket's, whose relay reads them all.
    fn renew(&mut self) -> Result<()> {
        self.client = connected(&self.file)?;
        Ok(())
    }

    /// One execute round trip, in microseconds.
    fn round(&mut self) -> Result<f64> {
        let t = Instant::now();
        let r = self
            .client
            .request(Channel::Shell, "execute_request", self.execute.clone())?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        if r.content.get("status").and_then(Value::as_str) != Some("ok") {
            bail!("floor: execute_reply status {:?}", r.content.get("status"));
        }
        Ok(us)
    }
}

/// Round-trip samples in microseconds: the floor, the WebSocket, the WebSocket with QUICKACK.
struct Rtt {
    floor: Vec<f64>,
    ws: Vec<f64>,
    wsq: Vec<f64>,
}

/// Blocks the timed rounds are split into. The floor and the WebSocket take turns block by
/// block, so a neighbour's load on this shared machine weighs on both alike instead of on
/// whichever ran while it lasted.
const BLOCKS: usize = 10;

/// Untimed rounds of each new floor client (its connections are set up by the first).
const FLOOR_WARMUP: usize = 5;

fn interleaved_rtt(
    floor: &mut FloorClient,
    ws: &mut WsClient,
    rt: &tokio::runtime::Runtime,
    args: &Args,
) -> Result<Rtt> {
    for _ in 0..args.warmup {
        floor.round()?;
        rt.block_on(ws.round(false))?;
    }
    let mut out = Rtt {
        floor: Vec::with_capacity(args.rounds),
        ws: Vec::with_capacity(args.rounds),
        wsq: Vec::with_capacity(args.rounds),
    };
    for block in 0..BLOCKS {
        // Block sizes that add up to `rounds` exactly.
        let n = args.rounds * (block + 1) / BLOCKS - args.rounds * block / BLOCKS;
        floor.renew()?;
        for _ in 0..FLOOR_WARMUP {
            floor.round()?;
        }
        for _ in 0..n {
            out.floor.push(floor.round()?);
        }
        rt.block_on(async {
            for _ in 0..n {
                out.ws.push(ws.round(false).await?);
            }
            for _ in 0..n {
                out.wsq.push(ws.round(true).await?);
            }
            anyhow::Ok(())
        })?;
    }
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
