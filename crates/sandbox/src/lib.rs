//! `kernelgate-sandbox`: each kernel in its own Linux Landlock domain.
//!
//! Landlock is an allow list enforced by the kernel on a process and everything it starts
//! later. A kernel gets:
//! - files: read (and execute) on the system and its language's installation, read on its own
//!   connection file, read-write on its own working and temporary directories, and nothing
//!   else: not other kernels' connection files, not the runtime directory, not the host's
//!   state file or token;
//! - network (Landlock ABI 4+): bind only its own five ports, connect only to the ports the
//!   policy allows (by default DNS, HTTP and HTTPS), so never to another kernel or the host API;
//! - scopes (ABI 6+): no signals to, and no abstract Unix sockets of, processes outside its
//!   domain. Landlock also refuses tracing another domain and reading its `/proc/PID/mem` or
//!   `environ` (ptrace access checks), at every ABI;
//! - Unix sockets: a seccomp filter ([`seccomp`]) refuses creating them, so a kernel cannot
//!   connect to the user's systemd manager, ssh-agent or D-Bus session (which Landlock does not
//!   govern) and have something started outside its domain.
//!
//! The split follows the rest of the workspace: [`policy`] is pure (what a kernel may touch),
//! [`support`] asks the running Linux what it offers, and [`confine`] turns a plan into a
//! Landlock ruleset in the parent and enters it in the child between fork and exec, or
//! [`launcher`] enters it in a launcher process that execs the kernel (no fork of the host).

pub mod confine;
pub mod launcher;
pub mod policy;
pub mod seccomp;
pub mod support;

pub use confine::{confine_command, Confinement};
pub use policy::{KernelPaths, Mode, NetworkPolicy, Plan, Policy, PolicyError, SpecOverrides};
pub use support::{Protection, Support};
