//! The built-in Rhai kernel as a process of its own: connection file in, kernel running until
//! shutdown. Shared by `kernelgate kernel` and the lean `kernelgate-kernel` binary, so both
//! behave the same; launchers prefer the lean one (see `kernelgate_host::provision::builtin_spec`) because a kernel
//! process that maps only the kernel crates touches far fewer code pages.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kernelgate_wire::{ConnectionInfo, Rejections, Transport};
use kernelgate_zmq::files;

use crate::admission::CurveAdmission;
use crate::io::Flags;
use crate::rhai::{RhaiKernel, RhaiLimits};
use crate::server::{BoundKernel, KernelOptions};

/// How to run the built-in kernel.
#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    /// Connection file. If it exists, its ports and key are used (as a kernel launched by
    /// Jupyter does); otherwise a fresh key and free ports are chosen and the file is written
    /// there, owner-only, and removed when the kernel stops. `None`: a new file in the Jupyter
    /// runtime directory.
    pub connection_file: Option<PathBuf>,
    /// Address to listen on (tcp) or socket path prefix (ipc).
    pub ip: String,
    /// ZeroMQ transport.
    pub transport: Transport,
    /// Maximum Rhai operations per cell.
    pub max_operations: u64,
    /// Heap bytes the kernel may hold before a running cell is stopped (0: no limit).
    pub max_memory: usize,
    /// Largest message accepted, in bytes.
    pub max_message_size: usize,
    /// How old (by its header's date, when it arrived) a request may be and still be accepted.
    pub replay_window: std::time::Duration,
    /// Encrypt every channel with CURVE: a fresh server keypair goes into the connection file
    /// the kernel writes (a launcher's file brings its own keys).
    pub curve: bool,
    /// With CURVE: a directory of client public certificates (`NAME.key`, pyzmq's format); only
    /// those clients are admitted. `None`: clients present the connection file's keypair, as
    /// jupyter_client does, and only that key is admitted.
    pub curve_clients: Option<PathBuf>,
    /// Called once the sockets are bound and the interpreter is built, just before serving.
    pub after_start: Option<fn()>,
    /// Called on the shell thread once the kernel has sat idle for a second after serving
    /// requests (see [`KernelOptions::when_idle`]).
    pub when_idle: Option<fn()>,
}

impl Default for StandaloneOptions {
    fn default() -> Self {
        StandaloneOptions {
            connection_file: None,
            ip: "127.0.0.1".into(),
            transport: Transport::Tcp,
            max_operations: RhaiLimits::default().max_operations,
            max_memory: RhaiLimits::default().max_memory,
            max_message_size: 64 << 20,
            replay_window: kernelgate_wire::ReplayConfig::default().window,
            curve: false,
            curve_clients: None,
            after_start: None,
            when_idle: None,
        }
    }
}

