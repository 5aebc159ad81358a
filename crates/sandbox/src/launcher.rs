//! Entering the domain in a launcher process instead of between fork and exec.
//!
//! A `pre_exec` hook forces the standard library to `fork` the host, and a fork copies the
//! host's page tables and file table: with hundreds of kernels running, that cost grew with
//! every kernel (and stalled the host's other threads while it lasted). Without a hook the
//! standard library uses `posix_spawn` (`vfork`-like, nothing copied). So a sandboxed kernel is
//! started as `LAUNCHER sandbox-exec -- PROGRAM ARGS...`: the launcher (a process of ours,
//! single-threaded at that point) reads the plan from its environment, removes it, builds the
//! ruleset, enters it, and execs the kernel, which keeps the launcher's pid. If anything fails,
//! the launcher exits without running the kernel.
//!
//! The plan holds paths and port numbers only, never a key: it may sit in the environment.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::confine::Confinement;
use crate::policy::Plan;
use crate::support::Support;

/// The environment variable that carries the plan from the host to the launcher.
pub const PLAN_ENV: &str = "KERNELGATE_SANDBOX_PLAN";

/// The launcher's subcommand.
pub const SUBCOMMAND: &str = "sandbox-exec";

/// What the launcher needs: the plan and the Landlock ABI the host probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchPlan {
    /// The Landlock ABI to build the ruleset for.
    pub abi: u32,
    /// What the kernel may touch.
    pub plan: Plan,
}

/// The launcher for the `kernelgate` binary at `exe`: the small `kernelgate-sandbox-exec` beside
/// it when it was built (a workspace build), else `exe` itself (its `sandbox-exec` subcommand,
/// a few milliseconds slower to start).
pub fn beside(exe: &Path) -> PathBuf {
    let small = exe.with_file_name("kernelgate-sandbox-exec");
    if small.is_file() {
        small
    } else {
        exe.to_path_buf()
    }
}

/// `cmd` rewritten to run through `launcher`: same arguments, environment, working directory
/// and process group (0: its own), with the plan added. Standard I/O is the caller's to set.
pub fn wrap(cmd: &Command, launcher: &Path, plan: &LaunchPlan) -> io::Result<Command> {
    let json = serde_json::to_string(plan).map_err(io::Error::other)?;
    let mut wrapped = Command::new(launcher);
    wrapped
        .arg(SUBCOMMAND)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped.env(PLAN_ENV, json).process_group(0);
    Ok(wrapped)
}

/// In the launcher: takes the plan out of the environment, enters the domain and execs
/// `program` with `args`. Returns only on failure.
pub fn confine_and_exec(program: &OsString, args: &[OsString]) -> io::Error {
    let plan = match take_plan() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let confinement = match Confinement::build(&plan.plan, &Support::at_abi(plan.abi)) {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = confinement.enter() {
        return io::Error::other(format!("entering the Landlock domain: {e}"));
    }
    Command::new(program).args(args).exec()
}

fn take_plan() -> io::Result<LaunchPlan> {
    let json = std::env::var(PLAN_ENV)
        .map_err(|_| io::Error::other(format!("{PLAN_ENV} is missing or not UTF-8")))?;
    // Gone before the kernel runs: it is of no use to it.
    std::env::remove_var(PLAN_ENV);
    serde_json::from_str(&json).map_err(|e| io::Error::other(format!("{PLAN_ENV}: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wrap_keeps_arguments_environment_and_directory() {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "ipykernel_launcher", "-f", "/run/k.json"])
            .env("A", "1")
            .env_remove("B")
            .current_dir("/tmp");
        let plan = LaunchPlan {
            abi: 7,
            plan: Plan {
                bind_ports: vec![5000],
                ..Plan::default()
            },
        };
        let w = wrap(&cmd, Path::new("/usr/bin/kernelgate"), &plan).unwrap();
        assert_eq!(w.get_program(), "/usr/bin/kernelgate");
        let args: Vec<_> = w.get_args().collect();
        assert_eq!(
            args,
            [
                "sandbox-exec",
                "--",
                "python3",
                "-m",
                "ipykernel_launcher",
                "-f",
                "/run/k.json"
            ]
        );
        let envs: Vec<_> = w.get_envs().collect();
        assert!(envs.contains(&("A".as_ref(), Some("1".as_ref()))));
        assert!(envs.contains(&("B".as_ref(), None)));
        let carried = envs
            .iter()
            .find(|(k, _)| *k == PLAN_ENV)
            .and_then(|(_, v)| *v)
            .unwrap();
        let back: LaunchPlan = serde_json::from_str(carried.to_str().unwrap()).unwrap();
        assert_eq!(back, plan);
        assert_eq!(w.get_current_dir(), Some(Path::new("/tmp")));
    }
}
