//! `kernelgate kernel --kernel NAME`: an installed kernelspec launched and managed as a child.
//!
//! The host's launcher does the launching (connection file, process group, sandbox hook); this
//! module waits until the kernel answers kernel_info, then until it dies or a signal asks us
//! to stop it, and shuts it down with the host's escalation.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use kernelgate_host::process::{stop_child, StopPath};
use kernelgate_host::provision::{self, LaunchSpec, ProvisionConfig, Signal};
use kernelgate_host::tokio;
use kernelgate_host::tokio::signal::unix::{signal, SignalKind};
use kernelgate_host::{zmqio, ShutdownWaits, BUILTIN_KERNEL};
use kernelgate_wire::kernelspec::search_dirs;
use kernelgate_zmq::files;
use serde_json::Value;

use super::KernelArgs;
use crate::cmd::kernelspec::{find_kernelspecs_in, path_env};

/// How long a launched kernel has to answer kernel_info (as `kernelgate serve`).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a kernel that writes its own connection file has to write it.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn run(args: &KernelArgs, name: &str) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(manage(args, name))
}

async fn manage(args: &KernelArgs, name: &str) -> anyhow::Result<ExitCode> {
    let spec = find_spec(&args.kernel_dirs, name)?;
    anyhow::ensure!(
        !args.curve || provision::supports_curve(&spec.spec),
        "--curve: kernelspec {name} does not list curve in metadata.supported_encryption"
    );
    let runtime_dir = files::runtime_dir();
    files::ensure_private_dir(&runtime_dir)
        .with_context(|| format!("runtime directory {}", runtime_dir.display()))?;
    let id = uuid::Uuid::new_v4().to_string();
    let config = ProvisionConfig {
        runtime_dir: runtime_dir.clone(),
        ip: args.ip.clone(),
        startup_timeout: STARTUP_TIMEOUT,
        prefix: String::new(),
        hook: args.sandbox.hook(vec![runtime_dir], Vec::new())?,
        env_remove: vec!["KERNELGATE_TOKEN_FILE".into()],
        curve: args.curve,
    };
    let path = match &args.connection_file {
        // The kernel starts in its own working directory: give it an absolute path.
        Some(p) => new_file_path(p)?,
        None => provision::connection_file_path(&config, &id),
    };
    // Signals are recorded from here on, so one arriving during the launch is not lost.
    let signals = Signals::new()?;
    let result = launch_and_supervise(&config, &spec, &id, path, signals).await;
    // The kernel's TMPDIR goes (as in `kernelgate serve`); its working directory stays.
    if let Some(hook) = &config.hook {
        hook.finished(&id);
    }
    result
}

