//! Launching kernel processes: connection files, argv substitution, process groups, signals.
//!
//! Two ways to get ports:
//! - the built-in kernel (`kernelgate kernel -f FILE` with FILE absent) binds `127.0.0.1:*`
//!   itself and writes FILE (owner-only, atomically); we wait for the file. No port race.
//! - any other kernelspec gets a file we write: a fresh key and five ports found by binding
//!   port 0 and closing again. Another process can take a port between our close and the
//!   kernel's bind (jupyter_client has the same race; JEP 66's handshake is the real fix).
//!   A kernel that loses the race dies at start and the restart policy starts it again with
//!   new ports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kernelgate_wire::kernelspec::ArgvVars;
use kernelgate_wire::{Channel, ConnectionInfo, InterruptMode, KernelSpec, Transport};
use kernelgate_zmq::files;
use nix::sys::signal::killpg;
use nix::unistd::Pid;

/// The signals [`signal_group`] sends (re-exported: callers need no `nix` of their own).
pub use nix::sys::signal::Signal;

/// A kernelspec ready to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Kernelspec name.
    pub name: String,
    /// The parsed `kernel.json`.
    pub spec: KernelSpec,
    /// Directory holding `kernel.json` and its resources (none for the built-in kernel).
    pub resource_dir: Option<PathBuf>,
    /// The kernel writes its own connection file (the built-in kernel does).
    pub writes_own_connection_file: bool,
}

/// What a [`LaunchHook`] knows about the kernel being launched.
#[derive(Debug)]
pub struct LaunchContext<'a> {
    /// Kernel id.
    pub kernel_id: &'a str,
    /// Its kernelspec.
    pub spec: &'a LaunchSpec,
    /// argv[0], as in the kernelspec (resolved on PATH by whoever needs it).
    pub program: &'a str,
    /// Its connection file (already written).
    pub connection_file: &'a Path,
    /// The five ports it will listen on.
    pub ports: [u16; 5],
}

/// Hook run on every kernel command before it is spawned: the sandbox sets up the kernel's
/// Landlock domain here (entered through `pre_exec`) and its working directory.
pub trait LaunchHook: Send + Sync + std::fmt::Debug {
    /// Adjusts `cmd`; returns the kernel's sandbox status for its model and logs. An error
    /// refuses the launch (a kernel never runs less confined than configured).
    fn prepare(
        &self,
        ctx: &LaunchContext<'_>,
        cmd: &mut std::process::Command,
    ) -> Result<serde_json::Value, String>;
    /// The host-wide status for `GET /api`.
    fn describe(&self) -> serde_json::Value;
    /// Kernel `kernel_id` is gone for good (shut down or deleted): drop what is temporary.
    fn finished(&self, _kernel_id: &str) {}
}

/// Settings shared by all launches.
#[derive(Debug, Clone)]
pub struct ProvisionConfig {
    /// Where connection files go (owner-only).
    pub runtime_dir: PathBuf,
    /// IP the kernels listen on.
    pub ip: String,
    /// How long a kernel may take to write its connection file.
    pub startup_timeout: Duration,
    /// Substituted for `{prefix}`.
    pub prefix: String,
    /// Optional sandbox hook.
    pub hook: Option<Arc<dyn LaunchHook>>,
    /// Environment variables never passed to kernels.
    pub env_remove: Vec<String>,
    /// Encrypt every kernel whose kernelspec supports it (`metadata.supported_encryption`
    /// includes `curve`) with CurveZMQ: its connection file gets a fresh keypair.
    pub curve: bool,
}

/// A launched kernel process.
#[derive(Debug)]
pub struct Launched {
    /// The child (we are its parent, so we reap it).
    pub child: tokio::process::Child,
    /// Its pid, which is also its process group id.
    pub pid: i32,
    /// Its connection file.
    pub connection_file: PathBuf,
    /// The connection info (key inside; never logged).
    pub info: ConnectionInfo,
    /// The sandbox status the hook reported (null without a hook).
    pub sandbox: serde_json::Value,
}

/// Why a launch failed.
#[derive(Debug)]
pub struct LaunchError(pub String);

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LaunchError {}

fn lerr(msg: impl Into<String>) -> LaunchError {
    LaunchError(msg.into())
}

/// The connection file path of kernel `id`.
pub fn connection_file_path(config: &ProvisionConfig, id: &str) -> PathBuf {
    config.runtime_dir.join(format!("kernel-{id}.json"))
}

/// Whether a kernelspec says its kernel speaks CURVE (`metadata.supported_encryption`: a list
/// holding "curve", or that string, as jupyter_client reads it).
pub fn supports_curve(spec: &KernelSpec) -> bool {
    let is_curve = |v: &serde_json::Value| {
        v.as_str()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("curve"))
    };
    match spec.metadata.get("supported_encryption") {
        Some(serde_json::Value::Array(list)) => list.iter().any(is_curve),
        Some(one) => is_curve(one),
        None => false,
    }
}

