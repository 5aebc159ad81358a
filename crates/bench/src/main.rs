//! `kernelgate-bench`: every speed claim as a ratio measured side by side in one run.
//!
//! Each subcommand runs a Python peer (the reference stack in the project's virtual environment)
//! and ours on the same work, and prints the peer's figure, ours and the ratio. A missing or broken
//! Python environment is an error, never a skip.

mod host;
mod kernel;
mod procs;
mod python;
mod report;
mod sandbox;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Side-by-side benchmarks of kernelgate against the Python Jupyter stack.
#[derive(Debug, Parser)]
#[command(name = "kernelgate-bench", version, about)]
struct Cli {
    /// Python interpreter with the pinned jupyter_client (default: <workspace>/.venv/bin/python).
    #[arg(long, global = true, value_name = "PATH")]
    python: Option<PathBuf>,
    /// Print one JSON object per line instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Session sign and verify throughput: jupyter_client's Session against kernelgate-wire.
    Wire(wire::Args),
    /// Kernel round trips (execute, kernel_info), startup and memory: ours, Jupyter's, raw libzmq.
    Kernel(kernel::Args),
    /// `kernelgate serve`: WebSocket round trip vs jupyter_server and direct ZeroMQ; N kernels' start, idle CPU, memory.
    Host(host::Args),
    /// The per-kernel Landlock sandbox: kernel start and execute round trip, sandbox on vs off.
    Sandbox(sandbox::Args),
    /// (Internal) the echoing side of `kernel`'s two-process floor; reads its script on stdin.
    #[command(hide = true)]
    FloorEcho,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kernelgate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut report = report::Report::new(cli.json);
    match cli.command {
        Command::Wire(args) => {
            let python = python::Python::locate(cli.python.as_deref())?;
            wire::run(&args, &python, &mut report)
        }
        Command::Kernel(args) => {
            let python = python::Python::locate(cli.python.as_deref())?;
            kernel::run(&args, &python, cli.json)
        }
        Command::Host(args) => {
            let python = python::Python::locate(cli.python.as_deref())?;
            host::run(&args, &python, cli.json)
        }
        Command::Sandbox(args) => sandbox::run(&args, cli.json),
        Command::FloorEcho => kernel::floor_echo_process(),
    }
}
