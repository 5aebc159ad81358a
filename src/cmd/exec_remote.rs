//! `kernelgate exec --url URL [--kernel-id ID] [CODE|-]`: run code on a kernel of a running host
//! (`kernelgate serve` or any Jupyter Server compatible one) through its WebSocket API, printing
//! exactly what `exec --existing` prints.
//!
//! Without `--kernel-id` a kernel is started with `POST /api/kernels` and deleted afterwards
//! (also after an error, a timeout or Ctrl-C).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;
use kernelgate_client::{Channel, Message, OutputHandler as _};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::exec::{print_json, read_input, Printer};
use crate::remote::{load_token, Channels, Server, WsProtocol};

/// The flags of `kernelgate exec` for a host reached by URL.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// Base URL of a running host (`kernelgate serve`, or a Jupyter server): http://HOST:PORT
    /// or https://HOST:PORT, with its base path if any. Runs the code through the host's
    /// WebSocket API instead of a connection file. Never put the token in it (command lines are
    /// visible to every user): see --token-file.
    #[arg(long, value_name = "URL", conflicts_with = "existing")]
    pub url: Option<String>,
    /// With --url: the id of the kernel to run the code in. Without it, a kernel is started
    /// (POST /api/kernels) and shut down afterwards.
    #[arg(long, value_name = "ID", requires = "url")]
    pub kernel_id: Option<String>,
    /// With --url and no --kernel-id: the kernelspec to start (default: the host's default).
    #[arg(
        long,
        value_name = "NAME",
        requires = "url",
        conflicts_with = "kernel_id"
    )]
    pub kernel_name: Option<String>,
    /// With --url: a file holding the host's token (first line). Default for a loopback URL:
    /// the token file `kernelgate serve` wrote owner-only to the runtime directory for that
    /// port. The token itself is never taken from argv or the environment.
    #[arg(long, value_name = "FILE", env = "KERNELGATE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// With an https URL: trust the certificates of this PEM file (such as the host's
    /// self-signed certificate) instead of the system's CA bundle.
    #[arg(long, value_name = "FILE", requires = "url")]
    pub cafile: Option<PathBuf>,
    /// With an http URL to a host beyond loopback: send the token (and all code) in clear
    /// text anyway. Refused without it, as `kernelgate serve` refuses to listen so.
    #[arg(long, requires = "url")]
    pub insecure_http: bool,
    /// With --url: the WebSocket framing. `auto`: the v1 subprotocol, or legacy JSON when the
    /// host does not offer it.
    #[arg(long, value_enum, value_name = "PROTOCOL", requires = "url")]
    pub ws_protocol: Option<WsProtocol>,
}

/// What `exec --url` does besides where: the code and the flags shared with `--existing`.
pub struct Job<'a> {
    pub code: &'a str,
    pub json: bool,
    pub allow_stdin: bool,
    pub timeout: Duration,
}

pub fn run(args: &RemoteArgs, url: &str, job: &Job<'_>) -> anyhow::Result<ExitCode> {
    if let Some(id) = &args.kernel_id {
        let ok = !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok {
            bail!("invalid --kernel-id {id:?}: letters, digits, '-', '_' and '.' only");
        }
    }
    let token = load_token(args.token_file.as_deref(), url)?;
    let server = Server::new(
        url,
        token,
        args.cafile.as_deref(),
        job.timeout,
        args.insecure_http,
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_on(&server, args, job))
}

async fn run_on(server: &Server, args: &RemoteArgs, job: &Job<'_>) -> anyhow::Result<ExitCode> {
    let protocol = args.ws_protocol.unwrap_or(WsProtocol::Auto);
    let Some(id) = &args.kernel_id else {
        let id = server.start_kernel(args.kernel_name.as_deref()).await?;
        tracing::debug!(kernel = %id, "started");
        let result = tokio::select! {
            r = run_in(server, &id, protocol, job) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        };
        if let Err(e) = server.delete_kernel(&id).await {
            eprintln!("kernelgate: warning: kernel {id} may still run on the host: {e:#}");
        }
        return result;
    };
    tokio::select! {
        r = run_in(server, id, protocol, job) => r,
        _ = tokio::signal::ctrl_c() => {
            // Don't leave the code running in a kernel we don't own.
            let _ = server.interrupt_kernel(id).await;
            Err(anyhow!("interrupted"))
        }
    }
}

