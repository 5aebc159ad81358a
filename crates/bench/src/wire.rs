//! `wire`: jupyter_client's `Session` against ours on the same message shapes.
//!
//! Shapes (the same in python/peers/bench_session.py): `small` (an execute_request with ~120 B of
//! content), `buf1m` (the same plus one 1 MiB buffer), `content64k` (~64 KiB of content).
//! Cases per shape:
//! - `sign`: build a new message (fresh header) and serialize + sign it into frames. Our buffers
//!   are freed after the clock stops, as in `verify`.
//! - `verify`: verify + deserialize distinct messages signed beforehand (outside the clock), with
//!   replay protection on for both: our exact history, jupyter_client's default digest history.
//!   Our received buffers are freed after the clock stops (the peer's all share one object).
//!
//! Both sides time batches of prepared work with a monotonic clock, after one untimed warm-up
//! batch. One thread: a single core's figure. The two sides take turns (`--rounds`, each round a
//! run of the peer then ours, `--seconds / --rounds` per case and side), never at the same time:
//! on a shared machine the load shifts over a run, and a peer measured only at its start and ours
//! only at its end would each be judged under different conditions.

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
    /// Seconds of timed work per case and side, over all rounds.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Rounds in which the peer and ours take turns (at least 1).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
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

/// Items timed and the time they took, summed over rounds.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    items: f64,
    seconds: f64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.items += other.items;
        self.seconds += other.seconds;
    }

    fn per_s(self) -> f64 {
        self.items / self.seconds
    }
}

/// Runs `run` on batches from `prepare` (untimed) until `seconds` of timed work. The buffers
/// `run` hands back are recycled after the clock stops.
fn timed<T>(
    seconds: f64,
    mut prepare: impl FnMut() -> Result<Vec<T>>,
    mut run: impl FnMut(Vec<T>) -> Result<Vec<Buffers>>,
) -> Result<Tally> {
    recycle(run(prepare()?)?); // warm-up
    let budget = Duration::from_secs_f64(seconds);
    let (mut spent, mut n) = (Duration::ZERO, 0usize);
    while spent < budget {
        let items = prepare()?;
        let len = items.len();
        let t0 = Instant::now();
        let kept = run(items)?;
        spent += t0.elapsed();
        recycle(kept);
        n += len;
    }
    Ok(Tally {
        items: n as f64,
        seconds: spent.as_secs_f64(),
    })
}

/// One message's binary buffers.
type Buffers = Vec<Vec<u8>>;

thread_local! {
    /// 1 MiB buffers from earlier batches. Allocating and zeroing 32 MiB per batch (untimed) took
    /// a hundred times longer than the timed work, and most of the benchmark's minutes.
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn recycle(kept: Vec<Buffers>) {
    POOL.with_borrow_mut(|pool| pool.extend(kept.into_iter().flatten()));
}

fn buffers(shape: &Shape, count: usize) -> Vec<Buffers> {
    let Some(len) = shape.buffer_len else {
        return vec![Vec::new(); count];
    };
    let fresh = || vec![0u8; len];
    POOL.with_borrow_mut(|pool| {
        (0..count)
            .map(|_| {
                let reused = pool.pop().filter(|b| b.len() == len);
                vec![reused.unwrap_or_else(fresh)]
            })
            .collect()
    })
}

/// Ours: new message + serialize + sign. The content is handed over (moved) as a sender that built
/// it would: jupyter_client's `Session.msg` takes its content dict by reference, uncopied, so a
/// deep copy of the `Value` per message would time work neither real sender does. The copies are
/// made untimed, like the buffers.
fn ours_sign(shape: &Shape, seconds: f64) -> Result<Tally> {
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
            // As in `ours_verify`: the buffers outlive the clock (the peer's are one shared
            // object, never freed), every other frame is freed inside it.
            let mut buffers = Vec::with_capacity(items.len());
            for (content, bufs) in items {
                let kept = bufs.len();
                let msg = Message {
                    identities: Vec::new(),
                    header: s.header("execute_request"),
                    parent_header: None,
                    metadata: Map::new(),
                    content,
                    buffers: bufs,
                };
                let mut frames = black_box(s.encode_owned(msg)?);
                buffers.push(frames.split_off(frames.len().saturating_sub(kept)));
            }
            Ok(buffers)
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
fn ours_verify(shape: &Shape, seconds: f64, mode: Verify) -> Result<Tally> {
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
    .map(|t| Tally {
        items: t.items * shape.batch as f64,
        ..t
    })
}

/// The peer's tally of `case` in one round's output.
fn peer_tally(peer: &[Value], case: &str) -> Result<Tally> {
    let row = peer
        .iter()
        .find(|v| v.get("case").and_then(Value::as_str) == Some(case));
    let field = |name: &str| row.and_then(|v| v.get(name)).and_then(Value::as_f64);
    match (field("n"), field("seconds")) {
        (Some(items), Some(seconds)) if seconds > 0.0 => Ok(Tally { items, seconds }),
        _ => Err(anyhow!("the Python peer printed no figure for {case}")),
    }
}

/// Runs the `wire` benchmark.
pub fn run(args: &Args, python: &Python, report: &mut Report) -> Result<()> {
    if cfg!(debug_assertions) {
        report.note("warning: debug build; run with --release for meaningful figures");
    }
    report.note(&format!(
        "wire: jupyter_client {} ({}) vs kernelgate-wire, {}s of timed work per case and side \
         in {} alternating rounds, one thread",
        python.jupyter_client,
        python.path().display(),
        args.seconds,
        args.rounds
    ));
    // Per case, (peer, ours) summed over the rounds. The two sides take turns and never run at
    // the same time, so they never compete for the machine's cores.
    let mut tallies: Vec<(String, Tally, Tally)> = Vec::new();
    let per_round = args.seconds / f64::from(args.rounds);
    for _ in 0..args.rounds {
        let peer = python
            .run_peer(
                "bench_session.py",
                &["--seconds".into(), per_round.to_string()],
            )
            .context("jupyter_client Session benchmark")?;
        for shape in shapes() {
            for (case, ours) in [
                ("sign", ours_sign(&shape, per_round)?),
                ("verify", ours_verify(&shape, per_round, Verify::ReplayOn)?),
            ] {
                let case = format!("{}/{case}", shape.name);
                let theirs = peer_tally(&peer, &case)?;
                match tallies.iter_mut().find(|(c, _, _)| *c == case) {
                    Some((_, p, o)) => {
                        p.add(theirs);
                        o.add(ours);
                    }
                    None => tallies.push((case, theirs, ours)),
                }
            }
        }
    }
    let who = format!("jupyter_client {}", python.jupyter_client);
    for (case, peer, ours) in &tallies {
        report.row(Row {
            case: case.clone(),
            peer: Some(who.clone()),
            peer_per_s: Some(peer.per_s()),
            ours_per_s: ours.per_s(),
            min_ratio: case.starts_with("small/").then_some(SMALL_MIN_RATIO),
        });
    }
    let small_verify = tallies
        .iter()
        .find(|(c, _, _)| c == "small/verify")
        .map(|(_, _, ours)| ours.per_s())
        .ok_or_else(|| anyhow!("no small/verify figure"))?;
    report.row(Row {
        case: "small/verify single core (replay on)".into(),
        peer: Some("target".into()),
        peer_per_s: Some(VERIFY_TARGET_PER_S),
        ours_per_s: small_verify,
        min_ratio: Some(1.0),
    });
    let small = shapes()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no shapes"))?;
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
            ours_per_s: ours_verify(&small, args.seconds, mode)?.per_s(),
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
