//! The baselines our client and kernel are measured against: the raw libzmq floor (with and
//! without the IOPub traffic a kernel must publish) and minimal counterparts that only sign and
//! verify, to split a round trip's cost between our client and our kernel.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use kernelgate_client::{BlockingKernelClient, Channel, ClientConfig};
use kernelgate_wire::{ConnectionInfo, Key, Message, Scheme, Session, SessionConfig, Signer};
use kernelgate_zmq::{Context as ZmqContext, SocketType};
use serde_json::{json, Value};

use super::{sample_rounds, stats, time_rounds, Args, Stats};

/// A blocking DEALER that signs a fresh execute_request per round and waits for any reply (no
/// verification), with an unread SUB on IOPub: our kernel's cost on top of the floor.
pub(super) fn minimal_client(info: &ConnectionInfo, execute: &Value, args: &Args) -> Result<Stats> {
    let session = Session::new(
        info.signer(false)?,
        SessionConfig {
            replay: None,
            ..SessionConfig::default()
        },
    );
    let ctx = ZmqContext::new()?;
    let sub = ctx.socket(SocketType::Sub)?;
    sub.subscribe(b"")?;
    sub.connect(&info.endpoint(Channel::IoPub))?;
    let dealer = ctx.socket(SocketType::Dealer)?;
    dealer.connect(&info.endpoint(Channel::Shell))?;
    std::thread::sleep(Duration::from_millis(200));
    time_rounds(args.rounds, args.warmup, || {
        let msg = session.message("execute_request", execute, None)?;
        dealer.send_multipart(&session.encode(&msg)?, false)?;
        let _ = dealer.recv_multipart(false)?;
        Ok(())
    })
}

/// Our blocking client against a minimal kernel: a thread that verifies each request and answers a
/// signed reply, publishing nothing: our client's cost on top of the floor.
pub(super) fn our_client_to_minimal_kernel(
    info: &ConnectionInfo,
    reply: &Value,
    args: &Args,
) -> Result<Stats> {
    let ctx = ZmqContext::new()?;
    let bind = |ty| -> Result<(kernelgate_zmq::Socket, u16)> {
        let s = ctx.socket(ty)?;
        s.bind("tcp://127.0.0.1:*")?;
        let ep = s.last_endpoint()?;
        let port = ep
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("{ep}"))?;
        Ok((s, port))
    };
    let (shell, shell_port) = bind(SocketType::Router)?;
    let (_iopub, iopub_port) = bind(SocketType::Pub)?;
    let (_stdin, stdin_port) = bind(SocketType::Router)?;
    let (_control, control_port) = bind(SocketType::Router)?;
    let (_hb, hb_port) = bind(SocketType::Rep)?;
    let mut minimal = info.clone();
    minimal.shell_port = shell_port;
    minimal.iopub_port = iopub_port;
    minimal.stdin_port = stdin_port;
    minimal.control_port = control_port;
    minimal.hb_port = hb_port;
    let session = Session::new(info.signer(false)?, SessionConfig::default());
    let total = args.rounds + args.warmup;
    let reply = reply.clone();
    let kernel = std::thread::spawn(move || -> Result<()> {
        for _ in 0..total {
            let req = session.receive(shell.recv_multipart(false)?)?.into_inner();
            let mut rep = session.message("execute_reply", &reply, Some(&req))?;
            rep.identities = req.identities.clone();
            shell.send_multipart(&session.encode(&rep)?, false)?;
        }
        Ok(())
    });
    let mut c = BlockingKernelClient::connect(minimal, ClientConfig::default())?;
    let execute = json!({"code": "1+1", "silent": false, "store_history": true,
        "user_expressions": {}, "allow_stdin": false, "stop_on_error": true});
    let s = time_rounds(args.rounds, args.warmup, || {
        c.request(Channel::Shell, "execute_request", execute.clone())
            .map(drop)
            .map_err(Into::into)
    })?;
    kernel
        .join()
        .map_err(|_| anyhow!("minimal kernel panicked"))??;
    Ok(s)
}

