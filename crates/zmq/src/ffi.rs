//! The only place that calls libzmq's C API.
//!
//! `unsafe` is allowed here, and only here, because calling C requires it. Every
//! function below wraps one C call behind a safe signature, checks its return value,
//! and turns failures into [`Error::Zmq`]; the rest of the crate is safe code.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_long, c_short, c_void, CStr, CString};
use std::ptr::NonNull;

use zeroize::Zeroize;

use crate::error::Error;

// Keep libsodium's static archive in the link: libzmq's CURVE calls into it.
use libsodium_sys as _;

/// `zmq_msg_t`: 64 opaque bytes, pointer-aligned (see zmq.h).
#[repr(C, align(8))]
struct ZmqMsg([u8; 64]);

/// `zmq_pollitem_t` on Unix.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct PollItemRaw {
    socket: *mut c_void,
    fd: c_int,
    pub(crate) events: c_short,
    pub(crate) revents: c_short,
}

extern "C" {
    fn zmq_errno() -> c_int;
    fn zmq_strerror(errnum: c_int) -> *const c_char;
    fn zmq_version(major: *mut c_int, minor: *mut c_int, patch: *mut c_int);
    fn zmq_has(capability: *const c_char) -> c_int;

    fn zmq_ctx_new() -> *mut c_void;
    fn zmq_ctx_term(ctx: *mut c_void) -> c_int;
    fn zmq_ctx_set(ctx: *mut c_void, option: c_int, value: c_int) -> c_int;

    fn zmq_socket(ctx: *mut c_void, ty: c_int) -> *mut c_void;
    fn zmq_close(s: *mut c_void) -> c_int;
    fn zmq_setsockopt(s: *mut c_void, opt: c_int, val: *const c_void, len: usize) -> c_int;
    fn zmq_getsockopt(s: *mut c_void, opt: c_int, val: *mut c_void, len: *mut usize) -> c_int;
    fn zmq_bind(s: *mut c_void, addr: *const c_char) -> c_int;
    fn zmq_connect(s: *mut c_void, addr: *const c_char) -> c_int;
    fn zmq_unbind(s: *mut c_void, addr: *const c_char) -> c_int;
    fn zmq_disconnect(s: *mut c_void, addr: *const c_char) -> c_int;
    fn zmq_send(s: *mut c_void, buf: *const c_void, len: usize, flags: c_int) -> c_int;

    fn zmq_msg_init(msg: *mut ZmqMsg) -> c_int;
    fn zmq_msg_recv(msg: *mut ZmqMsg, s: *mut c_void, flags: c_int) -> c_int;
    fn zmq_msg_close(msg: *mut ZmqMsg) -> c_int;
    fn zmq_msg_data(msg: *mut ZmqMsg) -> *mut c_void;
    fn zmq_msg_size(msg: *const ZmqMsg) -> usize;
    fn zmq_msg_more(msg: *const ZmqMsg) -> c_int;

    fn zmq_poll(items: *mut PollItemRaw, nitems: c_int, timeout: c_long) -> c_int;

    fn zmq_curve_keypair(public: *mut c_char, secret: *mut c_char) -> c_int;
    fn zmq_curve_public(public: *mut c_char, secret: *const c_char) -> c_int;
}

/// Builds an [`Error::Zmq`] from the calling thread's `zmq_errno()`.
fn last_error(op: &'static str) -> Error {
    // SAFETY: zmq_errno has no preconditions.
    let errno = unsafe { zmq_errno() };
    Error::zmq(op, errno)
}

