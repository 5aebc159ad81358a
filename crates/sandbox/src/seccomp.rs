//! A seccomp filter for what Landlock cannot express: connecting to pathname Unix sockets.
//!
//! Landlock (up to the ABIs this code knows) does not govern `connect(2)` on a pathname Unix
//! socket, so a kernel could reach any socket its user runs: the systemd user manager
//! (`systemd-run --user` starts a process outside the sandbox), ssh-agent, a Docker daemon,
//! another user's D-Bus session. The filter refuses creating Unix sockets with `socket(2)`
//! (EACCES), which closes every such door at once. `socketpair(2)` (an anonymous pair, used by
//! asyncio and multiprocessing) stays allowed: it reaches nothing outside the process.
//!
//! It also refuses `io_uring_setup(2)`, whose operations (IORING_OP_SOCKET, ...) are not seen
//! by seccomp, and any system call made through another ABI than the native one (x32, or
//! 32-bit `int 0x80` on x86-64), whose numbers differ and would slip past the checks.
//!
//! A classic BPF program of eight instructions, built without allocating so that it can be
//! installed between fork and exec. Installing needs `no_new_privs` (set just before).

use std::io;

/// `struct seccomp_data` offsets: the system call number, the audit architecture, the first
/// argument's low 32 bits (little-endian).
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0_LOW: u32 = 16;

/// `__X32_SYSCALL_BIT`: x32 system call numbers have it set.
const X32_BIT: u32 = 0x4000_0000;

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

/// Whether this build can install the filter (the architectures whose numbers it knows).
pub const AVAILABLE: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

const fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

const LOAD: u32 = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
const JGE: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
const RET: u32 = libc::BPF_RET | libc::BPF_K;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const DENY: u32 = libc::SECCOMP_RET_ERRNO | (libc::EACCES as u32 & libc::SECCOMP_RET_DATA);

/// Instructions in the program.
pub const LEN: usize = 10;

/// The program. Jump offsets count instructions skipped after the jump itself.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub const fn program() -> [libc::sock_filter; LEN] {
    [
        /* 0 */ stmt(LOAD, OFFSET_ARCH),
        /* 1 */ jump(JEQ, NATIVE_ARCH, 0, 7), // another ABI: deny
        /* 2 */ stmt(LOAD, OFFSET_NR),
        /* 3 */ jump(JGE, X32_BIT, 5, 0), // x32: deny
        /* 4 */ jump(JEQ, libc::SYS_io_uring_setup as u32, 4, 0),
        /* 5 */ jump(JEQ, libc::SYS_socket as u32, 0, 2),
        /* 6 */ stmt(LOAD, OFFSET_ARG0_LOW),
        /* 7 */ jump(JEQ, libc::AF_UNIX as u32, 1, 0),
        /* 8 */ stmt(RET, ALLOW),
        /* 9 */ stmt(RET, DENY),
    ]
}

/// Installs the filter on the calling thread (and so on everything it execs or starts later).
/// Async-signal-safe: the program lives on the stack, and prctl(2) is a system call.
///
/// # Safety
/// `no_new_privs` must be set (otherwise the call fails, which is safe but an error). Meant for
/// a forked child before exec or a single-threaded launcher: it filters the calling thread only.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[allow(unsafe_code)]
pub unsafe fn install() -> io::Result<()> {
    let mut filter = program();
    let prog = libc::sock_fprog {
        len: LEN as u16,
        filter: filter.as_mut_ptr(),
    };
    if libc::prctl(
        libc::PR_SET_SECCOMP,
        libc::SECCOMP_MODE_FILTER,
        std::ptr::addr_of!(prog),
        0,
        0,
    ) != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Without a known architecture nothing is installed (see [`AVAILABLE`]).
///
/// # Safety
/// None needed; the signature matches the other architectures'.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
#[allow(unsafe_code)]
pub unsafe fn install() -> io::Result<()> {
    Ok(())
}
