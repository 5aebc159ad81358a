//! `kernelgate kernel`: run the built-in kernel on a connection file, or (`--kernel NAME`)
//! launch and manage an installed kernelspec.

mod managed;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use kernelgate_kernel::rhai::RhaiLimits;
use kernelgate_kernel::standalone::{self, StandaloneOptions};
use kernelgate_wire::Transport;

/// Flags of `kernelgate kernel`.
#[derive(Debug, Args)]
pub struct KernelArgs {
    /// Connection file. If it exists, its ports and key are used (as a kernel launched by Jupyter
    /// does); otherwise a fresh key and free ports are chosen and the file is written there,
    /// owner-only. Default: a new file in the Jupyter runtime directory. With --kernel it must
    /// not exist yet, and is removed when the kernel stops.
    #[arg(short = 'f', long = "connection-file")]
    connection_file: Option<PathBuf>,
    /// Launch the installed kernelspec NAME (e.g. python3; see `kernelgate kernelspec list`)
    /// as a managed child instead of running the built-in kernel: in its own process group and
    /// sandbox, stopped cleanly (shutdown_request, SIGTERM, SIGKILL) on Ctrl-C, SIGTERM or
    /// SIGHUP. If the kernel dies, kernelgate exits with its status.
    #[arg(long, value_name = "NAME")]
    kernel: Option<String>,
    /// With --kernel: kernelspec directories (each holding NAME/kernel.json); replaces the
    /// Jupyter path search.
    #[arg(long, value_delimiter = ',', value_name = "DIRS", requires = "kernel")]
    kernel_dirs: Vec<PathBuf>,
    /// Address to listen on (tcp) or socket path prefix (ipc).
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    /// ZeroMQ transport (built-in kernel; a managed kernel uses tcp).
    #[arg(long, value_parser = ["tcp", "ipc"], default_value = "tcp", conflicts_with = "kernel")]
    transport: String,
    /// Maximum Rhai operations per cell before it is stopped as a runaway (built-in kernel).
    #[arg(long, default_value_t = RhaiLimits::default().max_operations, conflicts_with = "kernel")]
    max_operations: u64,
    /// Heap the kernel may hold, in MiB, variables of earlier cells included, before the
    /// running cell is stopped with MemoryLimitExceeded; 0: no limit (built-in kernel).
    #[arg(long, value_name = "MIB", default_value_t = RhaiLimits::default().max_memory >> 20,
        conflicts_with = "kernel")]
    max_memory_mib: usize,
    /// Largest message accepted, in bytes; larger ones are refused and counted (built-in
    /// kernel).
    #[arg(long, default_value_t = 64 << 20, conflicts_with = "kernel")]
    max_message_size: usize,
    /// How old, in seconds, a request may be (by its header's date, when it reached the kernel)
    /// and still be accepted; older ones are refused as stale (built-in kernel). Fractions
    /// allowed.
    #[arg(long, value_name = "SECONDS", default_value = "60",
        value_parser = standalone::parse_replay_window, conflicts_with = "kernel")]
    replay_window: std::time::Duration,
    /// Encrypt every channel with CurveZMQ: a fresh server keypair goes into the connection
    /// file (a launcher's file brings its own keys). Clients present the file's keypair
    /// (jupyter_client's convention). The built-in kernel admits only that key, unless
    /// --curve-clients names the clients; with --kernel, the kernelspec must list `curve` in
    /// `metadata.supported_encryption` (ipykernel's does), and it admits what it admits.
    #[arg(long)]
    curve: bool,
    /// With CURVE: admit only the clients whose public certificates (NAME.key, pyzmq's
    /// format, e.g. from `kernelgate`'s or pyzmq's create_certificates) are in DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "kernel")]
    curve_clients: Option<PathBuf>,
    #[command(
        flatten,
        next_help_heading = "Sandbox of a managed kernel (with --kernel)"
    )]
    sandbox: super::sandbox::SandboxArgs,
}

pub fn run(args: KernelArgs) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.kernel {
        return managed::run(&args, name);
    }
    // The built-in kernel: the same code as the lean `kernelgate-kernel` binary.
    let options = StandaloneOptions {
        connection_file: args.connection_file.clone(),
        ip: args.ip.clone(),
        transport: Transport::parse(&args.transport)?,
        max_operations: args.max_operations,
        max_memory: args.max_memory_mib.saturating_mul(1 << 20),
        max_message_size: args.max_message_size,
        replay_window: args.replay_window,
        curve: args.curve,
        curve_clients: args.curve_clients.clone(),
        after_start: None,
        when_idle: None,
    };
    let rejections = standalone::run(options)?;
    if rejections.total() > 0 {
        tracing::warn!(rejected = ?rejections.snapshot(), "messages refused during this kernel's life");
    }
    Ok(ExitCode::SUCCESS)
}
