//! `sandbox`: what the per-kernel Landlock domain costs, measured side by side in one run.
//!
//! The built-in kernel is launched exactly as `kernelgate serve` launches it, through the host's
//! own [`SandboxHook`] (working directory, HOME and TMPDIR set in both cases, so only the domain
//! differs): once with the hook (sandbox on) and once without (off), alternating, so that a
//! machine's drift hits both alike.
//! - `start`: building the ruleset + spawning -> first `kernel_info_reply` at a fresh client
//!   (median of `--starts`). Target: the sandbox adds under 5 ms.
//! - `execute`: `execute_request "1+1"` -> reply round trips on the two kernels, interleaved in
//!   blocks. Target: no measurable difference (we report the ratio of medians; within the
//!   run-to-run noise of ~5 % counts as none).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use kernelgate_client::{BlockingKernelClient, Channel, ClientConfig};
use kernelgate_host::provision::{builtin_spec, pick_ports, LaunchContext, LaunchHook};
use kernelgate_host::sandbox::{SandboxConfig, SandboxHook};
use kernelgate_sandbox::policy::Policy;
use kernelgate_sandbox::Support;
use kernelgate_wire::{ConnectionInfo, Transport};
use serde_json::json;

use crate::kernel::baselines::check_ok;
use crate::kernel::{stats, time_rounds};
use crate::procs::{kernelgate_binary, Child};

/// Options of `sandbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Kernel starts timed per setting (the median is reported).
    #[arg(long, default_value_t = 15)]
    starts: usize,
    /// Timed execute round trips per setting.
    #[arg(long, default_value_t = 4000)]
    rounds: usize,
    /// The `kernelgate` binary (default: next to this one, built with cargo if missing).
    #[arg(long, value_name = "PATH")]
    kernelgate: Option<PathBuf>,
}

struct Launcher {
    bin: PathBuf,
    dir: tempfile::TempDir,
    hook: SandboxHook,
    count: usize,
}