/// Connects to kernel `id`, waits until it answers, runs the code.
async fn run_in(
    server: &Server,
    id: &str,
    protocol: WsProtocol,
    job: &Job<'_>,
) -> anyhow::Result<ExitCode> {
    let mut channels = server.channels(id, protocol).await?;
    tracing::debug!(v1 = channels.is_v1(), "websocket open");
    let handshake = ready(&mut channels, job.timeout).await.map_err(|e| match e {
        Wait::TimedOut => anyhow!(
            "kernel {id} on {} did not answer within {:?} (is it still starting, or dead?); see --timeout",
            server.shown(),
            job.timeout
        ),
        Wait::Failed(e) => e,
    })?;
    let failed = match execute(&mut channels, job, &handshake).await {
        Ok(failed) => failed,
        Err(Wait::TimedOut) => {
            let _ = server.interrupt_kernel(id).await;
            bail!(
                "the kernel did not finish within {:?}; see --timeout",
                job.timeout
            );
        }
        Err(Wait::Failed(e)) => return Err(e),
    };
    channels.close().await;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Why a wait ended without its message.
enum Wait {
    TimedOut,
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Wait {
    fn from(e: anyhow::Error) -> Wait {
        Wait::Failed(e)
    }
}

/// `kernel_info_request`, again and again (every 0.2 s, backing off to 1 s), until a reply came and IOPub delivered a message
/// for one of them (so outputs will not be lost: right after a start, a host's IOPub may not
/// flow yet). The ids sent, so that their late replies and statuses are not taken for the code's.
async fn ready(channels: &mut Channels, timeout: Duration) -> Result<HashSet<String>, Wait> {
    let deadline = Instant::now() + timeout;
    let mut sent = HashSet::new();
    let (mut replied, mut iopub) = (false, false);
    let mut every = Duration::from_millis(200);
    loop {
        if Instant::now() >= deadline {
            return Err(Wait::TimedOut);
        }
        let id = channels
            .send(Channel::Shell, "kernel_info_request", json!({}), None)
            .await?;
        sent.insert(id);
        let retry = (Instant::now() + every).min(deadline);
        every = (every * 2).min(Duration::from_secs(1));
        while let Some((channel, m)) = channels.recv(retry).await? {
            if !sent.contains(m.parent_msg_id()) {
                continue;
            }
            match channel {
                Channel::Shell if m.msg_type() == "kernel_info_reply" => replied = true,
                Channel::IoPub => iopub = true,
                _ => {}
            }
            if replied && iopub {
                return Ok(sent);
            }
        }
    }
}

/// Runs the code, printing its outputs (or every message with --json). True when it raised.
async fn execute(
    channels: &mut Channels,
    job: &Job<'_>,
    handshake: &HashSet<String>,
) -> Result<bool, Wait> {
    let deadline = Instant::now() + job.timeout;
    let request = json!({
        "code": job.code,
        "silent": false,
        "store_history": true,
        "user_expressions": {},
        "allow_stdin": job.allow_stdin,
        "stop_on_error": true,
    });
    let id = channels
        .send(Channel::Shell, "execute_request", request, None)
        .await?;
    let mut printer = Printer { out_prompt: None };
    let (mut reply, mut idle) = (None::<Message>, false);
    while reply.is_none() || !idle {
        let Some((channel, m)) = channels.recv(deadline).await? else {
            return Err(Wait::TimedOut);
        };
        let ours = m.parent_msg_id() == id;
        match channel {
            Channel::IoPub if handshake.contains(m.parent_msg_id()) => {}
            Channel::IoPub => {
                if job.json {
                    print_json(Channel::IoPub, &m);
                }
                let state = (m.msg_type() == "status")
                    .then(|| m.content.get("execution_state").and_then(Value::as_str))
                    .flatten();
                match state {
                    Some("idle") if ours => idle = true,
                    // The host's own statuses when the kernel process goes away.
                    Some("restarting") => {
                        return Err(anyhow!(
                            "the kernel restarted while running the code (it died?)"
                        )
                        .into())
                    }
                    Some("dead") => return Err(anyhow!("the kernel is dead").into()),
                    Some(_) => {}
                    None if ours && !job.json => printer.on_iopub(&m),
                    None => {}
                }
            }
            Channel::Shell if ours && m.msg_type() == "execute_reply" => reply = Some(m),
            Channel::Stdin if ours && m.msg_type() == "input_request" => {
                if job.json {
                    print_json(Channel::Stdin, &m);
                }
                let text = |k: &str| m.content.get(k);
                let prompt = text("prompt").and_then(Value::as_str).unwrap_or("");
                let password = text("password").and_then(Value::as_bool).unwrap_or(false);
                // Without --allow-stdin the kernel was told not to ask; answer empty if it does.
                let value = if job.allow_stdin {
                    read_input(prompt, password)
                } else {
                    String::new()
                };
                channels
                    .send(
                        Channel::Stdin,
                        "input_reply",
                        json!({ "value": value }),
                        Some(&m.header),
                    )
                    .await?;
            }
            _ => {}
        }
    }
    let Some(reply) = reply else {
        return Err(Wait::TimedOut);
    };
    if job.json {
        print_json(Channel::Shell, &reply);
    }
    Ok(reply.content.get("status").and_then(Value::as_str) != Some("ok"))
}
