//! The launch hook that puts each kernel in its own Landlock domain (see
//! [`kernelgate_sandbox`]): its own working and temporary directories, its connection file,
//! the system and its language's installation, its own five ports, and nothing of the others.

use std::path::{Path, PathBuf};

use kernelgate_sandbox::launcher::{self, LaunchPlan};
use kernelgate_sandbox::policy::{self, KernelPaths, Mode, Policy, SpecOverrides};
use kernelgate_sandbox::{confine_command, Confinement, Support};
use serde_json::{json, Value};

use crate::provision::{LaunchContext, LaunchHook};

/// Sandbox settings of a host.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The policy (mode, network, extra paths and ports).
    pub policy: Policy,
    /// Each kernel works in `work_root/<kernel id>`.
    pub work_root: PathBuf,
    /// Paths no kernel may ever be given: the runtime directory, state file, token file.
    pub secrets: Vec<PathBuf>,
    /// Ports no kernel may connect to: the host's API.
    pub forbidden_ports: Vec<u16>,
    /// The `kernelgate` binary, to start kernels through `kernelgate sandbox-exec` (see
    /// [`kernelgate_sandbox::launcher`]: no fork of the host). None: the domain is entered
    /// between fork and exec.
    pub launcher: Option<PathBuf>,
}

/// Variables naming the host user's directories, which a sandboxed kernel cannot use, and its
/// sockets (the filter of [`kernelgate_sandbox::seccomp`] refuses them: tools that would try
/// them then do not).
const HOST_DIR_VARS: [&str; 14] = [
    "DBUS_SESSION_BUS_ADDRESS",
    "SSH_AUTH_SOCK",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "DOCKER_HOST",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_RUNTIME_DIR",
    "JUPYTER_RUNTIME_DIR",
    "JUPYTER_DATA_DIR",
    "JUPYTER_CONFIG_DIR",
    "IPYTHONDIR",
];

/// The hook.
#[derive(Debug)]
pub struct SandboxHook {
    config: SandboxConfig,
    support: Support,
}

impl SandboxHook {
    /// Checks the configuration against what the running Linux offers: `required` with a
    /// protection missing, or a configured path that would open a secret, is an error.
    pub fn new(mut config: SandboxConfig, support: Support) -> Result<SandboxHook, String> {
        if config.policy.mode == Mode::Required && !support.complete() {
            return Err(format!(
                "--sandbox required, but this Linux (Landlock ABI {}) lacks: {}",
                support.abi,
                missing_list(&support)
            ));
        }
        config.secrets = config.secrets.iter().map(|p| canonical(p)).collect();
        config.work_root = canonical(&config.work_root);
        let extras = config
            .policy
            .extra_read
            .iter()
            .chain(&config.policy.extra_write);
        check_extras(extras, &config)?;
        check_system_dirs(&config.secrets)?;
        Ok(SandboxHook { config, support })
    }

    /// Whether kernels may create Unix sockets: allowed by the policy, or no filter for this
    /// architecture.
    fn unix_sockets_open(&self) -> bool {
        self.config.policy.allow_unix_sockets || !kernelgate_sandbox::seccomp::AVAILABLE
    }

    /// A one-line summary for the start-up banner.
    pub fn summary(&self) -> String {
        if self.support.complete() {
            format!(
                "sandbox on: Landlock ABI {}, every protection available",
                self.support.abi
            )
        } else {
            format!(
                "sandbox WEAKENED: Landlock ABI {} lacks: {}",
                self.support.abi,
                missing_list(&self.support)
            )
        }
    }
}

/// Every kernel may read the system directories: a secret there (a TLS key under /etc, say)
/// would be open to all of them, so the host refuses to start rather than every launch failing.
fn check_system_dirs(secrets: &[PathBuf]) -> Result<(), String> {
    for dir in policy::SYSTEM_READ_DIRS.map(|d| canonical(Path::new(d))) {
        if let Some(s) = secrets.iter().find(|s| s.starts_with(&dir)) {
            return Err(format!(
                "{} lies in {}, which every sandboxed kernel may read: move it elsewhere",
                s.display(),
                dir.display()
            ));
        }
    }
    Ok(())
}

fn missing_list(support: &Support) -> String {
    support
        .missing
        .iter()
        .map(|p| p.explain())
        .collect::<Vec<_>>()
        .join("; ")
}