/// libzmq's text for an error number (covers both OS and libzmq-specific numbers).
pub(crate) fn strerror(errno: i32) -> String {
    // SAFETY: zmq_strerror returns a pointer to a static NUL-terminated string (or NULL).
    let ptr = unsafe { zmq_strerror(errno) };
    if ptr.is_null() {
        return format!("error {errno}");
    }
    // SAFETY: non-null, static, NUL-terminated per libzmq's contract.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

fn check(rc: c_int, op: &'static str) -> Result<c_int, Error> {
    if rc < 0 {
        Err(last_error(op))
    } else {
        Ok(rc)
    }
}

fn c_string(s: &str, what: &'static str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{what} contains a NUL byte")))
}

/// libzmq's version as (major, minor, patch).
pub(crate) fn version() -> (i32, i32, i32) {
    let (mut a, mut b, mut c) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    unsafe { zmq_version(&mut a, &mut b, &mut c) };
    (a, b, c)
}

/// Whether libzmq was built with a capability ("curve", "ipc", ...).
pub(crate) fn has(capability: &str) -> bool {
    let Ok(c) = CString::new(capability) else {
        return false;
    };
    // SAFETY: valid NUL-terminated string.
    unsafe { zmq_has(c.as_ptr()) == 1 }
}

/// A fresh CURVE keypair as 40-char Z85 strings (public, secret). The caller must
/// zeroize the secret it receives.
pub(crate) fn curve_keypair() -> Result<(String, String), Error> {
    let mut public = [0u8; 41];
    let mut secret = [0u8; 41];
    // SAFETY: both buffers hold the 41 bytes (40 + NUL) zmq_curve_keypair writes.
    let rc = unsafe { zmq_curve_keypair(public.as_mut_ptr().cast(), secret.as_mut_ptr().cast()) };
    let out =
        check(rc, "zmq_curve_keypair").and_then(|_| Ok((z85_text(&public)?, z85_text(&secret)?)));
    secret.zeroize();
    out
}

/// The Z85 public key for a Z85 secret key.
pub(crate) fn curve_public(secret_z85: &str) -> Result<String, Error> {
    if secret_z85.len() != 40 {
        return Err(Error::InvalidKey("a Z85 CURVE key is 40 characters"));
    }
    let mut secret = [0u8; 41];
    secret[..40].copy_from_slice(secret_z85.as_bytes());
    let mut public = [0u8; 41];
    // SAFETY: secret is NUL-terminated 40 chars; public has room for 41 bytes.
    let rc = unsafe { zmq_curve_public(public.as_mut_ptr().cast(), secret.as_ptr().cast()) };
    secret.zeroize();
    check(rc, "zmq_curve_public")?;
    z85_text(&public)
}

fn z85_text(buf: &[u8; 41]) -> Result<String, Error> {
    let text = buf.get(..40).unwrap_or_default();
    std::str::from_utf8(text)
        .map(str::to_owned)
        .map_err(|_| Error::InvalidKey("libzmq returned a non-ASCII Z85 key"))
}

/// An owned libzmq context. libzmq contexts are thread-safe.
pub(crate) struct RawContext(NonNull<c_void>);

// SAFETY: libzmq documents contexts as thread-safe; the pointer is only used via libzmq.
unsafe impl Send for RawContext {}
// SAFETY: as above.
unsafe impl Sync for RawContext {}

impl RawContext {
    pub(crate) fn new() -> Result<Self, Error> {
        // SAFETY: no preconditions.
        let ptr = unsafe { zmq_ctx_new() };
        NonNull::new(ptr)
            .map(Self)
            .ok_or_else(|| last_error("zmq_ctx_new"))
    }

    pub(crate) fn set(&self, option: c_int, value: c_int) -> Result<(), Error> {
        // SAFETY: valid context pointer owned by self.
        check(
            unsafe { zmq_ctx_set(self.0.as_ptr(), option, value) },
            "zmq_ctx_set",
        )
        .map(drop)
    }
}

impl Drop for RawContext {
    fn drop(&mut self) {
        // zmq_ctx_term can be interrupted by a signal; it must then be called again.
        loop {
            // SAFETY: valid context, called once (retried only on EINTR).
            let rc = unsafe { zmq_ctx_term(self.0.as_ptr()) };
            if rc == 0 || last_error("zmq_ctx_term").errno() != Some(libc::EINTR) {
                break;
            }
        }
    }
}

/// An owned libzmq socket. Sockets are not thread-safe: this type is `Send` (ownership
/// may move between threads) but not `Sync`.
pub(crate) struct RawSocket(NonNull<c_void>);

// SAFETY: libzmq allows a socket to migrate between threads when ownership moves with
// a full memory barrier (which moving a Rust value across threads provides). Being
// !Sync, it is never used from two threads at once.
unsafe impl Send for RawSocket {}

impl RawSocket {
    pub(crate) fn new(ctx: &RawContext, ty: c_int) -> Result<Self, Error> {
        // SAFETY: valid context pointer.
        let ptr = unsafe { zmq_socket(ctx.0.as_ptr(), ty) };
        NonNull::new(ptr)
            .map(Self)
            .ok_or_else(|| last_error("zmq_socket"))
    }

    pub(crate) fn set_bytes(&self, opt: c_int, val: &[u8]) -> Result<(), Error> {
        // SAFETY: valid socket; val points to val.len() readable bytes.
        let rc = unsafe { zmq_setsockopt(self.0.as_ptr(), opt, val.as_ptr().cast(), val.len()) };
        check(rc, "zmq_setsockopt").map(drop)
    }

    pub(crate) fn set_i32(&self, opt: c_int, val: i32) -> Result<(), Error> {
        self.set_bytes(opt, &val.to_ne_bytes())
    }

    pub(crate) fn set_i64(&self, opt: c_int, val: i64) -> Result<(), Error> {
        self.set_bytes(opt, &val.to_ne_bytes())
    }

    /// Reads an option into a buffer of `cap` bytes; returns the bytes libzmq wrote.
    pub(crate) fn get_bytes(&self, opt: c_int, cap: usize) -> Result<Vec<u8>, Error> {
        let mut buf = vec![0u8; cap];
        let mut len = cap;
        // SAFETY: valid socket; buf has `len` writable bytes and len is updated in place.
        let rc = unsafe { zmq_getsockopt(self.0.as_ptr(), opt, buf.as_mut_ptr().cast(), &mut len) };
        check(rc, "zmq_getsockopt")?;
        buf.truncate(len.min(cap));
        Ok(buf)
    }

    pub(crate) fn get_i32(&self, opt: c_int) -> Result<i32, Error> {
        let bytes = self.get_bytes(opt, 4)?;
        let arr: [u8; 4] = bytes
            .try_into()
            .map_err(|_| Error::InvalidArgument("option is not an int".into()))?;
        Ok(i32::from_ne_bytes(arr))
    }

    fn endpoint_op(
        &self,
        ep: &str,
        op: &'static str,
        f: unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int,
    ) -> Result<(), Error> {
        let c = c_string(ep, "endpoint")?;
        // SAFETY: valid socket and NUL-terminated endpoint.
        check(unsafe { f(self.0.as_ptr(), c.as_ptr()) }, op).map(drop)
    }

    pub(crate) fn bind(&self, ep: &str) -> Result<(), Error> {
        self.endpoint_op(ep, "zmq_bind", zmq_bind)
    }

    pub(crate) fn connect(&self, ep: &str) -> Result<(), Error> {
        self.endpoint_op(ep, "zmq_connect", zmq_connect)
    }

    pub(crate) fn unbind(&self, ep: &str) -> Result<(), Error> {
        self.endpoint_op(ep, "zmq_unbind", zmq_unbind)
    }

    pub(crate) fn disconnect(&self, ep: &str) -> Result<(), Error> {
        self.endpoint_op(ep, "zmq_disconnect", zmq_disconnect)
    }

    pub(crate) fn send(&self, data: &[u8], flags: c_int) -> Result<(), Error> {
        // SAFETY: valid socket; data is readable for data.len() bytes (libzmq copies it).
        let rc = unsafe { zmq_send(self.0.as_ptr(), data.as_ptr().cast(), data.len(), flags) };
        check(rc, "zmq_send").map(drop)
    }

    /// Receives one frame and lends its bytes to `sink` (no copy unless `sink` copies).
    /// Returns whether more frames of the same message follow.
    pub(crate) fn recv_frame(&self, flags: c_int, sink: impl FnOnce(&[u8])) -> Result<bool, Error> {
        let mut msg = ZmqMsg([0; 64]);
        // SAFETY: msg is a properly aligned zmq_msg_t-sized buffer.
        check(unsafe { zmq_msg_init(&mut msg) }, "zmq_msg_init")?;
        // SAFETY: initialised msg, valid socket.
        let rc = unsafe { zmq_msg_recv(&mut msg, self.0.as_ptr(), flags) };
        let result = check(rc, "zmq_msg_recv").map(|_| {
            // SAFETY: msg holds a received frame; data/size describe its bytes, which stay
            // valid until zmq_msg_close below.
            let (ptr, len) = unsafe { (zmq_msg_data(&mut msg), zmq_msg_size(&msg)) };
            if ptr.is_null() || len == 0 {
                sink(&[]);
            } else {
                // SAFETY: see above.
                sink(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) });
            }
            // SAFETY: msg is initialised.
            unsafe { zmq_msg_more(&msg) != 0 }
        });
        // SAFETY: msg was initialised; closing releases its buffer exactly once.
        unsafe { zmq_msg_close(&mut msg) };
        result
    }

    pub(crate) fn poll_item(&self, events: c_short) -> PollItemRaw {
        PollItemRaw {
            socket: self.0.as_ptr(),
            fd: 0,
            events,
            revents: 0,
        }
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: valid socket, closed exactly once.
        unsafe { zmq_close(self.0.as_ptr()) };
    }
}