pub(crate) fn check_ok(reply: &Message) -> Result<()> {
    match reply.content.get("status").and_then(Value::as_str) {
        Some("ok") => Ok(()),
        other => bail!("{} status {other:?}", reply.msg_type()),
    }
}

/// Where the echoing ROUTER of a floor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Echo {
    /// A thread of this process, sharing this side's libzmq context (one I/O thread serves both
    /// ends: fewer thread wake-ups than any client and kernel in two processes can have).
    Thread,
    /// A process of its own with its own context, as a kernel is (`kernelgate-bench floor-echo`).
    Process,
}

/// The raw libzmq round trip of the same frames: DEALER here, ROUTER echoing a reply.
pub(super) fn floor(
    request: (&str, &Value),
    reply: (&str, &Value),
    echo: Echo,
    args: &Args,
) -> Result<Stats> {
    floor_with_iopub(request, reply, &[], echo, args).map(stats)
}

/// What the echoing side of a floor sends: per request, the `before` IOPub messages, the reply
/// (after the request's routing id), then `after`.
#[derive(Debug)]
pub(crate) struct EchoScript {
    rounds: usize,
    reply: Vec<Vec<u8>>,
    before: Vec<Vec<Vec<u8>>>,
    after: Vec<Vec<u8>>,
}

impl EchoScript {
    /// One JSON line (frames as arrays of byte values: they are small).
    fn to_json(&self) -> String {
        json!({"rounds": self.rounds, "reply": self.reply, "before": self.before,
            "after": self.after})
        .to_string()
    }

    fn from_json(text: &str) -> Result<EchoScript> {
        let v: Value = serde_json::from_str(text)?;
        let frames = |v: &Value| -> Result<Vec<Vec<u8>>> {
            v.as_array()
                .ok_or_else(|| anyhow!("echo script: frames are not an array"))?
                .iter()
                .map(|f| {
                    f.as_array()
                        .ok_or_else(|| anyhow!("echo script: a frame is not an array"))?
                        .iter()
                        .map(|b| {
                            b.as_u64()
                                .and_then(|b| u8::try_from(b).ok())
                                .ok_or_else(|| anyhow!("echo script: not a byte"))
                        })
                        .collect()
                })
                .collect()
        };
        let field = |k: &str| v.get(k).ok_or_else(|| anyhow!("echo script: no {k}"));
        Ok(EchoScript {
            rounds: field("rounds")?
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| anyhow!("echo script: bad rounds"))?,
            reply: frames(field("reply")?)?,
            before: field("before")?
                .as_array()
                .ok_or_else(|| anyhow!("echo script: before is not an array"))?
                .iter()
                .map(frames)
                .collect::<Result<_>>()?,
            after: frames(field("after")?)?,
        })
    }
}

/// The echoing side: serves `script.rounds` requests on `router`, publishing on `pubsock`.
fn echo_rounds(
    router: &kernelgate_zmq::Socket,
    pubsock: &kernelgate_zmq::Socket,
    script: &EchoScript,
) -> Result<()> {
    for _ in 0..script.rounds {
        let mut frames = router.recv_multipart(false)?;
        for m in &script.before {
            pubsock.send_multipart(m, false)?;
        }
        frames.truncate(1); // the DEALER's routing id
        frames.extend(script.reply.iter().cloned());
        router.send_multipart(&frames, false)?;
        if !script.after.is_empty() {
            pubsock.send_multipart(&script.after, false)?;
        }
    }
    Ok(())
}

/// `kernelgate-bench floor-echo`: reads an [`EchoScript`] (JSON) from stdin, binds a ROUTER and a
/// PUB on 127.0.0.1, prints their endpoints (one JSON line), then serves the script's rounds.
pub(crate) fn floor_echo_process() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let script = EchoScript::from_json(&line)?;
    let ctx = ZmqContext::new()?;
    let router = ctx.socket(SocketType::Router)?;
    router.bind("tcp://127.0.0.1:*")?;
    let pubsock = ctx.socket(SocketType::Pub)?;
    pubsock.bind("tcp://127.0.0.1:*")?;
    println!(
        "{}",
        json!({"router": router.last_endpoint()?, "pub": pubsock.last_endpoint()?})
    );
    echo_rounds(&router, &pubsock, &script)
}

