//! The libzmq context: owns the I/O threads; every socket keeps it alive.

use std::sync::Arc;

use crate::error::Result;
use crate::ffi::RawContext;
use crate::socket::{Socket, SocketConfig, SocketType};

const ZMQ_IO_THREADS: i32 = 1;
const ZMQ_MAX_SOCKETS: i32 = 2;

/// A libzmq context. Cheap to clone (Arc-backed); terminated when the last clone and the
/// last socket created from it are dropped (sockets hold a clone, so termination never
/// waits on a socket that is still open).
#[derive(Clone)]
pub struct Context {
    raw: Arc<RawContext>,
    defaults: Arc<SocketConfig>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context with one I/O thread and default socket settings.
    pub fn new() -> Result<Self> {
        Self::with_config(1, SocketConfig::default())
    }

    /// A context with `io_threads` I/O threads whose sockets start with `defaults`.
    pub fn with_config(io_threads: i32, defaults: SocketConfig) -> Result<Self> {
        let raw = RawContext::new()?;
        raw.set(ZMQ_IO_THREADS, io_threads.max(1))?;
        Ok(Self {
            raw: Arc::new(raw),
            defaults: Arc::new(defaults),
        })
    }

    /// Sets the number of I/O threads; takes effect only before the first socket is created.
    pub fn set_io_threads(&self, n: i32) -> Result<()> {
        self.raw.set(ZMQ_IO_THREADS, n.max(1))
    }

    /// Sets how many sockets the context may hold (libzmq's default: 1023); takes effect only
    /// before the first socket is created.
    pub fn set_max_sockets(&self, n: i32) -> Result<()> {
        self.raw.set(ZMQ_MAX_SOCKETS, n.max(1))
    }

    /// The settings new sockets start with.
    pub fn defaults(&self) -> &SocketConfig {
        &self.defaults
    }

    /// A new socket with this context's default settings.
    pub fn socket(&self, ty: SocketType) -> Result<Socket> {
        Socket::new(self, ty, &self.defaults)
    }

    /// A new socket with explicit settings.
    pub fn socket_with(&self, ty: SocketType, config: &SocketConfig) -> Result<Socket> {
        Socket::new(self, ty, config)
    }

    pub(crate) fn raw(&self) -> &RawContext {
        &self.raw
    }
}
