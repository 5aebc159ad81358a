//! `kernelgate-wire`: the Jupyter messaging protocol as pure logic.
//!
//! No sockets, threads or files: frames in, frames out. The receive pipeline checks size limits,
//! the frame layout and the HMAC signature (in constant time) before any JSON is parsed, then
//! refuses stale and replayed messages exactly; the result is a [`Verified`] message, a type only
//! [`Session`] can build.
//!
//! ```
//! use kernelgate_wire::{Key, Scheme, Session, SessionConfig, Signer};
//! let signer = Signer::new(Scheme::Sha256, &Key::new(*b"secret"))?;
//! let session = Session::new(signer, SessionConfig::default());
//! let msg = session.message("kernel_info_request", &serde_json::json!({}), None)?;
//! let frames = session.encode(&msg)?;
//! let received = session.receive(frames)?;
//! assert_eq!(received.msg_type(), "kernel_info_request");
//! # Ok::<(), kernelgate_wire::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod bounded;
pub mod connection;
pub mod content;
mod date;
pub mod error;
mod fastjson;
pub mod frames;
pub mod json;
pub mod kernelspec;
pub mod limits;
pub mod message;
pub mod raw;
pub mod rejections;
pub mod replay;
pub mod session;
pub mod websocket;

pub use auth::{Digest, Key, Scheme, Signer};
pub use bounded::BoundedQueue;
pub use connection::{ConnectionInfo, Transport};
pub use error::{Error, ErrorKind, Result};
pub use frames::{iopub_topic, DELIMITER};
pub use kernelspec::{InterruptMode, KernelSpec};
pub use limits::Limits;
pub use message::{Channel, Header, Message, PROTOCOL_VERSION};
pub use raw::RawMessage;
pub use rejections::{LogGate, Rejections};
pub use replay::{ReaderId, ReplayConfig, ReplayGuard};
pub use session::{decode_unverified, Authentic, Reader, Session, SessionConfig, Verified};
