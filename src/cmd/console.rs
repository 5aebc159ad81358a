//! `kernelgate console --existing FILE`: an interactive console, as `jupyter console` is.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kernelgate_client::content::Status;
use kernelgate_client::{BlockingKernelClient, ClientConfig, ExecuteOptions, HeartbeatConfig};
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

use super::exec::{connect, explain, seconds, Printer};

/// Flags of `kernelgate console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The kernel's connection file: a path, or a file name (or part of one) in the Jupyter
    /// runtime directory.
    #[arg(long, value_name = "FILE")]
    pub existing: String,
    /// Seconds to wait for the kernel to answer a request (code may run as long as it likes).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,
}

/// How the console watches the kernel's heartbeat.
const CONSOLE_HEARTBEAT: HeartbeatConfig = HeartbeatConfig {
    interval: Duration::from_secs(2),
    timeout: Duration::from_secs(2),
    max_failures: 5,
};

pub fn run(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let timeout = seconds(args.timeout)?;
    let (path, mut client) = connect(&args.existing, timeout)?;
    let info = client
        .kernel_info()
        .map_err(|e| explain(e, "kernel_info_reply", timeout))?;
    println!(
        "kernelgate console: {} {} ({}) on {}",
        info.implementation,
        info.implementation_version,
        info.language_info.name,
        path.display()
    );
    if !info.banner.trim().is_empty() {
        println!("{}", info.banner.trim_end());
    }
    println!("Ctrl-C interrupts running code; Ctrl-D, `exit` or `quit` leaves.\n");
    // A cell may run for a year, but not a dead kernel's: its heartbeat thread answers even
    // while code runs, so silence for about ten seconds means it is gone.
    client
        .inner_mut()
        .start_heartbeat_monitor(CONSOLE_HEARTBEAT)
        .context("starting the heartbeat monitor")?;

    let executing = Arc::new(AtomicBool::new(false));
    interrupt_on_ctrl_c(path, executing.clone(), timeout)?;

    let mut editor = DefaultEditor::new().context("starting the line editor")?;
    let history = history_file();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut count: i64 = 1;
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            format!("In [{count}]: ")
        } else {
            format!("{:>width$}: ", "...", width = format!("In [{count}]").len())
        };
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading a line"),
        };
        if buffer.is_empty() {
            if line.trim().is_empty() {
                continue;
            }
            if matches!(line.trim(), "exit" | "quit" | "exit()" | "quit()") {
                break;
            }
        } else {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        // An empty line ends a multi-line cell; otherwise ask the kernel.
        if !line.trim().is_empty() {
            match client.is_complete(&buffer) {
                Ok(r) if r.status == "incomplete" => continue,
                Ok(_) => {}
                Err(e) => eprintln!("is_complete failed: {e}"),
            }
        }
        let code = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(code.as_str());
        count = execute(&mut client, &code, count, &executing)?;
        println!();
    }
    if let Some(h) = &history {
        save_history(&mut editor, h);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs one cell; returns the next execution count.
fn execute(
    client: &mut BlockingKernelClient,
    code: &str,
    count: i64,
    executing: &AtomicBool,
) -> anyhow::Result<i64> {
    let options = ExecuteOptions {
        allow_stdin: true,
        // Code runs until it ends or is interrupted.
        timeout: Some(Duration::from_secs(365 * 86_400)),
        // The printer shows outputs as they come; none need keeping.
        keep_output_bytes: 0,
        ..ExecuteOptions::default()
    };
    let mut printer = Printer {
        out_prompt: Some(count),
    };
    executing.store(true, Ordering::SeqCst);
    let result = client.execute(code, &options, &mut printer);
    executing.store(false, Ordering::SeqCst);
    match result {
        Ok(outcome) => {
            if outcome.reply.status == Status::Aborted {
                eprintln!("(aborted)");
            }
            Ok(outcome.reply.execution_count.map_or(count + 1, |n| n + 1))
        }
        Err(kernelgate_client::Error::Aborted { .. }) => {
            eprintln!("(aborted)");
            Ok(count)
        }
        Err(e) => Err(anyhow::Error::new(e).context("executing")),
    }
}

/// Ctrl-C while code runs sends `interrupt_request` on control, from a second connection (the
/// first one is busy waiting for the code). At the prompt the line editor handles Ctrl-C itself.
fn interrupt_on_ctrl_c(
    path: PathBuf,
    executing: Arc<AtomicBool>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT])
        .context("installing the Ctrl-C handler")?;
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            let mut client: Option<BlockingKernelClient> = None;
            for _ in signals.forever() {
                if !executing.load(Ordering::SeqCst) {
                    continue;
                }
                if client.is_none() {
                    let config = ClientConfig {
                        timeout,
                        ..ClientConfig::default()
                    };
                    match BlockingKernelClient::from_file(&path, config) {
                        Ok(c) => client = Some(c),
                        Err(e) => {
                            eprintln!("\ncannot interrupt: {e}");
                            continue;
                        }
                    }
                }
                if let Some(c) = client.as_mut() {
                    eprintln!("\nKeyboardInterrupt: interrupting the kernel");
                    if let Err(e) = c.interrupt_request() {
                        eprintln!("interrupt failed: {e}");
                    }
                }
            }
        })?;
    Ok(())
}

/// `$JUPYTER_DATA_DIR/kernelgate_console_history`, else `~/.local/share/kernelgate/console_history`
/// (created owner-only).
fn history_file() -> Option<PathBuf> {
    let file = if let Some(d) = std::env::var_os("JUPYTER_DATA_DIR").filter(|d| !d.is_empty()) {
        PathBuf::from(d).join("kernelgate_console_history")
    } else {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
        PathBuf::from(home).join(".local/share/kernelgate/console_history")
    };
    let dir = file.parent()?;
    if !dir.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .ok()?;
    }
    Some(file)
}

fn save_history(editor: &mut DefaultEditor, file: &std::path::Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // Create it owner-only before rustyline writes to it; tighten an existing one.
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file);
    let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
    if let Err(e) = editor.save_history(file) {
        tracing::debug!(error = %e, "could not save the console history");
    }
}
