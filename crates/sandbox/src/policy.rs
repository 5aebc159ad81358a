//! What a kernel may touch: pure functions from configuration and one kernel's paths and
//! ports to a [`Plan`]. No file is opened here; [`crate::confine`] turns a plan into a ruleset.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Whether kernels are sandboxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No sandbox.
    Off,
    /// Sandbox with everything the running Linux offers; say loudly what is missing.
    #[default]
    On,
    /// Refuse to run unless every protection is available.
    Required,
}

impl FromStr for Mode {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(Mode::Off),
            "on" => Ok(Mode::On),
            "required" => Ok(Mode::Required),
            other => Err(PolicyError(format!(
                "sandbox mode {other:?}: expected off, on or required"
            ))),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Off => "off",
            Mode::On => "on",
            Mode::Required => "required",
        })
    }
}

/// Which TCP ports a kernel may connect to. (Landlock governs TCP only: UDP, and so DNS over
/// UDP, is not restricted by any ABI up to 7.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPolicy {
    /// What a notebook user expects: [`DEFAULT_CONNECT_PORTS`] plus the configured ones.
    #[default]
    Default,
    /// No outgoing TCP connection at all.
    None,
}

impl FromStr for NetworkPolicy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(NetworkPolicy::Default),
            "none" => Ok(NetworkPolicy::None),
            other => Err(PolicyError(format!(
                "sandbox network {other:?}: expected default or none"
            ))),
        }
    }
}

/// DNS over TCP, HTTP and HTTPS: enough for `pip install` and downloads. Kernel ports and
/// the host's API port are never among the allowed ones (the host checks).
pub const DEFAULT_CONNECT_PORTS: [u16; 3] = [53, 80, 443];

/// Directories every kernel may read and execute from: the system, never a home directory.
/// Not /proc: there a kernel reads only its own `/proc/PID` (see [`crate::confine`]) and the
/// system-wide files in [`PROC_READ`], so other processes' environments, memory maps and
/// command lines stay closed. (Landlock's ptrace rule refuses `/proc/PID/mem` of another
/// domain, but as measured on Linux 6.18 not `environ` or `maps`.)
pub const SYSTEM_READ_DIRS: [&str; 10] = [
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/bin",
    "/sbin",
    "/etc",
    "/sys",
    "/proc/sys",
];

/// System-wide /proc files that runtimes read (CPU count, memory, load, mounts).
pub const PROC_READ: [&str; 7] = [
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/loadavg",
    "/proc/uptime",
    "/proc/version",
    "/proc/filesystems",
];

/// Device files every kernel may read and write (the rest of /dev, /dev/shm included, is
/// closed: shared memory would be a channel between kernels).
pub const DEVICE_FILES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Host-wide sandbox configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Off, on or required.
    pub mode: Mode,
    /// Outgoing TCP.
    pub network: NetworkPolicy,
    /// Extra directories or files kernels may read (and execute).
    pub extra_read: Vec<PathBuf>,
    /// Extra directories kernels may write.
    pub extra_write: Vec<PathBuf>,
    /// Extra TCP ports kernels may connect to (ignored with [`NetworkPolicy::None`]).
    pub connect_ports: Vec<u16>,
    /// Let kernels create Unix sockets (see [`crate::seccomp`]): what Python's multiprocessing
    /// needs for its `forkserver` start method and its managers, at the price of every
    /// pathname socket of the user (systemd's, ssh-agent's) being reachable.
    pub allow_unix_sockets: bool,
}

/// A kernelspec's own additions, from `kernel.json` `metadata.kernelgate.sandbox`:
///
/// ```json
/// {"metadata": {"kernelgate": {"sandbox": {
///     "enabled": true, "network": "default", "read": ["/opt/data"], "write": [],
///     "connect_ports": [5432]}}}}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecOverrides {
    /// `false` runs this kernelspec unsandboxed (refused when the mode is `required`).
    pub enabled: Option<bool>,
    /// Replaces the host's network policy for this kernelspec.
    pub network: Option<NetworkPolicy>,
    /// Extra readable paths.
    #[serde(default)]
    pub read: Vec<PathBuf>,
    /// Extra writable directories.
    #[serde(default)]
    pub write: Vec<PathBuf>,
    /// Extra connectable TCP ports.
    #[serde(default)]
    pub connect_ports: Vec<u16>,
}

