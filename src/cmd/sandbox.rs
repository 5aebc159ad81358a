//! The sandbox flags shared by `kernelgate serve` and `kernelgate kernel --kernel NAME`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use kernelgate_host::provision::LaunchHook;
use kernelgate_host::sandbox::{SandboxConfig, SandboxHook};
use kernelgate_sandbox::policy::{Mode, NetworkPolicy, Policy};
use kernelgate_sandbox::Support;

/// Each kernel in its own Landlock domain (see SECURITY.md).
#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// off: no sandbox; on: every protection this Linux offers, saying which are missing;
    /// required: refuse to start unless every protection is available.
    #[arg(long, default_value = "on", value_parser = parse_mode)]
    sandbox: Mode,
    /// Outgoing TCP from kernels: `default` allows ports 53, 80 and 443 plus
    /// --sandbox-allow-port; `none` allows nothing (UDP is not governed by Landlock).
    #[arg(long, default_value = "default", value_parser = parse_network)]
    sandbox_network: NetworkPolicy,
    /// A further path kernels may read (repeatable): data sets, a user site-packages, ...
    #[arg(long = "sandbox-read", value_name = "PATH")]
    read: Vec<PathBuf>,
    /// A further directory kernels may write (repeatable; shared by every kernel).
    #[arg(long = "sandbox-write", value_name = "PATH")]
    write: Vec<PathBuf>,
    /// A further TCP port kernels may connect to (repeatable), e.g. a database's.
    #[arg(long = "sandbox-allow-port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Let kernels create Unix sockets (refused by default: through them a kernel could reach
    /// the user's systemd manager, ssh-agent or D-Bus and start things outside the sandbox).
    /// Python's multiprocessing needs them for its `forkserver` start method (the default from
    /// Python 3.14) and for managers.
    #[arg(long)]
    sandbox_allow_unix_sockets: bool,
    /// Where each sandboxed kernel gets its own working directory (ROOT/<kernel id>).
    /// Default: $XDG_DATA_HOME/kernelgate/kernels (~/.local/share/kernelgate/kernels).
    #[arg(long, value_name = "ROOT")]
    kernel_work_root: Option<PathBuf>,
}

/// `kernelgate sandbox-exec -- PROGRAM ARGS...` (internal, see
/// [`kernelgate_sandbox::launcher`]).
#[derive(Debug, Clone, Args)]
pub struct LaunchArgs {
    /// The kernel's command line.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    argv: Vec<std::ffi::OsString>,
}

/// Enters the planned domain and execs the kernel; returns only if that failed.
pub fn launch(args: LaunchArgs) -> anyhow::Result<std::process::ExitCode> {
    let (program, rest) = args
        .argv
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no kernel command given"))?;
    let err = kernelgate_sandbox::launcher::confine_and_exec(program, rest);
    anyhow::bail!("sandbox-exec {}: {err}", program.to_string_lossy())
}

/// The launcher for this binary (see [`kernelgate_sandbox::launcher::beside`]).
fn launcher() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("locating the kernelgate binary: {e}"))?;
    Ok(kernelgate_sandbox::launcher::beside(&exe))
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse().map_err(|e: kernelgate_sandbox::PolicyError| e.0)
}

fn parse_network(s: &str) -> Result<NetworkPolicy, String> {
    s.parse().map_err(|e: kernelgate_sandbox::PolicyError| e.0)
}

fn default_work_root() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        });
    match data {
        Some(data) => data.join("kernelgate/kernels"),
        // Directly in the (sticky) temporary directory, so that the owner-only check of the
        // work root is the whole story: under a shared parent such as /tmp/kernelgate, whoever
        // created that parent could rename the work root away and put their own in its place.
        None => {
            let uid = kernelgate_zmq::files::euid();
            std::env::temp_dir().join(format!("kernelgate-{uid}-kernels"))
        }
    }
}

impl SandboxArgs {
    /// The hook (None when off), after telling the user on stderr what protects kernels.
    /// `secrets` are never opened to a kernel; `forbidden_ports` never reachable.
    pub fn hook(
        &self,
        secrets: Vec<PathBuf>,
        forbidden_ports: Vec<u16>,
    ) -> anyhow::Result<Option<Arc<dyn LaunchHook>>> {
        if self.sandbox == Mode::Off {
            eprintln!("kernelgate: WARNING: --sandbox off: kernels can read one another's keys, files and outputs");
            return Ok(None);
        }
        let config = SandboxConfig {
            policy: Policy {
                mode: self.sandbox,
                network: self.sandbox_network,
                extra_read: self.read.clone(),
                extra_write: self.write.clone(),
                connect_ports: self.ports.clone(),
                allow_unix_sockets: self.sandbox_allow_unix_sockets,
            },
            work_root: self
                .kernel_work_root
                .clone()
                .unwrap_or_else(default_work_root),
            secrets,
            forbidden_ports,
            launcher: Some(launcher()?),
        };
        let hook = SandboxHook::new(config, Support::probe()).map_err(anyhow::Error::msg)?;
        eprintln!("kernelgate: {}", hook.summary());
        Ok(Some(Arc::new(hook)))
    }
}