impl Launcher {
    /// Starts the built-in kernel, sandboxed or not; returns it and its start time in ms.
    fn start(&mut self, sandboxed: bool) -> Result<(Child, PathBuf, f64)> {
        self.count += 1;
        let id = format!("k{}", self.count);
        let file = self.dir.path().join(format!("runtime/kernel-{id}.json"));
        let t0 = Instant::now();
        let mut info = ConnectionInfo::generate(Transport::Tcp, "127.0.0.1")?;
        let ports = pick_ports("127.0.0.1")?;
        for ((channel, _), port) in info.ports().into_iter().zip(ports) {
            info.set_port(channel, port);
        }
        kernelgate_zmq::files::write_private_file_atomic(&file, &info.to_json_with_secrets())?;
        let spec = builtin_spec(&self.bin);
        let program = self.bin.to_string_lossy().into_owned();
        let mut cmd = Command::new(&self.bin);
        cmd.args(["kernel", "--log", "warn", "-f"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let work = self.dir.path().join("work").join(&id);
        if sandboxed {
            let ctx = LaunchContext {
                kernel_id: &id,
                spec: &spec,
                program: &program,
                connection_file: &file,
                ports,
            };
            self.hook
                .prepare(&ctx, &mut cmd)
                .map_err(|e| anyhow!("sandbox: {e}"))?;
        } else {
            // The same surroundings without the domain.
            std::fs::create_dir_all(work.join(".tmp"))?;
            cmd.current_dir(&work)
                .env("HOME", &work)
                .env("TMPDIR", work.join(".tmp"));
        }
        let kernel = Child(cmd.spawn().context("spawning the kernel")?);
        let config = ClientConfig {
            timeout: Duration::from_secs(20),
            ..ClientConfig::default()
        };
        let mut client = BlockingKernelClient::from_file(&file, config)?;
        client.kernel_info()?;
        Ok((kernel, file, t0.elapsed().as_secs_f64() * 1e3))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the benchmark and prints the table (or JSON lines).
pub fn run(args: &Args, json_out: bool) -> Result<()> {
    let support = Support::probe();
    if support.abi == 0 {
        anyhow::bail!("this Linux has no Landlock: nothing to measure");
    }
    let bin = kernelgate_binary(args.kernelgate.as_deref())?;
    let dir = tempfile::tempdir()?;
    let runtime = dir.path().join("runtime");
    kernelgate_zmq::files::ensure_private_dir(&runtime)?;
    let hook = SandboxHook::new(
        SandboxConfig {
            policy: Policy::default(),
            work_root: dir.path().join("work"),
            secrets: vec![runtime],
            forbidden_ports: vec![],
            // As `kernelgate serve` starts kernels: through `kernelgate sandbox-exec`.
            launcher: Some(kernelgate_sandbox::launcher::beside(&bin)),
        },
        support.clone(),
    )
    .map_err(|e| anyhow!(e))?;
    let mut launcher = Launcher {
        bin,
        dir,
        hook,
        count: 0,
    };
    // Starts, alternating; one warm-up each so page cache and the loader are warm for both.
    let mut starts: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..=args.starts {
        for (sandboxed, times) in [false, true].into_iter().zip(starts.iter_mut()) {
            let (kernel, _, ms) = launcher.start(sandboxed)?;
            drop(kernel);
            if round > 0 {
                times.push(ms);
            }
        }
    }
    // Round trips, on one kernel of each kind, in alternating blocks.
    let (off_kernel, off_file, _) = launcher.start(false)?;
    let (on_kernel, on_file, _) = launcher.start(true)?;
    let mut clients = [client(&off_file)?, client(&on_file)?];
    let execute = json!({"code": "1+1", "silent": false, "store_history": false,
        "user_expressions": {}, "allow_stdin": false, "stop_on_error": true});
    let blocks = 10;
    let per_block = (args.rounds / blocks).max(1);
    let mut samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for block in 0..blocks {
        for (c, medians) in clients.iter_mut().zip(samples.iter_mut()) {
            let s = time_rounds(per_block, if block == 0 { 200 } else { 20 }, || {
                check_ok(&c.request(Channel::Shell, "execute_request", execute.clone())?)
            })?;
            medians.push(s.median);
        }
    }
    drop((off_kernel, on_kernel));
    let rtt = [median(samples[0].clone()), median(samples[1].clone())];
    let all_rtt = stats(samples.concat());
    let start = [median(starts[0].clone()), median(starts[1].clone())];
    let rows = [
        Row {
            case: "kernel start (ms, median)",
            off: start[0],
            on: start[1],
            target: "adds < 5 ms",
            met: start[1] - start[0] < 5.0,
        },
        Row {
            case: "execute round trip (us, median of blocks)",
            off: rtt[0],
            on: rtt[1],
            target: "no measurable difference (< 5 %)",
            met: (rtt[1] / rtt[0] - 1.0).abs() < 0.05,
        },
    ];
    print(&rows, &support, json_out, all_rtt.p99);
    Ok(())
}

fn client(file: &Path) -> Result<BlockingKernelClient> {
    Ok(BlockingKernelClient::from_file(
        file,
        ClientConfig::default(),
    )?)
}

struct Row {
    case: &'static str,
    off: f64,
    on: f64,
    target: &'static str,
    met: bool,
}

fn print(rows: &[Row], support: &Support, json_out: bool, p99: f64) {
    if json_out {
        for r in rows {
            println!(
                "{}",
                json!({"case": r.case, "sandbox_off": r.off, "sandbox_on": r.on,
                       "difference": r.on - r.off, "ratio": r.on / r.off,
                       "target": r.target, "met": r.met, "landlock_abi": support.abi})
            );
        }
        return;
    }
    println!(
        "built-in kernel, Landlock ABI {}, sandbox off vs on (execute p99 over both: {p99:.0} us)",
        support.abi
    );
    println!(
        "{:<42} {:>12} {:>12} {:>11} {:>7}  target",
        "case", "sandbox off", "sandbox on", "difference", "ratio"
    );
    for r in rows {
        println!(
            "{:<42} {:>12.2} {:>12.2} {:>+11.2} {:>6.3}x  {} {}",
            r.case,
            r.off,
            r.on,
            r.on - r.off,
            r.on / r.off,
            r.target,
            if r.met { "met" } else { "MISSED" }
        );
    }
}
