//! `kernelgate exec --existing FILE [CODE|-]`: run code in a running kernel, stream its outputs.
//! (`--url URL` instead: a kernel of a running host, see [`super::exec_remote`].)

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use kernelgate_client::{
    BlockingKernelClient, Channel, ClientConfig, ExecuteOptions, Message, OutputHandler,
};
use serde_json::{json, Value};

/// Flags of `kernelgate exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The kernel's connection file: a path, or a file name (or part of one) in the Jupyter
    /// runtime directory, as `jupyter console --existing` takes it.
    #[arg(long, value_name = "FILE", required_unless_present = "url")]
    pub existing: Option<String>,
    #[command(flatten)]
    pub remote: super::exec_remote::RemoteArgs,
    /// Code to run; `-` or nothing reads it from standard input.
    pub code: Option<String>,
    /// Print every message received (IOPub and replies) as one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the kernel to answer, and for the code to finish.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,
    /// Answer the kernel's input() prompts from this terminal's standard input.
    #[arg(long)]
    pub allow_stdin: bool,
}

pub fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let timeout = seconds(args.timeout)?;
    let code = match args.code.as_deref() {
        Some(code) if code != "-" => code.to_owned(),
        _ => {
            let mut code = String::new();
            std::io::stdin()
                .read_to_string(&mut code)
                .context("reading code from standard input")?;
            code
        }
    };
    let existing = match (&args.remote.url, &args.existing) {
        (Some(url), _) => {
            let job = super::exec_remote::Job {
                code: &code,
                json: args.json,
                allow_stdin: args.allow_stdin,
                timeout,
            };
            return super::exec_remote::run(&args.remote, url, &job);
        }
        (None, Some(existing)) => existing,
        (None, None) => bail!("give --existing FILE or --url URL"),
    };
    let (_, mut client) = connect(existing, timeout)?;
    let options = ExecuteOptions {
        allow_stdin: args.allow_stdin,
        timeout: Some(timeout),
        // The printer shows outputs as they come; none need keeping.
        keep_output_bytes: 0,
        ..ExecuteOptions::default()
    };
    let failed = if args.json {
        execute_json(&mut client, &code, &options, timeout)?
    } else {
        let mut printer = Printer { out_prompt: None };
        let outcome = match client.execute(&code, &options, &mut printer) {
            Ok(outcome) => outcome,
            Err(e) => {
                if e.is_timeout() {
                    // Don't leave the code running in the kernel.
                    client.inner_mut().set_timeout(Duration::from_secs(2));
                    let _ = client.interrupt_request();
                }
                return Err(explain(e, "the code to finish", timeout));
            }
        };
        outcome.reply.status != kernelgate_client::content::Status::Ok
    };
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The longest timeout accepted: a year (deadlines are `now + timeout`, which must not
/// overflow).
const MAX_TIMEOUT_SECS: f64 = 365.0 * 24.0 * 3600.0;

pub(crate) fn seconds(secs: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero() && secs <= MAX_TIMEOUT_SECS)
        .with_context(|| {
            format!("invalid timeout {secs}: a positive number of seconds, at most a year")
        })
}

/// Resolves `existing`, connects and waits until the kernel answers (and IOPub is subscribed).
pub(crate) fn connect(
    existing: &str,
    timeout: Duration,
) -> anyhow::Result<(PathBuf, BlockingKernelClient)> {
    let path = kernelgate_client::find_connection_file(existing).map_err(|_| {
        anyhow::anyhow!(
            "connection file {existing:?} not found (neither a file nor a name in the runtime directory {})",
            kernelgate_zmq::files::runtime_dir().display()
        )
    })?;
    let config = ClientConfig {
        timeout,
        ..ClientConfig::default()
    };
    let mut client = BlockingKernelClient::from_file(&path, config)
        .with_context(|| format!("connecting to the kernel of {}", path.display()))?;
    ready(&mut client, timeout).map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "the kernel of {} did not answer within {:?} (is it running?)",
            path.display(),
            timeout
        ))
    })?;
    Ok((path, client))
}

/// Like `wait_for_ready`, without its 200 ms quiet period: repeats `kernel_info_request` until the
/// reply and our request's `idle` status on IOPub (so the subscription is live) both arrived.
fn ready(client: &mut BlockingKernelClient, timeout: Duration) -> kernelgate_client::Result<()> {
    let deadline = Instant::now() + timeout;
    let timed_out = || kernelgate_client::Error::Timeout {
        waiting_for: "kernel_info_reply".into(),
        after: timeout,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        let msg = client
            .inner()
            .session()
            .message("kernel_info_request", &json!({}), None)?;
        let id = client.send(Channel::Shell, msg)?;
        match client.wait_reply(Channel::Shell, &id, left.min(Duration::from_secs(1))) {
            Ok(_) => {}
            Err(e) if e.is_timeout() => continue,
            Err(e) => return Err(e),
        }
        // IOPub subscriptions join a little after the connection: ask again if nothing came.
        let until = Instant::now() + Duration::from_millis(50);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match client.recv_iopub(left) {
                Ok(m) if m.parent_msg_id() == id && is_idle(&m) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.is_timeout() => break,
                Err(e) => return Err(e),
            }
        }
    }
}

fn is_idle(m: &Message) -> bool {
    m.msg_type() == "status"
        && m.content.get("execution_state").and_then(Value::as_str) == Some("idle")
}