/// Five distinct free TCP ports on `ip`, found by binding port 0 (all five held open together,
/// then closed: see the module docs for the race).
pub fn pick_ports(ip: &str) -> std::io::Result<[u16; 5]> {
    let mut held = Vec::with_capacity(5);
    let mut ports = [0u16; 5];
    for p in ports.iter_mut() {
        let l = std::net::TcpListener::bind((ip, 0))?;
        *p = l.local_addr()?.port();
        held.push(l);
    }
    Ok(ports)
}

/// Launches kernel `id` from `spec`. Returns once the connection file exists (the built-in
/// kernel) or has been written (others); readiness is checked by the caller.
pub async fn launch(
    config: &ProvisionConfig,
    spec: &LaunchSpec,
    id: &str,
) -> Result<Launched, LaunchError> {
    files::ensure_private_dir(&config.runtime_dir).map_err(|e| {
        lerr(format!(
            "runtime directory {}: {e}",
            config.runtime_dir.display()
        ))
    })?;
    launch_at(config, spec, id, connection_file_path(config, id)).await
}

/// Like [`launch`], with the connection file at `path` instead of the runtime directory (a
/// single-kernel launcher's `-f FILE`). Whatever is at `path` is replaced.
pub async fn launch_at(
    config: &ProvisionConfig,
    spec: &LaunchSpec,
    id: &str,
    path: PathBuf,
) -> Result<Launched, LaunchError> {
    let _ = std::fs::remove_file(&path);
    let mut info = None;
    let curve = config.curve && supports_curve(&spec.spec);
    // A sandboxed kernel binds only ports it was given, and an encrypted one gets its keys
    // from us: we write every connection file then.
    if !spec.writes_own_connection_file || config.hook.is_some() || curve {
        let mut ci = ConnectionInfo::generate(Transport::Tcp, &config.ip)
            .map_err(|e| lerr(e.to_string()))?;
        ci.kernel_name = spec.name.clone();
        if curve {
            let (public, secret) = kernelgate_zmq::curve_keypair()
                .map_err(|e| lerr(format!("making a CURVE keypair: {e}")))?;
            ci.curve_publickey = Some(public);
            ci.curve_secretkey = Some(kernelgate_wire::Key::new(secret.as_z85().as_bytes()));
        }
        let ports = pick_ports(&config.ip).map_err(|e| lerr(format!("picking ports: {e}")))?;
        for (ch, port) in [
            Channel::Shell,
            Channel::IoPub,
            Channel::Stdin,
            Channel::Control,
            Channel::Heartbeat,
        ]
        .into_iter()
        .zip(ports)
        {
            ci.set_port(ch, port);
        }
        files::write_private_file_atomic(&path, &ci.to_json_with_secrets())
            .map_err(|e| lerr(format!("writing {}: {e}", path.display())))?;
        info = Some(ci);
    }
    let path_str = path.to_string_lossy().into_owned();
    let resource_dir = spec
        .resource_dir
        .as_ref()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    let argv = spec.spec.command(&ArgvVars {
        connection_file: &path_str,
        resource_dir: &resource_dir,
        prefix: &config.prefix,
    });
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| lerr("kernelspec argv is empty"))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    for k in &config.env_remove {
        cmd.env_remove(k);
    }
    cmd.envs(&spec.spec.env);
    cmd.env("JPY_PARENT_PID", std::process::id().to_string());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut sandbox = serde_json::Value::Null;
    if let (Some(hook), Some(info)) = (&config.hook, &info) {
        let ctx = LaunchContext {
            kernel_id: id,
            spec,
            program,
            connection_file: &path,
            ports: info.ports().map(|(_, port)| port),
        };
        sandbox = hook.prepare(&ctx, &mut cmd).map_err(|e| {
            let _ = std::fs::remove_file(&path);
            lerr(format!("sandbox: {e}"))
        })?;
    }
    // After the hook, which may have replaced the command.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(false);
    let mut child = cmd.spawn().map_err(|e| {
        let _ = std::fs::remove_file(&path);
        lerr(format!("spawning {program}: {e}"))
    })?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| lerr("child has no pid"))?;
    let info = match info {
        Some(i) => i,
        None => match wait_for_file(&path, &mut child, config.startup_timeout).await {
            Ok(i) => i,
            Err(e) => {
                let _ = signal_group(pid, Signal::SIGKILL);
                let _ = child.wait().await;
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        },
    };
    Ok(Launched {
        child,
        pid,
        connection_file: path,
        info,
        sandbox,
    })
}

