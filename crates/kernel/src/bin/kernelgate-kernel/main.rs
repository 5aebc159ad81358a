//! `kernelgate-kernel`: the built-in Rhai kernel and nothing else. Same flags and behaviour as
//! `kernelgate kernel` without `--kernel`, in a binary that maps only the kernel crates (the
//! `kernelgate` binary also holds the server, TLS and the console: megabytes of code pages a
//! kernel never runs). Launchers use it when it sits next to `kernelgate`.

mod log;
mod trim;

/// Counts the heap, for `--max-memory-mib`.
#[global_allocator]
static ALLOCATOR: kernelgate_kernel::memory::CountingAllocator =
    kernelgate_kernel::memory::CountingAllocator;

use std::path::PathBuf;
use std::process::ExitCode;

use kernelgate_kernel::standalone::{self, StandaloneOptions};
use kernelgate_wire::Transport;

const USAGE: &str = "\
Usage: kernelgate-kernel [-f FILE] [--ip ADDR] [--transport tcp|ipc] [--max-operations N]
                         [--max-memory-mib MIB] [--max-message-size BYTES]
                         [--replay-window SECONDS] [--curve [--curve-clients DIR]]
                         [--log LEVEL]

Runs the kernelgate built-in Rhai kernel (as `kernelgate kernel` does).

  -f, --connection-file FILE  connection file: used if it exists, else written there (default:
                              a new file in the Jupyter runtime directory)
      --ip ADDR               address to listen on (tcp) or socket path prefix (ipc)
      --transport tcp|ipc     ZeroMQ transport (default tcp)
      --max-operations N      Rhai operations per cell before it is stopped as a runaway
      --max-memory-mib MIB    heap the kernel may hold, earlier cells' variables included,
                              before the running cell is stopped (default 1024; 0: no limit)
      --max-message-size N    largest message accepted, in bytes (default 67108864)
      --replay-window SECONDS how old (by its date, when it arrived) a request may be and still
                              be accepted (default 60); fractions allowed
      --curve                 encrypt every channel with CurveZMQ (fresh keys in the connection
                              file the kernel writes); clients present the file's keypair
      --curve-clients DIR     admit only the clients whose public certificates (NAME.key) are
                              in DIR
      --log LEVEL             error, warn, info (default; also KERNELGATE_LOG), debug, trace, off
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (options, log) = match parse(&args) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernelgate-kernel: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    log::StderrLog::install(&log);
    match standalone::run(options) {
        Ok(rejections) => {
            if rejections.total() > 0 {
                tracing::warn!(rejected = ?rejections.snapshot(), "messages refused during this kernel's life");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kernelgate-kernel: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The options and log level, or `None` after printing help or the version.
fn parse(args: &[String]) -> Result<Option<(StandaloneOptions, String)>, String> {
    let mut options = StandaloneOptions {
        after_start: Some(trim::drop_startup_code),
        when_idle: Some(trim::give_back_idle_memory),
        ..StandaloneOptions::default()
    };
    // As `kernelgate`: RUST_LOG first, then --log, whose default comes from KERNELGATE_LOG.
    let mut log = std::env::var("KERNELGATE_LOG").unwrap_or_else(|_| "info".into());
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| rest.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("kernelgate-kernel {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "-f" | "--connection-file" => options.connection_file = Some(PathBuf::from(value()?)),
            "--ip" => options.ip = value()?,
            "--transport" => {
                options.transport = match value()?.as_str() {
                    "tcp" => Transport::Tcp,
                    "ipc" => Transport::Ipc,
                    other => return Err(format!("--transport {other:?}: tcp or ipc")),
                }
            }
            "--max-operations" => options.max_operations = number(flag, &value()?)?,
            "--max-memory-mib" => {
                let mib: usize = number(flag, &value()?)?;
                options.max_memory = mib.saturating_mul(1 << 20);
            }
            "--max-message-size" => options.max_message_size = number(flag, &value()?)?,
            "--curve" => options.curve = true,
            "--curve-clients" => options.curve_clients = Some(PathBuf::from(value()?)),
            "--replay-window" => {
                options.replay_window = standalone::parse_replay_window(&value()?)
                    .map_err(|e| format!("{flag}: {e}"))?
            }
            "--log" => log = value()?,
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if let Ok(filter) = std::env::var("RUST_LOG") {
        log = filter;
    }
    Ok(Some((options, log)))
}

fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag} {text:?} is not a number"))
}
