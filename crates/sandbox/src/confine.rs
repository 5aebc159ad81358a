//! Turning a [`Plan`] into a Landlock ruleset (in the parent, where allocating and opening
//! files is safe) and entering it in the child between fork and exec (two system calls, both
//! async-signal-safe).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, Scope, ABI,
};

use crate::policy::Plan;
use crate::support::Support;

/// A ruleset ready to be entered by a child process.
#[derive(Debug)]
pub struct Confinement {
    /// None when the running Linux has no Landlock (nothing to enter).
    ruleset: Option<OwnedFd>,
    /// Whether the seccomp filter refusing Unix sockets is installed with the ruleset.
    refuse_unix_sockets: bool,
}

fn abi_of(version: u32) -> ABI {
    match version {
        0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        7 => ABI::V7,
        8 => ABI::V8,
        // Newer kernels keep supporting everything an older ABI asks for.
        _ => ABI::V9,
    }
}

fn landlock_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("landlock: {e}"))
}

impl Confinement {
    /// Builds the ruleset for `plan` at the ABI of `support`. Paths that do not exist are
    /// skipped (a system without /lib32, say), except the kernel's own writable directories
    /// and connection file, which must.
    pub fn build(plan: &Plan, support: &Support) -> io::Result<Confinement> {
        if support.abi == 0 {
            return Ok(Confinement {
                ruleset: None,
                refuse_unix_sockets: false,
            });
        }
        let abi = abi_of(support.abi);
        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .map_err(landlock_error)?;
        if support.abi >= 4 {
            ruleset = ruleset
                .handle_access(AccessNet::from_all(abi))
                .map_err(landlock_error)?;
        }
        if support.abi >= 6 {
            ruleset = ruleset
                .scope(Scope::from_all(abi))
                .map_err(landlock_error)?;
        }
        let mut created = ruleset.create().map_err(landlock_error)?;
        let read = AccessFs::from_read(abi);
        let file_only = AccessFs::from_file(abi);
        for dir in &plan.read_dirs {
            created = allow_if_present(created, dir, read)?;
        }
        for file in &plan.read_files {
            created = if file.starts_with("/proc") {
                allow_if_present(created, file, read & file_only)?
            } else {
                allow(created, file, read & file_only)?
            };
        }
        for dir in &plan.write_dirs {
            created = allow(created, dir, AccessFs::from_all(abi))?;
        }
        let read_write = file_only & !BitFlags::from(AccessFs::Execute);
        for file in &plan.read_write_files {
            created = allow_if_present(created, file, read_write)?;
        }
        if support.abi >= 4 {
            for &port in &plan.bind_ports {
                created = created
                    .add_rule(NetPort::new(port, AccessNet::BindTcp))
                    .map_err(landlock_error)?;
            }
            for &port in &plan.connect_ports {
                created = created
                    .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
                    .map_err(landlock_error)?;
            }
        }
        Ok(Confinement {
            ruleset: created.into(),
            refuse_unix_sockets: !plan.unix_sockets,
        })
    }
}

/// Allows `access` beneath `path` (narrowed to file rights when it is a file).
fn allow(
    created: RulesetCreated,
    path: &Path,
    access: BitFlags<AccessFs>,
) -> io::Result<RulesetCreated> {
    let fd = PathFd::new(path).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
    let access = if path.is_dir() {
        access
    } else {
        access & AccessFs::from_file(ABI::V9)
    };
    created
        .add_rule(PathBeneath::new(fd, access))
        .map_err(landlock_error)
}

fn allow_if_present(
    created: RulesetCreated,
    path: &Path,
    access: BitFlags<AccessFs>,
) -> io::Result<RulesetCreated> {
    if path.exists() {
        allow(created, path, access)
    } else {
        Ok(created)
    }
}

/// Makes `cmd`'s child enter `confinement` just before exec: `no_new_privs` (Landlock's
/// requirement for unprivileged use; it also stops setuid programs from shedding the
/// sandbox) and `landlock_restrict_self`. Everything the child starts later inherits the
/// domain. A failure makes the spawn fail: a kernel never runs unconfined by accident.
#[allow(unsafe_code)]
pub fn confine_command(cmd: &mut Command, confinement: Confinement) {
    let Some(ruleset) = confinement.ruleset else {
        return;
    };
    let filter = confinement.refuse_unix_sockets;
    // SAFETY: the closure runs in the forked child before exec, so it may only make
    // async-signal-safe calls: open(2), close(2), prctl(2) and syscall(2) are, the attribute
    // lives on the stack, and io::Error::last_os_error does not allocate. The ruleset fd is
    // moved into the closure and so stays open until the parent drops the command; it is
    // close-on-exec, so the kernel never inherits it. The ruleset is this kernel's alone, so
    // the rule the child adds to it touches no other kernel.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || restrict_self(&ruleset, filter));
    }
}

impl Confinement {
    /// Enters the confinement in this process, for good: it and everything it starts later
    /// (see [`crate::launcher`], which execs the kernel next). Call it while single-threaded:
    /// Landlock confines only the calling thread.
    #[allow(unsafe_code)]
    pub fn enter(self) -> io::Result<()> {
        match &self.ruleset {
            // SAFETY: the same three system calls as in the forked child, here in a process
            // of our own; the ruleset fd is ours and stays open for the call.
            Some(ruleset) => unsafe { restrict_self(ruleset, self.refuse_unix_sockets) },
            None => Ok(()),
        }
    }
}

/// `no_new_privs`, `landlock_restrict_self` on `ruleset` (after adding the caller's own
/// `/proc/PID`), then the seccomp filter of [`crate::seccomp`] unless the plan allows Unix
/// sockets. Async-signal-safe: no allocation, only system calls.
#[allow(unsafe_code)]
unsafe fn restrict_self(ruleset: &OwnedFd, refuse_unix_sockets: bool) -> io::Result<()> {
    let fd = ruleset.as_raw_fd();
    allow_own_proc_dir(fd)?;
    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        return Err(io::Error::last_os_error());
    }
    if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) != 0 {
        return Err(io::Error::last_os_error());
    }
    if !refuse_unix_sockets {
        return Ok(());
    }
    // SAFETY: no_new_privs is set above; the filter is built on the stack.
    crate::seccomp::install()
}

/// `struct landlock_path_beneath_attr` (packed, as in the kernel's uapi header).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Adds read access beneath the child's own `/proc/PID` (what `/proc/self` resolves to in
/// the child, which only the child can name before it runs). Async-signal-safe.
#[allow(unsafe_code)]
unsafe fn allow_own_proc_dir(ruleset: libc::c_int) -> io::Result<()> {
    const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
    const READ_FILE: u64 = 1 << 2;
    const READ_DIR: u64 = 1 << 3;
    let dir = libc::open(c"/proc/self".as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
    if dir < 0 {
        return Err(io::Error::last_os_error());
    }
    let attr = PathBeneathAttr {
        allowed_access: READ_FILE | READ_DIR,
        parent_fd: dir,
    };
    let r = libc::syscall(
        libc::SYS_landlock_add_rule,
        ruleset,
        LANDLOCK_RULE_PATH_BENEATH,
        std::ptr::addr_of!(attr),
        0u32,
    );
    let err = io::Error::last_os_error();
    libc::close(dir);
    if r != 0 {
        return Err(err);
    }
    Ok(())
}
