//! A load-independent profile target for the small-message paths (run it under
//! `valgrind --tool=callgrind` to count instructions):
//! `hot_paths sign|verify|raw|auth|prep|hmac|replay N [ROUNDS]`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use kernelgate_wire::{Key, ReplayConfig, Scheme, Session, SessionConfig, Signer};
use serde_json::json;

fn session(replay: bool) -> Session {
    let signer = Signer::new(
        Scheme::Sha256,
        &Key::new(*b"kernelgate-bench-key-0123456789abcdef"),
    )
    .unwrap();
    let config = SessionConfig {
        username: "bench".into(),
        replay: replay.then(ReplayConfig::default),
        ..SessionConfig::default()
    };
    Session::new(signer, config)
}

/// This thread's CPU time in ns (the machine is shared: wall time would count other processes).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "verify".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let content = json!({
        "code": "print('hello world')\n1 + 1",
        "silent": false,
        "store_history": true,
        "user_expressions": {},
        "allow_stdin": false,
        "stop_on_error": true,
    });
    let sender = session(false);
    let receiver = session(true);
    let c0 = cpu_ns();
    let mut timed_ns = 0u64;
    match mode.as_str() {
        "hmac" => {
            let parts: [&[u8]; 4] = [&[b'x'; 230], b"{}", b"{}", &[b'y'; 150]];
            let c1 = cpu_ns();
            for _ in 0..n {
                black_box(sender.signer().digest(black_box(&parts)));
            }
            timed_ns += cpu_ns() - c1;
        }
        "replay" => {
            // The replay history alone: distinct digests admitted into one growing history
            // (`hot_paths replay 1000000 4` fills it to the default cap).
            let digests: Vec<_> = (0..n * rounds)
                .map(|i| {
                    let i = i.to_le_bytes();
                    sender.signer().digest(&[&i, b"", b"", b""]).unwrap()
                })
                .collect();
            let now = chrono::Utc::now();
            let mut guard = kernelgate_wire::ReplayGuard::new(ReplayConfig::default(), now);
            let c1 = cpu_ns();
            // Dated a microsecond apart, as a fast sender's messages are.
            for (i, d) in (0i64..).zip(digests) {
                let date = now + chrono::TimeDelta::microseconds(i % 4_000_000);
                guard.admit(d, date, now).unwrap();
            }
            timed_ns += cpu_ns() - c1;
        }
        "sign" => {
            // As the bench does: the content is moved in, not copied (copies made beforehand).
            let contents: Vec<_> = (0..n).map(|_| content.clone()).collect();
            let c1 = cpu_ns();
            for content in contents {
                let msg = kernelgate_wire::Message {
                    identities: Vec::new(),
                    header: sender.header("execute_request"),
                    parent_header: None,
                    metadata: serde_json::Map::new(),
                    content,
                    buffers: Vec::new(),
                };
                black_box(sender.encode_owned(msg).unwrap());
            }
            timed_ns += cpu_ns() - c1;
        }
        _ => {
            for _ in 0..rounds {
                let batch: Vec<_> = (0..n)
                    .map(|_| {
                        sender
                            .encode(&sender.message("execute_request", &content, None).unwrap())
                            .unwrap()
                    })
                    .collect();
                let c1 = cpu_ns();
                for frames in batch {
                    if mode == "prep" {
                        drop(black_box(frames));
                    } else if mode == "raw" {
                        drop(black_box(receiver.receive_raw(frames).unwrap()));
                    } else if mode == "auth" {
                        drop(black_box(receiver.authenticate(frames).unwrap()));
                    } else {
                        drop(black_box(receiver.receive(frames).unwrap()));
                    }
                }
                timed_ns += cpu_ns() - c1;
            }
        }
    }
    eprintln!(
        "{mode}: timed cpu {:.3} us/msg",
        timed_ns as f64 / 1000.0 / (n * rounds) as f64
    );
    eprintln!(
        "{mode}: cpu {:.3} us/msg overall",
        (cpu_ns() - c0) as f64 / 1000.0 / (n * rounds) as f64
    );
}