impl SpecOverrides {
    /// Reads `metadata.kernelgate.sandbox` (None when absent).
    pub fn from_metadata(
        metadata: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<SpecOverrides>, PolicyError> {
        let Some(section) = metadata.get("kernelgate").and_then(|k| k.get("sandbox")) else {
            return Ok(None);
        };
        let overrides = SpecOverrides::deserialize(section)
            .map_err(|e| PolicyError(format!("metadata.kernelgate.sandbox: {e}")))?;
        for p in overrides.read.iter().chain(&overrides.write) {
            if !p.is_absolute() {
                return Err(PolicyError(format!(
                    "metadata.kernelgate.sandbox: {} is not an absolute path",
                    p.display()
                )));
            }
        }
        Ok(Some(overrides))
    }
}

/// One kernel's own paths.
#[derive(Debug, Clone)]
pub struct KernelPaths {
    /// Its connection file (read only; the key inside).
    pub connection_file: PathBuf,
    /// Its working directory (read-write).
    pub work_dir: PathBuf,
    /// Its temporary directory (read-write; TMPDIR).
    pub tmp_dir: PathBuf,
    /// The program it runs, as found on PATH and with symlinks resolved (both, when they
    /// differ: a virtual environment's `bin/python` points into the base installation).
    pub programs: Vec<PathBuf>,
    /// The kernelspec's resource directory (read only).
    pub resource_dir: Option<PathBuf>,
}

/// What one kernel's Landlock domain allows. Everything else is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Read and execute beneath.
    pub read_dirs: Vec<PathBuf>,
    /// Read and execute, one file each.
    pub read_files: Vec<PathBuf>,
    /// Full access beneath.
    pub write_dirs: Vec<PathBuf>,
    /// Read and write (no execute), one file each: devices, and the kernel's own connection
    /// file (ipykernel rewrites it when it holds CURVE keys).
    pub read_write_files: Vec<PathBuf>,
    /// TCP ports it may bind (its own).
    pub bind_ports: Vec<u16>,
    /// TCP ports it may connect to.
    pub connect_ports: Vec<u16>,
    /// Whether it may create Unix sockets (otherwise refused by a seccomp filter).
    #[serde(default)]
    pub unix_sockets: bool,
}

/// A policy that cannot be applied, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// Where a program's installation lives: `PREFIX/bin/NAME` gives `PREFIX` (Python's lib/ and
/// site-packages sit beside bin/), anything else only the file itself (so a binary in a build
/// directory does not open its whole tree). Returns (directories, files).
pub fn program_roots(programs: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for program in programs {
        let parent = program.parent();
        let in_bin = parent.and_then(Path::file_name).is_some_and(|n| n == "bin");
        match parent.and_then(Path::parent) {
            Some(prefix) if in_bin && prefix != Path::new("/") => push_unique(&mut dirs, prefix),
            _ => push_unique(&mut files, program),
        }
    }
    (dirs, files)
}

/// The plan for one kernel listening on `own_ports`.
pub fn plan(
    policy: &Policy,
    overrides: Option<&SpecOverrides>,
    kernel: &KernelPaths,
    own_ports: &[u16],
) -> Plan {
    let mut plan = Plan::default();
    for dir in SYSTEM_READ_DIRS {
        plan.read_dirs.push(PathBuf::from(dir));
    }
    let (dirs, files) = program_roots(&kernel.programs);
    for d in dirs.iter().chain(&kernel.resource_dir) {
        push_unique(&mut plan.read_dirs, d);
    }
    for f in files.iter().chain([&kernel.connection_file]) {
        push_unique(&mut plan.read_files, f);
    }
    for f in PROC_READ {
        push_unique(&mut plan.read_files, Path::new(f));
    }
    let extra_read = policy
        .extra_read
        .iter()
        .chain(overrides.iter().flat_map(|o| &o.read));
    for p in extra_read {
        push_unique(&mut plan.read_dirs, p);
    }
    let extra_write = policy
        .extra_write
        .iter()
        .chain(overrides.iter().flat_map(|o| &o.write));
    for p in [&kernel.work_dir, &kernel.tmp_dir]
        .into_iter()
        .chain(extra_write)
    {
        push_unique(&mut plan.write_dirs, p);
    }
    plan.read_write_files = DEVICE_FILES.iter().map(PathBuf::from).collect();
    plan.read_write_files.push(kernel.connection_file.clone());
    plan.bind_ports = own_ports.to_vec();
    plan.unix_sockets = policy.allow_unix_sockets;
    let network = overrides.and_then(|o| o.network).unwrap_or(policy.network);
    if network == NetworkPolicy::Default {
        let extra = policy
            .connect_ports
            .iter()
            .chain(overrides.iter().flat_map(|o| &o.connect_ports));
        for &port in DEFAULT_CONNECT_PORTS.iter().chain(extra) {
            if !plan.connect_ports.contains(&port) {
                plan.connect_ports.push(port);
            }
        }
    }
    plan
}

