//! The baselines our client and kernel are measured against: the raw libzmq floor (with and
//! without the IOPub traffic a kernel must publish) and minimal counterparts that only sign and
//! verify, to split a round trip's cost between our client and our kernel.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use kernelgate_client::{BlockingKernelClient, Channel, ClientConfig};
use kernelgate_wire::{ConnectionInfo, Key, Message, Scheme, Session, SessionConfig, Signer};
use kernelgate_zmq::{Context as ZmqContext, SocketType};
use serde_json::{json, Value};

use super::{time_rounds, Args, Stats};

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

/// The raw libzmq round trip of the same frames: DEALER here, ROUTER echoing a reply in a thread.
pub(super) fn floor(request: (&str, &Value), reply: (&str, &Value), args: &Args) -> Result<Stats> {
    floor_with_iopub(request, reply, &[], args)
}

/// [`floor`] plus the request's IOPub traffic: before the reply the ROUTER thread publishes the
/// `before` messages (e.g. busy, execute_input, execute_result) on a PUB, after it an `idle`, to a
/// SUB of this thread that nobody reads (as the `execute/` cases leave IOPub unread).
pub(super) fn floor_with_iopub(
    request: (&str, &Value),
    reply: (&str, &Value),
    before: &[(&str, Value)],
    args: &Args,
) -> Result<Stats> {
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
    let rep_frames = session.encode(&rep)?;
    let publish = |msg_type: &str, content: &Value| -> Result<Vec<Vec<u8>>> {
        let mut m = session.message(msg_type, content, Some(&req))?;
        m.identities = vec![format!("kernel.bench.{msg_type}").into_bytes()];
        Ok(session.encode(&m)?)
    };
    let with_iopub = !before.is_empty();
    let pre: Vec<Vec<Vec<u8>>> = before
        .iter()
        .map(|(t, c)| publish(t, c))
        .collect::<Result<_>>()?;
    let idle = publish("status", &json!({"execution_state": "idle"}))?;
    let ctx = ZmqContext::new()?;
    let router = ctx.socket(SocketType::Router)?;
    router.bind("tcp://127.0.0.1:*")?;
    let endpoint = router.last_endpoint()?;
    let pubsock = ctx.socket(SocketType::Pub)?;
    pubsock.bind("tcp://127.0.0.1:*")?;
    let pub_endpoint = pubsock.last_endpoint()?;
    let sub = ctx.socket(SocketType::Sub)?;
    sub.subscribe(b"")?;
    sub.connect(&pub_endpoint)?;
    let total = args.rounds + args.warmup;
    let echo = std::thread::spawn(move || -> Result<()> {
        for _ in 0..total {
            let mut frames = router.recv_multipart(false)?;
            if with_iopub {
                for m in &pre {
                    pubsock.send_multipart(m, false)?;
                }
            }
            frames.truncate(1); // the DEALER's routing id
            frames.extend(rep_frames.iter().cloned());
            router.send_multipart(&frames, false)?;
            if with_iopub {
                pubsock.send_multipart(&idle, false)?;
            }
        }
        Ok(())
    });
    let dealer = ctx.socket(SocketType::Dealer)?;
    dealer.connect(&endpoint)?;
    let stats = time_rounds(args.rounds, args.warmup, || {
        dealer.send_multipart(&req_frames, false)?;
        let frames = dealer.recv_multipart(false)?;
        if frames.len() < 6 {
            bail!("floor: short reply");
        }
        Ok(())
    })?;
    echo.join()
        .map_err(|_| anyhow!("floor thread panicked"))??;
    Ok(stats)
}
