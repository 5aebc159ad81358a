//! `kernelgate kernel`: run the built-in kernel on a connection file, or (`--kernel NAME`)
//! launch and manage an installed kernelspec.

mod managed;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context as _};
use clap::Args;
use kernelgate_kernel::rhai::{RhaiKernel, RhaiLimits};
use kernelgate_kernel::{BoundKernel, Flags, KernelOptions};
use kernelgate_wire::{ConnectionInfo, Transport};
use kernelgate_zmq::files;

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
    /// Largest message accepted, in bytes; larger ones are refused and counted (built-in
    /// kernel).
    #[arg(long, default_value_t = 64 << 20, conflicts_with = "kernel")]
    max_message_size: usize,
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
    let (path, info, existed) = connection(&args)?;
    let ctx = kernelgate_zmq::Context::new().context("creating the ZeroMQ context")?;
    let mut options = KernelOptions::new(info);
    options.session.limits.max_total_bytes = args.max_message_size;
    options.session.limits.max_frame_bytes = args.max_message_size;
    options.sockets.recv_limits.max_total_bytes = args.max_message_size;
    // libzmq drops a peer sending a single frame above this before buffering it.
    options.sockets.max_msg_size = Some(args.max_message_size as u64 + 1024);
    let bound = BoundKernel::bind(&ctx, options).context("binding the kernel's sockets")?;
    // Our own file is removed when we stop; a file given to us by a launcher is the launcher's.
    let _cleanup = if existed {
        None
    } else {
        let bytes = bound.connection_info().to_json_with_secrets();
        files::write_private_file_atomic(&path, &bytes)
            .with_context(|| format!("writing connection file {}", path.display()))?;
        Some(files::RemoveOnDrop::new(path.clone()))
    };
    println!(
        "kernelgate: built-in kernel ready; connection file: {}",
        path.display()
    );
    println!(
        "kernelgate: connect with: kernelgate console --existing {}",
        path.display()
    );

    let flags = Flags::default();
    install_signals(&flags)?;
    let limits = RhaiLimits {
        max_operations: args.max_operations,
        ..RhaiLimits::default()
    };
    let rejections = bound
        .run(RhaiKernel::new(limits), flags)
        .context("running the kernel")?;
    if rejections.total() > 0 {
        tracing::warn!(rejected = ?rejections.snapshot(), "messages refused during this kernel's life");
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM and SIGHUP shut down. SIGINT interrupts running code (what Jupyter launchers send);
/// in a terminal, Ctrl-C at an idle kernel shuts it down cleanly.
fn install_signals(flags: &Flags) -> anyhow::Result<()> {
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

fn connection(args: &KernelArgs) -> anyhow::Result<(PathBuf, ConnectionInfo, bool)> {
    if let Some(path) = &args.connection_file {
        if path.exists() {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let info = ConnectionInfo::from_json(&bytes)
                .with_context(|| format!("connection file {}", path.display()))?;
            return Ok((path.clone(), info, true));
        }
    }
    let transport = Transport::parse(&args.transport)?;
    if transport == Transport::Ipc && args.ip == "127.0.0.1" {
        bail!("--transport ipc needs --ip set to a socket path prefix in a private directory");
    }
    let mut info = ConnectionInfo::generate(transport, &args.ip)?;
    info.kernel_name = "rhai".into();
    let path = match &args.connection_file {
        Some(p) => p.clone(),
        None => {
            let dir = files::runtime_dir();
            files::ensure_private_dir(&dir)
                .with_context(|| format!("runtime directory {}", dir.display()))?;
            dir.join(format!("kernel-{}.json", uuid::Uuid::new_v4()))
        }
    };
    Ok((path, info, false))
}