/// A timeout error in words.
pub(crate) fn explain(e: kernelgate_client::Error, what: &str, timeout: Duration) -> anyhow::Error {
    if e.is_timeout() {
        anyhow::anyhow!("the kernel did not answer within {timeout:?} ({what}); see --timeout")
    } else {
        anyhow::Error::new(e).context(format!("waiting for {what}"))
    }
}

/// The message as one JSON object.
pub(crate) fn message_json(channel: Channel, m: &Message) -> Value {
    json!({
        "channel": channel.name(),
        "header": m.header,
        "parent_header": m.parent_header.as_ref().map_or(json!({}), |h| json!(h)),
        "metadata": m.metadata,
        "content": m.content,
    })
}

pub(crate) fn print_json(channel: Channel, m: &Message) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", message_json(channel, m));
    let _ = out.flush();
}

/// Runs `code` printing every message received as JSON. True when the code raised.
fn execute_json(
    client: &mut BlockingKernelClient,
    code: &str,
    options: &ExecuteOptions,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    let request = json!({
        "code": code,
        "silent": options.silent,
        "store_history": options.store_history,
        "user_expressions": {},
        "allow_stdin": options.allow_stdin,
        "stop_on_error": options.stop_on_error,
    });
    let msg = client
        .inner()
        .session()
        .message("execute_request", &request, None)?;
    let id = client.send(Channel::Shell, msg)?;
    // IOPub until our `idle`; stdin polled in between when input is allowed.
    let slice = if options.allow_stdin {
        Duration::from_millis(20)
    } else {
        timeout
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            client.inner_mut().set_timeout(Duration::from_secs(2));
            let _ = client.interrupt_request();
            bail!("the kernel did not finish within {timeout:?}; see --timeout");
        }
        match client.recv_iopub(left.min(slice)) {
            Ok(m) => {
                print_json(Channel::IoPub, &m);
                if m.parent_msg_id() == id && is_idle(&m) {
                    break;
                }
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(explain(e, "output", timeout)),
        }
        if options.allow_stdin {
            match client.recv_input_request(Duration::from_millis(1)) {
                Ok(m) => {
                    print_json(Channel::Stdin, &m);
                    let prompt = m
                        .content
                        .get("prompt")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let password = m
                        .content
                        .get("password")
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    let value = read_input(prompt, password);
                    client.send_input(&value)?;
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(explain(e, "input requests", timeout)),
            }
        }
    }
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let reply = client
        .wait_reply(Channel::Shell, &id, left)
        .map_err(|e| explain(e, "the execute_reply", timeout))?;
    print_json(Channel::Shell, &reply);
    Ok(reply.content.get("status").and_then(Value::as_str) != Some("ok"))
}

/// One line from standard input after showing `prompt` (no echo for passwords on a terminal).
pub(crate) fn read_input(prompt: &str, password: bool) -> String {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{prompt}");
    let _ = out.flush();
    drop(out);
    let echo_off = password && no_echo(true);
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    if echo_off {
        no_echo(false);
        println!();
    }
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    line
}

/// Turns terminal echo of standard input off (`true`) or back on; false when not a terminal.
#[allow(unsafe_code)]
fn no_echo(off: bool) -> bool {
    // SAFETY: termios is plain data; tcgetattr fills it or fails, and we only use it on success.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return false;
        }
        if off {
            t.c_lflag &= !libc::ECHO;
        } else {
            t.c_lflag |= libc::ECHO;
        }
        libc::tcsetattr(0, libc::TCSANOW, &t) == 0
    }
}

/// Prints outputs as they arrive: streams to stdout/stderr, results and displays as text/plain,
/// errors' tracebacks to stderr, and answers input requests from standard input.
pub(crate) struct Printer {
    /// `Some(n)`: prefix results with `Out[n]: ` (the console).
    pub out_prompt: Option<i64>,
}

/// The text/plain of a MIME bundle in `content.data`.
fn plain(m: &Message) -> Option<&str> {
    m.content.get("data")?.get("text/plain")?.as_str()
}

impl OutputHandler for Printer {
    fn on_iopub(&mut self, m: &Message) {
        let text = |key: &str| m.content.get(key).and_then(Value::as_str).unwrap_or("");
        match m.msg_type() {
            "stream" => {
                if text("name") == "stderr" {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(text("text").as_bytes());
                    let _ = err.flush();
                } else {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(text("text").as_bytes());
                    let _ = out.flush();
                }
            }
            "execute_result" => {
                if let Some(t) = plain(m) {
                    match self.out_prompt {
                        Some(_) => {
                            let n = m.content.get("execution_count").and_then(Value::as_i64);
                            let n = n.or(self.out_prompt).unwrap_or(0);
                            let sep = if t.contains('\n') { "\n" } else { "" };
                            println!("Out[{n}]: {sep}{t}");
                        }
                        None => println!("{t}"),
                    }
                }
            }
            "display_data" | "update_display_data" => {
                if let Some(t) = plain(m) {
                    println!("{t}");
                }
            }
            "error" => {
                let tb: Vec<&str> = m
                    .content
                    .get("traceback")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if tb.is_empty() {
                    eprintln!("{}: {}", text("ename"), text("evalue"));
                } else {
                    eprintln!("{}", tb.join("\n"));
                }
            }
            _ => {}
        }
    }

    fn on_input_request(&mut self, prompt: &str, password: bool) -> Option<String> {
        Some(read_input(prompt, password))
    }
}
