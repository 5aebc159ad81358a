//! `wire`: jupyter_client's `Session` against ours on the same message shapes.
//!
//! Shapes (the same in python/peers/bench_session.py): `small` (an execute_request with ~120 B of
//! content), `buf1m` (the same plus one 1 MiB buffer), `content64k` (~64 KiB of content).
//! Cases per shape:
//! - `sign`: build a new message (fresh header) and serialize + sign it into frames.
//! - `verify`: verify + deserialize distinct messages signed beforehand (outside the clock), with
//!   replay protection on for both: our exact history, jupyter_client's default digest history.
//!   Our received buffers are freed after the clock stops (the peer's all share one object).
//!
//! Both sides time batches of prepared work with a monotonic clock until `--seconds` of timed
//! work has accumulated, after one untimed warm-up batch. One thread: a single core's figure.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use kernelgate_wire::{Key, Message, ReplayConfig, Scheme, Session, SessionConfig, Signer};
use serde_json::{json, Map, Value};

use crate::python::Python;
use crate::report::{Report, Row};

/// Options of `wire`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seconds of timed work per case and side.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
}

/// The HMAC key both sides use (any key works; same length as the Python peer's).
const KEY: &[u8] = b"kernelgate-bench-key-0123456789abcdef";

/// The target for ours alone: verify + deserialize of a small message, per second, per core.
const VERIFY_TARGET_PER_S: f64 = 1_000_000.0;
/// The target ratio against jupyter_client for small messages.
const SMALL_MIN_RATIO: f64 = 20.0;

struct Shape {
    name: &'static str,
    content: Value,
    buffer_len: Option<usize>,
    batch: usize,
}

fn small_content() -> Value {
    json!({
        "code": "print('hello world')\n1 + 1",
        "silent": false,
        "store_history": true,
        "user_expressions": {},
        "allow_stdin": false,
        "stop_on_error": true,
    })
}

fn shapes() -> Vec<Shape> {
    let mut big = small_content();
    if let Some(code) = big.get_mut("code") {
        *code = Value::String(format!("x = 1  # {}\n", "y".repeat(64 * 1024 - 40)));
    }
    vec![
        Shape {
            name: "small",
            content: small_content(),
            buffer_len: None,
            batch: 256,
        },
        Shape {
            name: "buf1m",
            content: small_content(),
            buffer_len: Some(1 << 20),
            batch: 32,
        },
        Shape {
            name: "content64k",
            content: big,
            buffer_len: None,
            batch: 300,
        },
    ]
}

fn session(replay: Option<ReplayConfig>) -> Result<Session> {
    let signer = Signer::new(Scheme::Sha256, &Key::new(KEY))?;
    let config = SessionConfig {
        username: "bench".into(),
        replay,
        ..SessionConfig::default()
    };
    Ok(Session::new(signer, config))
}

/// Runs `run` on batches from `prepare` (untimed) until `seconds` of timed work; returns items/s.
/// What `run` returns is dropped after the clock stops.
fn timed<T, R>(
    seconds: f64,
    mut prepare: impl FnMut() -> Result<Vec<T>>,
    mut run: impl FnMut(Vec<T>) -> Result<R>,
) -> Result<f64> {
    drop(run(prepare()?)?); // warm-up
    let budget = Duration::from_secs_f64(seconds);
    let (mut spent, mut n) = (Duration::ZERO, 0usize);
    while spent < budget {
        let items = prepare()?;
        let len = items.len();
        let t0 = Instant::now();
        let kept = run(items)?;
        spent += t0.elapsed();
        drop(kept);
        n += len;
    }
    Ok(n as f64 / spent.as_secs_f64())
}

fn buffers(shape: &Shape, count: usize) -> Vec<Vec<Vec<u8>>> {
    (0..count)
        .map(|_| {
            shape
                .buffer_len
                .map(|n| vec![vec![0u8; n]])
                .unwrap_or_default()
        })
        .collect()
}

/// Ours: new message + serialize + sign. The content is handed over (moved) as a sender that built
/// it would: jupyter_client's `Session.msg` takes its content dict by reference, uncopied, so a
/// deep copy of the `Value` per message would time work neither real sender does. The copies are
/// made untimed, like the buffers.
fn ours_sign(shape: &Shape, seconds: f64) -> Result<f64> {
    let s = session(Some(ReplayConfig::default()))?;
    timed(
        seconds,
        || {
            Ok(buffers(shape, shape.batch)
                .into_iter()
                .map(|bufs| (shape.content.clone(), bufs))
                .collect())
        },
        |items| {
            for (content, bufs) in items {
                let msg = Message {
                    identities: Vec::new(),
                    header: s.header("execute_request"),
                    parent_header: None,
                    metadata: Map::new(),
                    content,
                    buffers: bufs,
                };
                black_box(s.encode_owned(msg)?);
            }
            Ok(())
        },
    )
}