impl Plan {
    /// Refuses a plan that would open a secret: a readable or writable directory that holds
    /// (or lies inside) one of `secrets` (the runtime directory, the host's state file and
    /// token), or a readable file among them. `own_file` (the kernel's connection file) is
    /// the one file inside a secret directory a kernel may read. Paths are compared as given:
    /// the caller passes canonical ones.
    pub fn check_secrets(&self, secrets: &[PathBuf], own_file: &Path) -> Result<(), PolicyError> {
        let dirs = self.read_dirs.iter().chain(&self.write_dirs);
        for dir in dirs {
            if let Some(secret) = secrets
                .iter()
                .find(|s| s.starts_with(dir) || dir.starts_with(s))
            {
                return Err(PolicyError(format!(
                    "sandbox rule for {} would open {} to the kernel",
                    dir.display(),
                    secret.display()
                )));
            }
        }
        let files = self.read_files.iter().chain(&self.read_write_files);
        for file in files.filter(|f| f.as_path() != own_file) {
            if let Some(secret) = secrets.iter().find(|s| file.starts_with(s)) {
                return Err(PolicyError(format!(
                    "sandbox rule for {} would open {} to the kernel",
                    file.display(),
                    secret.display()
                )));
            }
        }
        Ok(())
    }

    /// Refuses a plan that would open other kernels' working directories: a directory rule
    /// that holds `work_root` or lies beneath it outside `own_work_dir`, or a file rule beneath
    /// it outside `own_work_dir`. (An interpreter installed in the home directory opens its
    /// prefix, the home, which usually holds the work root.) Paths are compared as given: the
    /// caller passes canonical ones.
    pub fn check_work_root(
        &self,
        work_root: &Path,
        own_work_dir: &Path,
    ) -> Result<(), PolicyError> {
        let others = |p: &Path| p.starts_with(work_root) && !p.starts_with(own_work_dir);
        let dirs = self.read_dirs.iter().chain(&self.write_dirs);
        let files = self.read_files.iter().chain(&self.read_write_files);
        let opened = dirs
            .filter(|d| work_root.starts_with(d) || others(d))
            .chain(files.filter(|f| others(f)))
            .next();
        match opened {
            Some(p) => Err(PolicyError(format!(
                "sandbox rule for {} would open other kernels' working directories ({}); \
                 give --work-root outside it, or install the kernel's interpreter elsewhere",
                p.display(),
                work_root.display()
            ))),
            None => Ok(()),
        }
    }

    /// Every path of the plan passed through `resolve` (symlinks resolved, say), so that a
    /// check compares what Landlock will open, not the names that lead there.
    pub fn map_paths(&self, resolve: impl Fn(&Path) -> PathBuf) -> Plan {
        let map = |list: &[PathBuf]| {
            let mut out = Vec::with_capacity(list.len());
            for p in list {
                push_unique(&mut out, &resolve(p));
            }
            out
        };
        Plan {
            read_dirs: map(&self.read_dirs),
            read_files: map(&self.read_files),
            write_dirs: map(&self.write_dirs),
            read_write_files: map(&self.read_write_files),
            ..self.clone()
        }
    }

    /// Ports that the kernel could reach although it must not (another kernel's, the host's).
    pub fn exposed_ports(&self, forbidden: &[u16]) -> Vec<u16> {
        self.connect_ports
            .iter()
            .copied()
            .filter(|p| forbidden.contains(p))
            .collect()
    }
}