/// Launches kernel `id` with its connection file at `path`, waits until it is ready, then until
/// it dies or a signal stops it. No process of it and no connection file outlive this.
async fn launch_and_supervise(
    config: &ProvisionConfig,
    spec: &LaunchSpec,
    id: &str,
    path: PathBuf,
    mut signals: Signals,
) -> anyhow::Result<ExitCode> {
    let name = &spec.name;
    let launched = provision::launch_at(config, spec, id, path)
        .await
        .map_err(|e| anyhow!("launching kernel {name}: {e}"))?;
    let provision::Launched {
        mut child,
        pid,
        connection_file,
        info,
        sandbox,
    } = launched;
    let _file = files::RemoveOnDrop::new(connection_file.clone());
    let mut group = GroupGuard(Some(pid));
    report_sandbox(&sandbox);
    let ctx = kernelgate_zmq::Context::new().context("creating the ZeroMQ context")?;
    let waits = ShutdownWaits::default();

    // 1. Until it is ready.
    tokio::select! {
        ready = zmqio::wait_ready(&ctx, &info, READY_TIMEOUT) => match ready {
            Ok(_) => {}
            Err(e) => {
                group.disarm();
                stop_child(&waits, &ctx, &info, child, pid).await;
                bail!("kernel {name} (pid {pid}) was stopped: {e}");
            }
        },
        status = child.wait() => {
            let status = status.context("waiting for the kernel")?;
            bail!("kernel {name} (pid {pid}) died at start ({status})");
        }
        sig = signals.recv() => {
            group.disarm();
            eprintln!("kernelgate: {sig} before the kernel was ready: shutting it down");
            stop_child(&waits, &ctx, &info, child, pid).await;
            return Ok(ExitCode::SUCCESS);
        }
    }
    let shown = connection_file.display();
    println!(
        "kernelgate: kernel {name} ({}) ready, pid {pid}; connection file: {shown}",
        spec.spec.display_name
    );
    println!("kernelgate: connect with: kernelgate console --existing {shown}");

    // 2. Until it dies or we are told to stop.
    tokio::select! {
        status = child.wait() => {
            let status = status.context("waiting for the kernel")?;
            // Its own children go with it (the guard kills what is left of its group).
            drop(group);
            Ok(exited(name, status))
        }
        sig = signals.recv() => {
            group.disarm();
            eprintln!("kernelgate: {sig}: shutting the kernel down");
            let how = match stop_child(&waits, &ctx, &info, child, pid).await {
                StopPath::Requested => "on shutdown_request",
                StopPath::Terminated => "on SIGTERM",
                StopPath::Killed => "killed with SIGKILL",
            };
            eprintln!("kernelgate: kernel {name} stopped ({how})");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The kernelspec `name`: in `dirs` if given, else on the Jupyter search path; the built-in
/// kernel is always `rhai` (as in `kernelgate serve`).
fn find_spec(dirs: &[PathBuf], name: &str) -> anyhow::Result<LaunchSpec> {
    if name == BUILTIN_KERNEL {
        let exe = std::env::current_exe().context("locating the kernelgate binary")?;
        return Ok(provision::builtin_spec(&exe));
    }
    let searched = if dirs.is_empty() {
        search_dirs(&path_env())
    } else {
        dirs.to_vec()
    };
    let mut specs = provision::load_specs(&find_kernelspecs_in(&searched));
    if let Some(spec) = specs.remove(name) {
        return Ok(spec);
    }
    let mut known: Vec<&str> = specs.keys().map(String::as_str).collect();
    known.push(BUILTIN_KERNEL);
    known.sort_unstable();
    known.dedup();
    let searched: Vec<String> = searched.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "no kernelspec named {name:?}; known: {} (searched {})",
        known.join(", "),
        searched.join(", ")
    )
}

/// `-f FILE` with `--kernel`: a new file, made absolute.
fn new_file_path(p: &Path) -> anyhow::Result<PathBuf> {
    if p.symlink_metadata().is_ok() {
        bail!(
            "connection file {} already exists: with --kernel, kernelgate writes a fresh one \
             (new key and ports); remove it or name another",
            p.display()
        );
    }
    std::path::absolute(p).with_context(|| format!("connection file {}", p.display()))
}

/// What protects the kernel, on stderr (the host-wide line was printed with the hook).
fn report_sandbox(sandbox: &Value) {
    if sandbox.is_null() {
        return;
    }
    if sandbox["enabled"] == Value::Bool(true) {
        let dir = sandbox["work_dir"].as_str().unwrap_or("?");
        eprintln!("kernelgate: kernel sandboxed; its working directory: {dir}");
    } else {
        let reason = sandbox["reason"]
            .as_str()
            .unwrap_or("this Linux has no Landlock");
        eprintln!("kernelgate: WARNING: kernel NOT sandboxed: {reason}");
    }
}

/// Reports a kernel that exited on its own; our exit code is its (a signal N gives 128 + N).
fn exited(name: &str, status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        eprintln!("kernelgate: kernel {name} exited ({status})");
        return ExitCode::SUCCESS;
    }
    eprintln!("kernelgate: kernel {name} died ({status})");
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .and_then(|c| u8::try_from(c).ok())
        .filter(|c| *c != 0)
        .unwrap_or(1);
    ExitCode::from(code)
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP: each asks us to shut the kernel down.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        let listen = |kind| signal(kind).context("installing signal handlers");
        Ok(Signals {
            int: listen(SignalKind::interrupt())?,
            term: listen(SignalKind::terminate())?,
            hup: listen(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Kills the kernel's process group when dropped, unless disarmed: no kernel outlives us on an
/// unexpected error, and nothing it started outlives it.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = provision::signal_group(pgid, Signal::SIGKILL);
        }
    }
}
