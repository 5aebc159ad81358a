//! Child processes and /proc readings shared by the `kernel` and `host` benchmarks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::python::workspace_root;

/// A child process stopped on drop: SIGTERM (so a kernel or host cleans up), then SIGKILL if it
/// has not exited within 10 s.
pub struct Child(pub std::process::Child);

impl Child {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM and wait for the exit; an error if it takes more than 10 s.
    pub fn stop(mut self) -> Result<()> {
        if self.terminate_and_wait(Duration::from_secs(10)) {
            Ok(())
        } else {
            bail!("pid {} did not stop within 10 s of SIGTERM", self.pid())
        }
    }

    /// Sends SIGTERM and waits up to `grace`; true when the process has exited.
    fn terminate_and_wait(&mut self, grace: Duration) -> bool {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return true;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < grace {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.terminate_and_wait(Duration::from_secs(10)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The built-in kernel's program and leading arguments for the `kernelgate` binary `bin`: the
/// lean `kernelgate-kernel` next to it if there is one (as the host and the installed
/// kernelspec use), else `kernelgate kernel`.
pub fn builtin_kernel_command(bin: &Path) -> (PathBuf, &'static [&'static str]) {
    let lean = bin.with_file_name("kernelgate-kernel");
    if lean.is_file() {
        (lean, &[])
    } else {
        (bin.to_path_buf(), &["kernel"])
    }
}

/// Spawns the built-in kernel (see [`builtin_kernel_command`]) with `-f FILE`, and waits until it
/// has written its connection file (atomically, so an existing file is complete).
pub fn start_builtin_kernel(bin: &Path, file: &Path) -> Result<Child> {
    let t0 = Instant::now();
    let (program, lead) = builtin_kernel_command(bin);
    let child = Command::new(&program)
        .args(lead)
        .args(["--log", "warn", "-f"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut kernel = Child(child);
    while !file.exists() {
        if let Some(status) = kernel.0.try_wait()? {
            bail!(
                "our kernel exited ({status}) before writing {}",
                file.display()
            );
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("our kernel wrote no connection file within 20 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(kernel)
}

/// A `... kB` field of /proc/PID/status (e.g. `VmRSS:`), in MiB.
pub fn status_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no {field} for pid {pid}"))?;
    Ok(kb / 1024.0)
}

/// Resident memory of `pid` in MiB.
pub fn vmrss_mib(pid: u32) -> Result<f64> {
    status_mib(pid, "VmRSS:")
}

/// The release `kernelgate` binary: `explicit`, else `<target dir>/release/kernelgate` (the target
/// dir this bench binary lives in), brought up to date with `cargo build --release`, together
/// with the lean `kernelgate-kernel` beside it.
pub fn kernelgate_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("cannot find the target directory of {}", exe.display()))?;
    let bin = target.join("release/kernelgate");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building {} (cargo build --release -p kernelgate -p kernelgate-kernel --bins) ...",
        bin.display()
    );
    let mut build = Command::new(cargo);
    // `cargo run` gave this process the bench package's CARGO_PKG_* variables. The inner cargo
    // compares the `env!` values recorded for kernelgate (its description, its version) with its
    // own environment, finds them changed and relinks kernelgate with LTO, about a minute, on
    // every run and again on the next plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
        {
            build.env_remove(name.as_ref());
        }
    }
    let status = build
        .args(["build", "--release", "--quiet", "-p", "kernelgate", "-p"])
        .args(["kernelgate-kernel", "--bins"])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .status()
        .context("running cargo build --release -p kernelgate -p kernelgate-kernel --bins")?;
    if !status.success() || !bin.exists() {
        bail!(
            "no up-to-date kernelgate binary at {} (cargo: {status}); build it with \
             `cargo build --release --bin kernelgate` or pass --kernelgate PATH",
            bin.display()
        );
    }
    Ok(bin)
}

/// The fields of /proc/PID/stat after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = s.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    // After ')': state(0) ppid(1) ... utime(11) stime(12).
    stat_fields(pid)
        .map(|f| {
            f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The live (non-zombie) child processes of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(f) = stat_fields(p) {
            // Zombies (state Z) are not kernels any more.
            if f.get(1).and_then(|v| v.parse::<u32>().ok()) == Some(pid)
                && f.first().map(String::as_str) != Some("Z")
            {
                out.push(p);
            }
        }
    }
    out
}

/// Resident memory in MiB, 0 for a process that is gone.
pub fn rss_mib(pid: u32) -> f64 {
    vmrss_mib(pid).unwrap_or(0.0)
}

/// Clock ticks per second, the unit of [`cpu_ticks`].
pub fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|v| *v > 0.0)
        .unwrap_or(100.0)
}