/// Parses a `--replay-window` value: a positive number of seconds, fractions allowed. Shared by
/// `kernelgate kernel` and `kernelgate-kernel`, so both accept exactly the same values.
pub fn parse_replay_window(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

/// Why the kernel could not run: a message for the user, with its context.
#[derive(Debug)]
pub struct StandaloneError(String);

impl std::fmt::Display for StandaloneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StandaloneError {}

fn fail(context: impl std::fmt::Display, e: impl std::fmt::Display) -> StandaloneError {
    StandaloneError(format!("{context}: {e}"))
}

/// Binds, writes the connection file if it is ours, prints where it is, and serves until a
/// shutdown request or SIGTERM/SIGHUP. Returns the counters of refused messages.
pub fn run(options: StandaloneOptions) -> Result<Arc<Rejections>, StandaloneError> {
    let (path, info, existed) = connection(&options)?;
    let ctx = kernelgate_zmq::Context::new().map_err(|e| fail("creating the ZeroMQ context", e))?;
    let mut kernel_options = KernelOptions::new(info);
    kernel_options.when_idle = options.when_idle;
    kernel_options.curve_admission = admission(&options, &kernel_options.connection)?;
    if let Some(replay) = kernel_options.session.replay.as_mut() {
        replay.window = options.replay_window;
    }
    let max = options.max_message_size;
    kernel_options.session.limits.max_total_bytes = max;
    kernel_options.session.limits.max_frame_bytes = max;
    kernel_options.sockets.recv_limits.max_total_bytes = max;
    // libzmq drops a peer sending a single frame above this before buffering it.
    kernel_options.sockets.max_msg_size = Some(max as u64 + 1024);
    let bound = BoundKernel::bind(&ctx, kernel_options)
        .map_err(|e| fail("binding the kernel's sockets", e))?;
    // Our own file is removed when we stop; a file given to us by a launcher is the launcher's.
    let _cleanup = if existed {
        None
    } else {
        let bytes = bound.connection_info().to_json_with_secrets();
        files::write_private_file_atomic(&path, &bytes).map_err(|e| {
            fail(
                format_args!("writing connection file {}", path.display()),
                e,
            )
        })?;
        Some(files::RemoveOnDrop::new(path.clone()))
    };
    let _sockets = ipc_socket_files(bound.connection_info());
    println!(
        "kernelgate: built-in kernel ready; connection file: {}",
        path.display()
    );
    println!(
        "kernelgate: connect with: kernelgate console --existing {}",
        path.display()
    );

    let flags = Flags::default();
    install_signals(&flags).map_err(|e| fail("installing signal handlers", e))?;
    let limits = RhaiLimits {
        max_operations: options.max_operations,
        max_memory: options.max_memory,
        ..RhaiLimits::default()
    };
    let kernel = RhaiKernel::new(limits);
    if let Some(after_start) = options.after_start {
        after_start();
    }
    bound
        .run(kernel, flags)
        .map_err(|e| fail("running the kernel", e))
}

/// Which CURVE clients the kernel admits (see [`StandaloneOptions::curve_clients`]).
fn admission(
    options: &StandaloneOptions,
    info: &ConnectionInfo,
) -> Result<CurveAdmission, StandaloneError> {
    let encrypted = info.curve_secretkey.is_some();
    if options.curve && !encrypted {
        return Err(StandaloneError(
            "--curve: the connection file given has no CURVE keys (the kernel makes keys only \
             for a file it writes itself)"
                .into(),
        ));
    }
    let Some(dir) = &options.curve_clients else {
        return Ok(CurveAdmission::ConnectionFile);
    };
    if !encrypted {
        return Err(StandaloneError(
            "--curve-clients needs CURVE keys: give --curve, or a connection file with them".into(),
        ));
    }
    let keys = kernelgate_zmq::zap::load_public_keys_from_dir(dir)
        .map_err(|e| fail(format_args!("client certificates in {}", dir.display()), e))?;
    if keys.is_empty() {
        return Err(StandaloneError(format!(
            "no client certificates (NAME.key) in {}",
            dir.display()
        )));
    }
    Ok(CurveAdmission::Clients(keys))
}

/// The socket files of an ipc kernel, removed when it stops: libzmq leaves them behind (it
/// removes only those it made in a temporary directory), and they are the kernel's, whoever
/// wrote the connection file.
fn ipc_socket_files(info: &ConnectionInfo) -> Vec<files::RemoveOnDrop> {
    if info.transport != Transport::Ipc {
        return Vec::new();
    }
    info.ports()
        .into_iter()
        .map(|(_, port)| files::RemoveOnDrop::new(PathBuf::from(format!("{}-{port}", info.ip))))
        .collect()
}

/// SIGTERM and SIGHUP shut down. SIGINT interrupts running code (what Jupyter launchers send);
/// in a terminal, Ctrl-C at an idle kernel shuts it down cleanly.
fn install_signals(flags: &Flags) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let interactive = std::io::stdin().is_terminal();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let flags = flags.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let idle_in_terminal = interactive && !flags.busy.load(Ordering::SeqCst);
                if signal == SIGINT && !idle_in_terminal {
                    flags.interrupt.store(true, Ordering::SeqCst);
                } else {
                    flags.request_shutdown();
                }
            }
        })?;
    Ok(())
}

/// Whether `JUPYTER_ALLOW_INSECURE_WRITES` is `true` or `1`, as jupyter_core reads it.
fn insecure_writes_allowed() -> bool {
    std::env::var("JUPYTER_ALLOW_INSECURE_WRITES")
        .is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The connection file's path, its info, and whether it existed (then it is the launcher's).
fn connection(
    options: &StandaloneOptions,
) -> Result<(PathBuf, ConnectionInfo, bool), StandaloneError> {
    if let Some(path) = &options.connection_file {
        if path.exists() {
            let shown = path.display();
            // Only a file of ours that not everyone can write: a file planted at a shared path
            // (/tmp/k.json) by another user would hand them the kernel's key. Jupyter's own
            // escape hatch for file systems without permissions lifts the check, as it does
            // Jupyter's.
            let read = if insecure_writes_allowed() {
                tracing::warn!("JUPYTER_ALLOW_INSECURE_WRITES is set: {shown} is not checked for who could have written it");
                files::read_bounded(path, ConnectionInfo::MAX_FILE_BYTES)
            } else {
                files::read_owned(path, ConnectionInfo::MAX_FILE_BYTES)
            };
            let bytes = read.map_err(|e| fail(format_args!("reading {shown}"), e))?;
            let info = ConnectionInfo::from_json(&bytes)
                .map_err(|e| fail(format_args!("connection file {shown}"), e))?;
            return Ok((path.clone(), info, true));
        }
    }
    if options.transport == Transport::Ipc && options.ip == "127.0.0.1" {
        return Err(StandaloneError(
            "--transport ipc needs --ip set to a socket path prefix in a private directory".into(),
        ));
    }
    let mut info = ConnectionInfo::generate(options.transport, &options.ip)
        .map_err(|e| fail("generating the connection info", e))?;
    info.kernel_name = "rhai".into();
    if options.curve {
        let (public, secret) =
            kernelgate_zmq::curve_keypair().map_err(|e| fail("making a CURVE keypair", e))?;
        info.curve_publickey = Some(public);
        info.curve_secretkey = Some(kernelgate_wire::Key::new(secret.as_z85().as_bytes()));
    }
    let path = match &options.connection_file {
        Some(p) => p.clone(),
        None => {
            let dir = files::runtime_dir();
            files::ensure_private_dir(&dir)
                .map_err(|e| fail(format_args!("runtime directory {}", dir.display()), e))?;
            dir.join(format!("kernel-{}.json", uuid::Uuid::new_v4()))
        }
    };
    Ok((path, info, false))
}
