//! `kernelgate-client`: the frontend side of the Jupyter messaging protocol.
//!
//! [`KernelClient`] is the one implementation (async, tokio); [`BlockingKernelClient`] drives it on
//! a private current-thread runtime. The client never starts kernels: it connects to one described
//! by a [`ConnectionInfo`](kernelgate_wire::ConnectionInfo) or a connection file
//! ([`find_connection_file`] resolves names the way `jupyter console --existing` does).
//!
//! Every message is signed with the connection key, every incoming message is verified (signature,
//! freshness, replay) before it is used; messages failing verification are counted and dropped.
//! Every wait has a deadline and ends in a typed [`Error`].
//!
//! ```no_run
//! use kernelgate_client::{BlockingKernelClient, ClientConfig, ExecuteOptions};
//! # fn main() -> Result<(), kernelgate_client::Error> {
//! let path = kernelgate_client::find_connection_file("kernel-1234.json")?;
//! let mut client = BlockingKernelClient::from_file(&path, ClientConfig::default())?;
//! client.wait_for_ready(std::time::Duration::from_secs(30))?;
//! let outcome = client.execute("print(1 + 1)", &ExecuteOptions::default(), &mut ())?;
//! assert_eq!(outcome.stdout(), "2\n");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod blocking;
mod client;
mod connect;
mod error;
mod execute;
mod heartbeat;

pub use blocking::BlockingKernelClient;
pub use client::{ClientConfig, KernelClient, DEFAULT_TIMEOUT};
pub use connect::{find_connection_file, find_connection_file_in, CurveIdentity};
pub use error::{Error, Result};
pub use execute::{ExecuteOptions, ExecuteOutcome, OutputHandler, KEEP_OUTPUT_BYTES};
pub use heartbeat::HeartbeatConfig;

/// Re-exports of the protocol types this API uses.
pub use kernelgate_wire::{content, Channel, ConnectionInfo, Message};