async fn wait_for_file(
    path: &Path,
    child: &mut tokio::process::Child,
    timeout: Duration,
) -> Result<ConnectionInfo, LaunchError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(2);
    loop {
        match read_connection_file(path) {
            // Waiting longer would not make it acceptable.
            Err(
                e @ (kernelgate_zmq::Error::InsecurePath { .. }
                | kernelgate_zmq::Error::FileTooLarge { .. }),
            ) => return Err(lerr(format!("connection file: {e}"))),
            // Not written yet (or not readable yet): wait on.
            Err(_) => {}
            Ok(bytes) => {
                let info = ConnectionInfo::from_json(&bytes).map_err(|e| lerr(e.to_string()))?;
                info.validate_for_connect()
                    .map_err(|e| lerr(e.to_string()))?;
                return Ok(info);
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(lerr(format!("kernel exited at start ({status})")));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(lerr("kernel did not write its connection file in time"));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// Sends `signal` to the process group `pgid`.
pub fn signal_group(pgid: i32, signal: Signal) -> nix::Result<()> {
    if pgid <= 1 {
        return Err(nix::errno::Errno::EINVAL);
    }
    killpg(Pid::from_raw(pgid), signal)
}

/// Whether process `pid` exists (signal 0).
pub fn process_alive(pid: i32) -> bool {
    pid > 1 && nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
}

/// Reads a connection file a kernel may have written (or rewritten): at most
/// [`ConnectionInfo::MAX_FILE_BYTES`] (a kernel growing its file to gigabytes must not exhaust the
/// host), and only a regular file of ours that no one else can write (a kernel's symlink from its
/// file to one of the host's secrets is refused, not followed).
pub(crate) fn read_connection_file(path: &Path) -> kernelgate_zmq::Result<Vec<u8>> {
    kernelgate_zmq::files::read_owned_no_symlink(path, ConnectionInfo::MAX_FILE_BYTES)
}

/// Whether `pid` still names the process launched with `start_time`: alive and started then.
/// Without a recorded start time the pid alone cannot tell it from a newer process: false.
pub fn is_same_process(pid: i32, start_time: Option<u64>) -> bool {
    start_time.is_some() && process_alive(pid) && process_start_time(pid) == start_time
}

/// The process start time (clock ticks since boot, field 22 of /proc/PID/stat), to tell a
/// re-used pid from the kernel we started.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// How the kernel wants interrupts.
pub fn interrupt_mode(spec: &LaunchSpec) -> InterruptMode {
    spec.spec.interrupt_mode
}

/// The built-in Rhai kernel's spec: `exe kernel -f {connection_file}`, or the lean
/// `kernelgate-kernel -f {connection_file}` when that binary sits next to `exe` (the same kernel
/// without the host's code pages). `kernelgate kernelspec install` writes this same argv.
pub fn builtin_spec(exe: &Path) -> LaunchSpec {
    let lean = exe.with_file_name("kernelgate-kernel");
    let mut argv = if lean.is_file() {
        vec![lean.to_string_lossy().into_owned()]
    } else {
        vec![exe.to_string_lossy().into_owned(), "kernel".into()]
    };
    argv.extend(["-f".into(), "{connection_file}".into()]);
    let spec = KernelSpec {
        argv,
        display_name: "Rhai (kernelgate built-in)".into(),
        language: "rhai".into(),
        env: BTreeMap::new(),
        interrupt_mode: InterruptMode::Signal,
        metadata: serde_json::Map::from_iter([(
            "supported_encryption".to_owned(),
            serde_json::json!(["curve"]),
        )]),
        kernel_protocol_version: Some(kernelgate_wire::PROTOCOL_VERSION.into()),
        extra: serde_json::Map::new(),
    };
    LaunchSpec {
        name: crate::BUILTIN_KERNEL.into(),
        spec,
        resource_dir: None,
        writes_own_connection_file: true,
    }
}

/// Reads the kernelspecs in `dirs` (name -> directory holding kernel.json); unreadable or
/// invalid ones are skipped with a warning.
pub fn load_specs(dirs: &BTreeMap<String, PathBuf>) -> BTreeMap<String, LaunchSpec> {
    let mut out = BTreeMap::new();
    for (name, dir) in dirs {
        let file = dir.join("kernel.json");
        match std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|b| KernelSpec::from_json(&b).map_err(|e| e.to_string()))
        {
            Ok(spec) => {
                out.insert(
                    name.clone(),
                    LaunchSpec {
                        name: name.clone(),
                        spec,
                        resource_dir: Some(dir.clone()),
                        writes_own_connection_file: false,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(kernelspec = %name, "skipping kernelspec {}: {e}", file.display())
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grown_connection_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("tempdir: {e}"));
        let path = dir.path().join("kernel-grown.json");
        let file = std::fs::File::create(&path).unwrap_or_else(|e| unreachable!("create: {e}"));
        // Sparse: 8 GiB claimed, nothing written.
        file.set_len(8 << 30)
            .unwrap_or_else(|e| unreachable!("set_len: {e}"));
        let refused = read_connection_file(&path);
        assert!(matches!(
            refused,
            Err(kernelgate_zmq::Error::FileTooLarge { .. })
        ));
        std::fs::write(&path, b"{}").unwrap_or_else(|e| unreachable!("write: {e}"));
        assert_eq!(read_connection_file(&path).ok(), Some(b"{}".to_vec()));
    }

    #[test]
    fn five_distinct_ports() {
        let ports = pick_ports("127.0.0.1").unwrap_or_default();
        let mut sorted = ports.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
        assert!(ports.iter().all(|p| *p != 0));
    }

    #[test]
    fn own_start_time_is_readable() {
        let me = i32::try_from(std::process::id()).unwrap_or(0);
        assert!(process_start_time(me).is_some());
        assert!(process_alive(me));
    }
}