/// An extra readable or writable path must not hold (or lie in) a secret or the root of the
/// kernels' working directories, which holds every other kernel's files.
fn check_extras<'a>(
    paths: impl Iterator<Item = &'a PathBuf>,
    config: &SandboxConfig,
) -> Result<(), String> {
    for p in paths {
        let p = canonical(p);
        if config.work_root.starts_with(&p) || p.starts_with(&config.work_root) {
            return Err(format!(
                "sandbox path {} would open other kernels' working directories ({})",
                p.display(),
                config.work_root.display()
            ));
        }
        if let Some(s) = config
            .secrets
            .iter()
            .find(|s| s.starts_with(&p) || p.starts_with(s))
        {
            return Err(format!(
                "sandbox path {} would open {} to kernels",
                p.display(),
                s.display()
            ));
        }
    }
    Ok(())
}

/// `p` with symlinks resolved, as Landlock will open it. A path that does not exist (yet: a
/// state file written later) is its nearest existing ancestor, resolved, with the rest
/// appended, so a symlinked home still compares equal to its target.
fn canonical(p: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(p) {
        return real;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            canonical(parent).join(name)
        }
        _ => p.to_path_buf(),
    }
}

/// `program` as exec would find it on PATH, then with symlinks resolved.
fn resolve_program(program: &str) -> Vec<PathBuf> {
    let found = if program.contains('/') {
        Some(PathBuf::from(program))
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(program))
                .find(|c| c.is_file())
        })
    };
    let mut out = Vec::new();
    if let Some(p) = found {
        let real = canonical(&p);
        out.push(p);
        if !out.contains(&real) {
            out.push(real);
        }
    }
    out
}

impl LaunchHook for SandboxHook {
    fn prepare(
        &self,
        ctx: &LaunchContext<'_>,
        cmd: &mut std::process::Command,
    ) -> Result<Value, String> {
        let overrides = SpecOverrides::from_metadata(&ctx.spec.spec.metadata)
            .map_err(|e| format!("kernelspec {}: {e}", ctx.spec.name))?;
        if overrides.as_ref().and_then(|o| o.enabled) == Some(false) {
            if self.config.policy.mode == Mode::Required {
                return Err(format!(
                    "kernelspec {} disables the sandbox, and --sandbox is required",
                    ctx.spec.name
                ));
            }
            return Ok(json!({ "enabled": false, "reason": "disabled by its kernelspec" }));
        }
        if let Some(o) = &overrides {
            check_extras(o.read.iter().chain(&o.write), &self.config)?;
        }
        // Ids are the host's UUIDs; refuse anything that could step out of the work root.
        let id = ctx.kernel_id;
        if id.is_empty() || id.starts_with('.') || id.contains(['/', '\\', '\0']) {
            return Err(format!("kernel id {id:?} is not a plain name"));
        }
        let work_dir = self.config.work_root.join(id);
        let tmp_dir = work_dir.join(".tmp");
        for dir in [&self.config.work_root, &work_dir, &tmp_dir] {
            kernelgate_zmq::files::ensure_private_dir(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let kernel = KernelPaths {
            connection_file: canonical(ctx.connection_file),
            work_dir: work_dir.clone(),
            tmp_dir: tmp_dir.clone(),
            programs: resolve_program(ctx.program),
            resource_dir: ctx.spec.resource_dir.as_deref().map(canonical),
        };
        // Checked and applied with symlinks resolved: a rule for a symlinked home must not
        // pass the checks under its name and then open its target's secrets.
        let plan = policy::plan(&self.config.policy, overrides.as_ref(), &kernel, &ctx.ports)
            .map_paths(canonical);
        plan.check_secrets(&self.config.secrets, &kernel.connection_file)
            .and_then(|()| plan.check_work_root(&self.config.work_root, &work_dir))
            .map_err(|e| e.to_string())?;
        let forbidden: Vec<u16> = self
            .config
            .forbidden_ports
            .iter()
            .chain(&ctx.ports)
            .copied()
            .collect();
        let exposed = plan.exposed_ports(&forbidden);
        if !exposed.is_empty() {
            return Err(format!(
                "allowed connect ports {exposed:?} include the host API or this kernel's own ports"
            ));
        }
        // Built here even when the launcher builds it again: a plan Landlock refuses is an
        // error for the API caller, not a kernel dying at start.
        let confinement = Confinement::build(&plan, &self.support).map_err(|e| e.to_string())?;
        cmd.current_dir(&work_dir);
        for var in ["TMPDIR", "TMP", "TEMP"] {
            cmd.env(var, &tmp_dir);
        }
        // The kernel's home is its working directory: tools that write under ~ (IPython's
        // history, caches, `pip install --user`) then work, each kernel in its own.
        cmd.env("HOME", &work_dir);
        for var in HOST_DIR_VARS {
            cmd.env_remove(var);
        }
        match &self.config.launcher {
            Some(launcher) => {
                let plan = LaunchPlan {
                    abi: self.support.abi,
                    plan: plan.clone(),
                };
                *cmd = launcher::wrap(cmd, launcher, &plan).map_err(|e| e.to_string())?;
            }
            None => confine_command(cmd, confinement),
        }
        Ok(json!({
            "enabled": self.support.abi > 0,
            "landlock_abi": self.support.abi,
            "missing": self.support.missing,
            "work_dir": work_dir,
            "connect_ports": plan.connect_ports,
            "unix_sockets": self.unix_sockets_open(),
        }))
    }

    /// The kernel's TMPDIR goes; its working directory (the user's files) stays.
    fn finished(&self, kernel_id: &str) {
        let tmp = self.config.work_root.join(kernel_id).join(".tmp");
        if let Err(e) = std::fs::remove_dir_all(&tmp) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(kernel = %kernel_id, "removing {}: {e}", tmp.display());
            }
        }
    }

