//! The client's one error type.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Everything a client operation can fail with. Texts never contain key material.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Nothing (or not everything) arrived before the deadline.
    Timeout {
        /// What was being waited for.
        waiting_for: String,
        /// The time allowed.
        after: Duration,
    },
    /// The ZeroMQ transport failed.
    Transport(kernelgate_zmq::Error),
    /// A protocol-level failure: encoding, an invalid connection file, a reply whose content does
    /// not match its type.
    Protocol(kernelgate_wire::Error),
    /// The heartbeat monitor found the kernel unresponsive.
    KernelDied,
    /// The kernel answered with `status: "aborted"` (an earlier request failed with
    /// `stop_on_error`, or the kernel is shutting down).
    Aborted {
        /// The reply's message type.
        msg_type: String,
    },
    /// The kernel answered with `status: "error"` to a request other than `execute_request`
    /// (errors of executed code are a normal [`crate::ExecuteOutcome`]).
    Reply {
        /// The reply's message type.
        msg_type: String,
        /// The error name.
        ename: String,
        /// The error value.
        evalue: String,
    },
    /// An argument was rejected (e.g. a request on a channel that has no replies).
    InvalidArgument(String),
    /// No connection file matched.
    ConnectionFileNotFound(String),
    /// The connection file a name led to belongs to another user: it could point at their
    /// kernel, which would then see the code and answer input prompts. Given as a path
    /// (with a `/`), such a file is used as asked.
    ForeignConnectionFile {
        /// The file found.
        path: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// A file could not be read.
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn timeout(waiting_for: impl Into<String>, after: Duration) -> Error {
        Error::Timeout {
            waiting_for: waiting_for.into(),
            after,
        }
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Timeout { waiting_for, after } => {
                write!(f, "timed out after {after:?} waiting for {waiting_for}")
            }
            Error::Transport(e) => write!(f, "transport: {e}"),
            Error::Protocol(e) => write!(f, "protocol: {e}"),
            Error::KernelDied => f.write_str("the kernel stopped answering heartbeats"),
            Error::Aborted { msg_type } => write!(f, "{msg_type}: request aborted by the kernel"),
            Error::Reply {
                msg_type,
                ename,
                evalue,
            } => write!(f, "{msg_type}: {ename}: {evalue}"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::ConnectionFileNotFound(what) => write!(f, "no connection file matches {what:?}"),
            Error::ForeignConnectionFile { path, owner } => write!(
                f,
                "{} belongs to uid {owner}, not to you: its kernel may be someone else's; \
                 give the file as a path (./NAME) to use it anyway",
                path.display()
            ),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Transport(e) => Some(e),
            Error::Protocol(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<kernelgate_zmq::Error> for Error {
    fn from(e: kernelgate_zmq::Error) -> Error {
        Error::Transport(e)
    }
}

impl From<kernelgate_wire::Error> for Error {
    fn from(e: kernelgate_wire::Error) -> Error {
        Error::Protocol(e)
    }
}
