//! `kernelgate`: the command-line interface. Thin: parses flags, calls the crates, prints.

mod cmd;
mod remote;

/// Counts the heap, for `kernelgate kernel --max-memory-mib`.
#[global_allocator]
static ALLOCATOR: kernelgate_kernel::memory::CountingAllocator =
    kernelgate_kernel::memory::CountingAllocator;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Secure Jupyter kernels on shared machines: authenticated, replay-proof, sandboxed.
#[derive(Debug, Parser)]
#[command(name = "kernelgate", version, about, long_about = None)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info`, `kernelgate=debug`.
    #[arg(long, global = true, default_value = "info", env = "KERNELGATE_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the built-in Rhai kernel, or launch and manage an installed kernelspec.
    ///
    /// Without --kernel, the built-in Rhai kernel runs in this process on the connection file
    /// given by -f (or a new one in the Jupyter runtime directory).
    ///
    /// With --kernel NAME, the installed kernelspec NAME (python3, ir, ...) runs as a child:
    /// kernelgate writes its connection file (fresh key and ports, owner-only) to -f or the
    /// runtime directory, starts it in its own process group and Landlock sandbox (--sandbox),
    /// waits until it answers kernel_info, and prints the connection file on stdout. Ctrl-C,
    /// SIGTERM or SIGHUP shut the kernel down (shutdown_request, then SIGTERM, then SIGKILL)
    /// and remove its connection file; if the kernel dies, kernelgate exits with its status.
    Kernel(cmd::kernel::KernelArgs),
    /// List or install kernelspecs.
    #[command(subcommand)]
    Kernelspec(cmd::kernelspec::KernelspecCommand),
    /// Serve kernels over a Jupyter Server compatible REST + WebSocket API (token required).
    Serve(cmd::serve::ServeArgs),
    /// Run code in a running kernel (a connection file, or a host's URL); outputs stream to
    /// stdout/stderr (exit 1 if the code raised).
    Exec(cmd::exec::ExecArgs),
    /// An interactive console attached to a running kernel.
    Console(cmd::console::ConsoleArgs),
    /// Internal: how `kernelgate serve` starts a sandboxed kernel (enter the Landlock domain
    /// the host planned, then exec the kernel).
    #[command(name = "sandbox-exec", hide = true)]
    SandboxExec(cmd::sandbox::LaunchArgs),
}

/// See `main`: the handshake of a WebSocket carries the token.
const QUIET_TUNGSTENITE: &str = "tungstenite=debug";

fn main() -> ExitCode {
    let cli = Cli::parse();
    // tungstenite logs whole handshakes (the Authorization header: the token) at trace level:
    // never below debug, whatever the filter asks.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log))
        .add_directive(QUIET_TUNGSTENITE.parse().unwrap_or_default());
    // Colours only on a terminal: a log file or journal gets plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Kernel(args) => cmd::kernel::run(args),
        Command::Kernelspec(c) => cmd::kernelspec::run(c),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Exec(args) => cmd::exec::run(args),
        Command::Console(args) => cmd::console::run(args),
        Command::SandboxExec(args) => cmd::sandbox::launch(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kernelgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
