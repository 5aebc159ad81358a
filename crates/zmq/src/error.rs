//! The crate's one error type.

use std::fmt;
use std::path::PathBuf;

use crate::socket::RecvLimits;

/// `EAGAIN`: no message available / would block (also returned when a timeout expires).
pub const EAGAIN: i32 = libc::EAGAIN;
/// libzmq's `ETERM`: the context was terminated.
pub const ETERM: i32 = 156_384_712 + 53;
/// libzmq's `EFSM`: operation not valid in the socket's current state (e.g. REQ sending twice).
pub const EFSM: i32 = 156_384_712 + 51;

/// Everything that can go wrong in this crate. Messages never contain key material.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A libzmq call failed. (libzmq's text for `errno` is looked up only when the error is
    /// shown: an `EAGAIN` from every non-blocking receive that finds nothing is this error, and
    /// `zmq_strerror` goes through gettext.)
    Zmq {
        /// The C function that failed.
        op: &'static str,
        /// The error number (`zmq_errno()`).
        errno: i32,
    },
    /// An incoming multipart message exceeded the socket's [`RecvLimits`]. The whole
    /// message was received and discarded without being stored; the socket is usable.
    TooLarge {
        /// Frames seen (including the discarded ones).
        frames: usize,
        /// Bytes seen (including the discarded ones).
        bytes: usize,
        /// The limits that were in force.
        limits: RecvLimits,
    },
    /// An argument was rejected before reaching libzmq.
    InvalidArgument(String),
    /// Key material was malformed (the text never includes the key).
    InvalidKey(&'static str),
    /// A file-system operation failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A path is not safe to keep secrets in (wrong owner, permissions or type).
    InsecurePath {
        /// The path.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A file was larger than the caller's limit; it was not read past it.
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        max: u64,
    },
    /// Another process holds the lock file (a second host on the same state, say).
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A certificate file could not be parsed.
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A background thread could not be started.
    Thread(std::io::Error),
    /// A ZMTP peer broke the protocol (see [`crate::zmtp`]); its connection was dropped.
    Zmtp(crate::zmtp::ZmtpError),
}

impl Error {
    pub(crate) fn zmq(op: &'static str, errno: i32) -> Self {
        Error::Zmq { op, errno }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The libzmq/OS error number, if this is a libzmq error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Zmq { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// True for `EAGAIN`: nothing to receive / cannot send now, or a timeout expired.
    pub fn is_again(&self) -> bool {
        self.errno() == Some(EAGAIN)
    }

    /// True when the context was terminated (`ETERM`).
    pub fn is_terminated(&self) -> bool {
        self.errno() == Some(ETERM)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Zmq { op, errno } => {
                let message = crate::ffi::strerror(*errno);
                write!(f, "{op} failed: {message} (errno {errno})")
            }
            Error::TooLarge {
                frames,
                bytes,
                limits,
            } => write!(
                f,
                "multipart message discarded: {frames} frames / {bytes} bytes exceeds limit of \
                 {} frames / {} bytes",
                limits.max_frames, limits.max_total_bytes
            ),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Error::InvalidKey(what) => write!(f, "invalid key: {what}"),
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::InsecurePath { path, reason } => {
                write!(f, "refusing insecure path {}: {reason}", path.display())
            }
            Error::FileTooLarge { path, max } => {
                write!(
                    f,
                    "{} is larger than {max} bytes: refused unread",
                    path.display()
                )
            }
            Error::Locked { path } => {
                write!(f, "{} is locked by another running process", path.display())
            }
            Error::Certificate { path, reason } => {
                write!(f, "bad certificate file {}: {reason}", path.display())
            }
            Error::Thread(e) => write!(f, "could not start thread: {e}"),
            Error::Zmtp(e) => write!(f, "zmtp: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Thread(source) => Some(source),
            _ => None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::zmtp::ZmtpError> for Error {
    fn from(e: crate::zmtp::ZmtpError) -> Self {
        Error::Zmtp(e)
    }
}
