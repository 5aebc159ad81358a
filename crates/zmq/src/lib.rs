//! kernelgate's transport layer: libzmq 4.3.5, built from source with libsodium so
//! CURVE always works, behind a small safe API.
//!
//! - [`Context`] / [`Socket`]: sockets with safe defaults (bounded message size,
//!   high-water marks, short linger) and bounded multipart receives ([`RecvLimits`]).
//! - [`poll`]: `zmq_poll` over several sockets.
//! - [`curve`]: CURVE keys, Z85; [`zap`]: a ZAP authenticator with per-domain allow
//!   and deny lists and pyzmq-compatible certificate files.
//! - [`aio`]: a tokio bridge driven by the socket's edge-triggered notification fd.
//! - [`files`]: Jupyter runtime dir and private, atomic file writes.
//! - [`zmtp`]: ZMTP 3.0 client connections (DEALER, SUB) without libzmq's I/O thread, for
//!   relays whose latency is in thread hand-offs; NULL mechanism only (CURVE stays with libzmq).
//!
//! All `unsafe` code lives in the private `ffi` module.

pub mod aio;
mod context;
pub mod curve;
mod error;
mod ffi;
pub mod files;
mod latch;
mod poll;
mod socket;
pub mod zap;
pub mod zmtp;

pub use aio::AsyncSocket;
pub use context::Context;
pub use curve::{curve_keypair, curve_public, z85_decode, z85_encode, PublicKey, SecretKey};
pub use error::{Error, Result, EAGAIN, EFSM, ETERM};
pub use latch::Latch;
pub use poll::{poll, wait_readable, PollEvents, PollItem};
pub use socket::{RecvLimits, Socket, SocketConfig, SocketType};

/// Whether libzmq was built with a capability: "curve", "ipc", "ws", ...
pub fn has(capability: &str) -> bool {
    ffi::has(capability)
}

/// The linked libzmq version, e.g. (4, 3, 5).
pub fn version() -> (i32, i32, i32) {
    ffi::version()
}