/// `zmq_poll` over raw items built by [`RawSocket::poll_item`]. `timeout_ms < 0` waits forever.
pub(crate) fn poll(items: &mut [PollItemRaw], timeout_ms: c_long) -> Result<usize, Error> {
    let n = c_int::try_from(items.len())
        .map_err(|_| Error::InvalidArgument("too many poll items".into()))?;
    // SAFETY: items is a valid array of n pollitems whose sockets are borrowed (alive)
    // by the caller for the duration of the call.
    let rc = unsafe { zmq_poll(items.as_mut_ptr(), n, timeout_ms) };
    check(rc, "zmq_poll").map(|n| usize::try_from(n).unwrap_or(0))
}

/// poll(2) for input on plain file descriptors: whether each became readable (or hung up), in
/// order. `EINTR` counts as "nothing yet". `timeout_ms < 0` waits
/// forever.
pub(crate) fn poll_readable<const N: usize>(
    fds: [c_int; N],
    timeout_ms: c_int,
) -> Result<[bool; N], Error> {
    let mut raw = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let n = libc::nfds_t::try_from(N).unwrap_or(0);
    // SAFETY: `raw` is a live array of `n` pollfds for the duration of the call.
    let rc = unsafe { libc::poll(raw.as_mut_ptr(), n, timeout_ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok([false; N]);
        }
        return Err(Error::io("poll", "", e));
    }
    Ok(raw.map(|p| p.revents != 0))
}

/// Takes an exclusive `flock` on `file` without waiting: `Ok(false)` when another open file
/// description holds it.
pub(crate) fn try_lock_exclusive(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor the borrowed `file` keeps open; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(e),
    }
}

/// Whether a process with `pid` exists (ours or not).
pub(crate) fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the pid exists and may be signalled; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