/// Distinct signed messages of `shape`, from `sender`.
fn signed(sender: &Session, shape: &Shape) -> Result<Vec<Vec<Vec<u8>>>> {
    buffers(shape, shape.batch)
        .into_iter()
        .map(|bufs| {
            let mut msg = sender.message("execute_request", &shape.content, None)?;
            msg.buffers = bufs;
            Ok(sender.encode(&msg)?)
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// limits + layout + HMAC only (`Session::authenticate`).
    SignatureOnly,
    /// The whole receive pipeline with replay protection off.
    ReplayOff,
    /// The whole receive pipeline with the default replay protection.
    ReplayOn,
}

/// Ours: verify + deserialize messages signed beforehand.
fn ours_verify(shape: &Shape, seconds: f64, mode: Verify) -> Result<f64> {
    let sender = session(None)?;
    let replay = (mode == Verify::ReplayOn).then(ReplayConfig::default);
    let cap = ReplayConfig::default().max_entries;
    let mut receiver = session(replay)?;
    let mut prepare = || {
        // The history only grows within the bench's minutes (nothing expires yet); a real peer at
        // this rate would hit the cap too. Start a new session (untimed) before it is reached.
        if receiver.replay_history_len() + shape.batch > cap {
            receiver = session(replay)?;
        }
        signed(&sender, shape).map(|frames| (receiver.clone(), frames))
    };
    timed(
        seconds,
        || prepare().map(|p| vec![p]),
        |batches| {
            // The Python peer appends one shared `bytes` object as every message's buffer, so
            // dropping a message frees no buffer there. Ours each own a 1 MiB copy whose free is
            // an munmap: the buffers are kept and freed after the clock stops, so both sides
            // time verification and parsing, not the allocator. (Small messages have none.)
            let mut buffers = Vec::with_capacity(shape.batch);
            for (receiver, batch) in batches {
                for frames in batch {
                    match mode {
                        Verify::SignatureOnly => drop(black_box(receiver.authenticate(frames)?)),
                        _ => {
                            let mut msg = black_box(receiver.receive(frames)?).into_inner();
                            buffers.push(std::mem::take(&mut msg.buffers));
                        }
                    }
                }
            }
            Ok(buffers)
        },
    )
    .map(|batches_per_s| batches_per_s * shape.batch as f64)
}

fn peer_figure(peer: &[Value], case: &str) -> Result<f64> {
    peer.iter()
        .find(|v| v.get("case").and_then(Value::as_str) == Some(case))
        .and_then(|v| v.get("per_s"))
        .and_then(Value::as_f64)
        .ok_or_else(|| anyhow!("the Python peer printed no figure for {case}"))
}

/// Runs the `wire` benchmark.
pub fn run(args: &Args, python: &Python, report: &mut Report) -> Result<()> {
    if cfg!(debug_assertions) {
        report.note("warning: debug build; run with --release for meaningful figures");
    }
    report.note(&format!(
        "wire: jupyter_client {} ({}) vs kernelgate-wire, {}s of timed work per case and side, one thread",
        python.jupyter_client,
        python.path().display(),
        args.seconds
    ));
    // The peer runs first and alone, so the two never compete for the machine's cores.
    let peer = python
        .run_peer(
            "bench_session.py",
            &["--seconds".into(), args.seconds.to_string()],
        )
        .context("jupyter_client Session benchmark")?;
    let who = format!("jupyter_client {}", python.jupyter_client);
    for shape in shapes() {
        let min_ratio = (shape.name == "small").then_some(SMALL_MIN_RATIO);
        for (case, ours) in [
            ("sign", ours_sign(&shape, args.seconds)?),
            (
                "verify",
                ours_verify(&shape, args.seconds, Verify::ReplayOn)?,
            ),
        ] {
            let case = format!("{}/{case}", shape.name);
            report.row(Row {
                peer_per_s: Some(peer_figure(&peer, &case)?),
                case,
                peer: Some(who.clone()),
                ours_per_s: ours,
                min_ratio,
            });
        }
    }
    let small = shapes()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no shapes"))?;
    report.row(Row {
        case: "small/verify single core (replay on)".into(),
        peer: Some("target".into()),
        peer_per_s: Some(VERIFY_TARGET_PER_S),
        ours_per_s: ours_verify(&small, args.seconds, Verify::ReplayOn)?,
        min_ratio: Some(1.0),
    });
    for (case, mode) in [
        ("small/verify, replay off (ours only)", Verify::ReplayOff),
        (
            "small/verify, signature only (ours only)",
            Verify::SignatureOnly,
        ),
    ] {
        report.row(Row {
            case: case.into(),
            peer: None,
            peer_per_s: None,
            ours_per_s: ours_verify(&small, args.seconds, mode)?,
            min_ratio: None,
        });
    }
    let missed: Vec<&str> = report
        .rows()
        .iter()
        .filter(|r| r.met() == Some(false))
        .map(|r| r.case.as_str())
        .collect();
    if !missed.is_empty() {
        report.note(&format!("targets missed: {}", missed.join(", ")));
    }
    Ok(())
}