    fn describe(&self) -> Value {
        json!({
            "mode": self.config.policy.mode,
            "landlock_abi": self.support.abi,
            "missing": self.support.missing,
            "network": self.config.policy.network,
            "unix_sockets": self.unix_sockets_open(),
            "work_root": self.config.work_root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> SandboxConfig {
        SandboxConfig {
            policy: Policy::default(),
            work_root: dir.join("work"),
            secrets: vec![dir.join("runtime")],
            forbidden_ports: vec![8889],
            launcher: None,
        }
    }

    #[test]
    fn required_refuses_a_linux_lacking_protections() {
        let dir = std::env::temp_dir();
        let mut c = config(&dir);
        c.policy.mode = Mode::Required;
        let err = SandboxHook::new(c.clone(), Support::at_abi(4))
            .err()
            .unwrap_or_default();
        assert!(err.contains("signal one another"), "{err}");
        assert!(SandboxHook::new(c, Support::at_abi(6)).is_ok());
        let weak = SandboxHook::new(config(&dir), Support::at_abi(3));
        let summary = weak.map(|h| h.summary()).unwrap_or_default();
        assert!(
            summary.contains("WEAKENED") && summary.contains("ports"),
            "{summary}"
        );
    }

    #[test]
    fn extra_paths_exposing_secrets_or_other_kernels_are_refused() {
        let dir = std::env::temp_dir().join("kernelgate-sandbox-test-nonexistent");
        for extra in [
            dir.clone(),
            dir.join("runtime/x"),
            dir.join("work/other-kernel"),
        ] {
            let mut c = config(&dir);
            c.policy.extra_read = vec![extra.clone()];
            assert!(
                SandboxHook::new(c, Support::at_abi(7)).is_err(),
                "{} accepted",
                extra.display()
            );
        }
        let mut c = config(&dir);
        c.policy.extra_write = vec![dir.join("shared")];
        assert!(SandboxHook::new(c, Support::at_abi(7)).is_ok());
    }

    #[test]
    fn secrets_are_compared_with_symlinks_resolved() {
        // A home reached through a symlink (/home/u -> /gpfs/u on clusters): a rule naming
        // the link must not pass the check and then open the target's secrets.
        let dir =
            std::env::temp_dir().join(format!("kernelgate-sandbox-link-{}", std::process::id()));
        let (real, link) = (dir.join("real"), dir.join("link"));
        assert!(std::fs::create_dir_all(real.join("runtime")).is_ok());
        assert!(std::os::unix::fs::symlink(&real, &link).is_ok());
        let refused = |secret: PathBuf, extra: PathBuf| {
            let mut c = config(&dir);
            c.secrets = vec![secret];
            c.policy.extra_read = vec![extra];
            SandboxHook::new(c, Support::at_abi(7)).is_err()
        };
        let existing = refused(real.join("runtime"), link.clone());
        // A secret that does not exist yet (the state file before its first write).
        let later = refused(link.join("state.json"), real.clone());
        let unrelated = refused(real.join("runtime"), dir.join("elsewhere"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            existing && later && !unrelated,
            "{existing} {later} {unrelated}"
        );
    }

    #[test]
    fn a_secret_in_a_system_directory_is_refused_at_start() {
        let mut c = config(&std::env::temp_dir());
        c.secrets.push("/etc/kernelgate-test/key.pem".into());
        let err = SandboxHook::new(c, Support::at_abi(7))
            .err()
            .unwrap_or_default();
        assert!(err.contains("every sandboxed kernel may read"), "{err}");
    }

    #[test]
    fn programs_resolve_on_path_and_through_symlinks() {
        let found = resolve_program("sh");
        assert!(found.first().is_some_and(|p| p.is_absolute()), "{found:?}");
        assert!(resolve_program("no-such-program-kernelgate").is_empty());
    }
}