fn push_unique(list: &mut Vec<PathBuf>, path: &Path) {
    if !list.iter().any(|p| p == path) {
        list.push(path.to_path_buf());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> KernelPaths {
        KernelPaths {
            connection_file: "/run/user/1/jupyter/kernel-a.json".into(),
            work_dir: "/home/u/.local/share/kernelgate/kernels/a".into(),
            tmp_dir: "/home/u/.local/share/kernelgate/kernels/a/.tmp".into(),
            programs: vec![
                "/home/u/venv/bin/python".into(),
                "/usr/lib/python3.11/bin/python3.11".into(),
            ],
            resource_dir: Some("/home/u/venv/share/jupyter/kernels/python3".into()),
        }
    }

    #[test]
    fn programs_in_bin_open_their_prefix_others_only_themselves() {
        let (dirs, files) = program_roots(&[
            "/opt/conda/bin/python".into(),
            "/work/target/release/kernelgate".into(),
            "/bin/sh".into(),
        ]);
        assert_eq!(dirs, vec![PathBuf::from("/opt/conda")]);
        assert_eq!(
            files,
            vec![
                PathBuf::from("/work/target/release/kernelgate"),
                PathBuf::from("/bin/sh")
            ]
        );
    }

    #[test]
    fn default_plan() {
        let p = plan(&Policy::default(), None, &kernel(), &[1, 2, 3, 4, 5]);
        assert!(p.read_dirs.contains(&"/usr".into()));
        assert!(p.read_dirs.contains(&"/home/u/venv".into()));
        assert!(!p.read_dirs.iter().any(|d| d == Path::new("/home/u")));
        assert_eq!(p.read_files.first(), Some(&kernel().connection_file));
        assert!(!p.read_dirs.iter().any(|d| d == Path::new("/proc")));
        assert_eq!(p.write_dirs.len(), 2);
        assert_eq!(p.bind_ports, vec![1, 2, 3, 4, 5]);
        assert_eq!(p.connect_ports, DEFAULT_CONNECT_PORTS.to_vec());
        assert!(p
            .check_secrets(&["/run/user/1/jupyter".into()], &kernel().connection_file)
            .is_ok());
    }

    #[test]
    fn other_kernels_work_dirs_are_never_opened() {
        let root = Path::new("/home/u/.local/share/kernelgate/kernels");
        let own = kernel().work_dir;
        let p = plan(&Policy::default(), None, &kernel(), &[]);
        assert!(p.check_work_root(root, &own).is_ok());
        // An interpreter in ~/bin opens ~, which holds the work root.
        let mut k = kernel();
        k.programs = vec!["/home/u/bin/python".into()];
        let p = plan(&Policy::default(), None, &k, &[]);
        assert!(p.check_work_root(root, &own).is_err());
        // Beneath the root, only the kernel's own directory.
        let policy = Policy {
            extra_read: vec![root.join("b")],
            ..Policy::default()
        };
        let p = plan(&policy, None, &kernel(), &[]);
        assert!(p.check_work_root(root, &own).is_err());
    }

    #[test]
    fn paths_are_mapped_and_deduplicated() {
        let p = plan(&Policy::default(), None, &kernel(), &[7]);
        let mapped = p.map_paths(|_| PathBuf::from("/same"));
        assert_eq!(mapped.read_dirs, vec![PathBuf::from("/same")]);
        assert_eq!(mapped.write_dirs, vec![PathBuf::from("/same")]);
        assert_eq!(mapped.bind_ports, vec![7]);
    }

    #[test]
    fn network_none_and_overrides() {
        let policy = Policy {
            network: NetworkPolicy::None,
            connect_ports: vec![8080],
            ..Policy::default()
        };
        assert!(plan(&policy, None, &kernel(), &[]).connect_ports.is_empty());
        let o = SpecOverrides {
            network: Some(NetworkPolicy::Default),
            connect_ports: vec![5432],
            read: vec!["/data".into()],
            ..SpecOverrides::default()
        };
        let p = plan(&policy, Some(&o), &kernel(), &[]);
        assert_eq!(p.connect_ports, vec![53, 80, 443, 8080, 5432]);
        assert!(p.read_dirs.contains(&"/data".into()));
        assert_eq!(p.exposed_ports(&[5432, 9999]), vec![5432]);
    }

    #[test]
    fn secrets_are_never_opened() {
        let policy = Policy {
            extra_read: vec!["/run/user/1".into()],
            ..Policy::default()
        };
        let p = plan(&policy, None, &kernel(), &[]);
        let err = p
            .check_secrets(&["/run/user/1/jupyter".into()], &kernel().connection_file)
            .err();
        assert!(err.is_some_and(|e| e.0.contains("/run/user/1/jupyter")));
        let inside = Policy {
            extra_write: vec!["/run/user/1/jupyter/x".into()],
            ..Policy::default()
        };
        let p = plan(&inside, None, &kernel(), &[]);
        assert!(p
            .check_secrets(&["/run/user/1/jupyter".into()], Path::new("/x"))
            .is_err());
    }

    #[test]
    fn overrides_from_kernel_json_metadata() {
        let meta: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"kernelgate": {"sandbox": {"enabled": false, "network": "none", "read": ["/d"]}}}"#,
        )
        .unwrap_or_default();
        let o = SpecOverrides::from_metadata(&meta).ok().flatten();
        assert_eq!(
            o,
            Some(SpecOverrides {
                enabled: Some(false),
                network: Some(NetworkPolicy::None),
                read: vec!["/d".into()],
                ..SpecOverrides::default()
            })
        );
        assert_eq!(
            SpecOverrides::from_metadata(&serde_json::Map::new()),
            Ok(None)
        );
        for bad in [
            r#"{"kernelgate": {"sandbox": {"read": ["relative"]}}}"#,
            r#"{"kernelgate": {"sandbox": {"typo": 1}}}"#,
            r#"{"kernelgate": {"sandbox": {"network": "all"}}}"#,
        ] {
            let meta: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(bad).unwrap_or_default();
            assert!(SpecOverrides::from_metadata(&meta).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("required".parse::<Mode>(), Ok(Mode::Required));
        assert!("maybe".parse::<Mode>().is_err());
        assert_eq!(Mode::default(), Mode::On);
    }
}