/// [`floor`] plus the request's IOPub traffic: before the reply the echoing side publishes the
/// `before` messages (e.g. busy, execute_input, execute_result) on a PUB, after it an `idle`, to a
/// SUB of this thread that nobody reads (as the `execute/` cases leave IOPub unread). Returns the
/// round trips' times (us).
pub(super) fn floor_with_iopub(
    request: (&str, &Value),
    reply: (&str, &Value),
    before: &[(&str, Value)],
    echo: Echo,
    args: &Args,
) -> Result<Vec<f64>> {
    let signer = Signer::new(
        Scheme::Sha256,
        &Key::new(b"kernelgate-bench-floor-key-0123456789"),
    )?;
    let session = Session::new(
        signer,
        SessionConfig {
            replay: None,
            ..SessionConfig::default()
        },
    );
    let req = session.message(request.0, request.1, None)?;
    let rep = session.message(reply.0, reply.1, Some(&req))?;
    let req_frames = session.encode(&req)?;
    let publish = |msg_type: &str, content: &Value| -> Result<Vec<Vec<u8>>> {
        let mut m = session.message(msg_type, content, Some(&req))?;
        m.identities = vec![format!("kernel.bench.{msg_type}").into_bytes()];
        Ok(session.encode(&m)?)
    };
    let script = EchoScript {
        rounds: args.rounds + args.warmup,
        reply: session.encode(&rep)?,
        before: before
            .iter()
            .map(|(t, c)| publish(t, c))
            .collect::<Result<_>>()?,
        after: if before.is_empty() {
            Vec::new()
        } else {
            publish("status", &json!({"execution_state": "idle"}))?
        },
    };
    let ctx = ZmqContext::new()?;
    let (endpoint, pub_endpoint, echo): (String, String, EchoSide) = match echo {
        Echo::Thread => {
            let router = ctx.socket(SocketType::Router)?;
            router.bind("tcp://127.0.0.1:*")?;
            let pubsock = ctx.socket(SocketType::Pub)?;
            pubsock.bind("tcp://127.0.0.1:*")?;
            let endpoints = (router.last_endpoint()?, pubsock.last_endpoint()?);
            let thread = std::thread::spawn(move || echo_rounds(&router, &pubsock, &script));
            (endpoints.0, endpoints.1, EchoSide::Thread(thread))
        }
        Echo::Process => {
            let mut child = Command::new(std::env::current_exe()?)
                .arg("floor-echo")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
            writeln!(stdin, "{}", script.to_json())?;
            let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            let eps: Value = serde_json::from_str(&line)
                .map_err(|e| anyhow!("floor-echo printed {line:?}: {e}"))?;
            let ep = |k: &str| {
                eps.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("floor-echo printed no {k} endpoint"))
            };
            (ep("router")?, ep("pub")?, EchoSide::Process(child))
        }
    };
    let sub = ctx.socket(SocketType::Sub)?;
    sub.subscribe(b"")?;
    sub.connect(&pub_endpoint)?;
    let dealer = ctx.socket(SocketType::Dealer)?;
    dealer.connect(&endpoint)?;
    let samples = sample_rounds(args.rounds, args.warmup, || {
        dealer.send_multipart(&req_frames, false)?;
        let frames = dealer.recv_multipart(false)?;
        if frames.len() < 6 {
            bail!("floor: short reply");
        }
        Ok(())
    })?;
    echo.join()?;
    Ok(samples)
}

enum EchoSide {
    Thread(std::thread::JoinHandle<Result<()>>),
    Process(std::process::Child),
}

impl EchoSide {
    fn join(self) -> Result<()> {
        match self {
            EchoSide::Thread(t) => t.join().map_err(|_| anyhow!("floor thread panicked"))?,
            EchoSide::Process(mut c) => {
                let status = c.wait()?;
                if status.success() {
                    Ok(())
                } else {
                    bail!("floor-echo exited with {status}")
                }
            }
        }
    }
}
