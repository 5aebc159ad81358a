//! The one error type of the wire layer.
//!
//! Every failure carries a [`ErrorKind`] with a stable [`Error::code`] so that callers can count and
//! log rejections by kind. Error text never contains key material: messages are built only from
//! lengths, field names and the scheme name, never from keys or signatures.

use std::fmt;

/// What went wrong, precisely enough to count and act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A key is configured but the signature frame is empty.
    Unsigned,
    /// The signature does not match the signed parts (or is not a hex digest of the right length).
    BadSignature,
    /// The exact message was already accepted once.
    Replayed,
    /// The message is dated older than the freshness window, or before this session started.
    Stale,
    /// The message is dated further in the future than the clock-skew allowance.
    FutureDated,
    /// The replay history is full; the message is refused rather than evicting history.
    ReplayCacheFull,
    /// The multipart layout is wrong: no delimiter, too few frames, an identity equal to the delimiter.
    MalformedFrames,
    /// A signed part is not valid JSON (or not a JSON object where one is required).
    InvalidJson,
    /// The header lacks a required field or a field has the wrong type or format.
    InvalidHeader,
    /// The content does not match the typed schema requested for its message type.
    InvalidContent,
    /// Too many frames, a frame too large or a message too large in total.
    TooLarge,
    /// The signature scheme is not one jupyter accepts (`hmac-md5`, `hmac-sha1`, `hmac-sha2xx`).
    UnsupportedScheme,
    /// An empty key was given without explicitly asking for unauthenticated messages.
    EmptyKey,
    /// A connection file is malformed or inconsistent.
    InvalidConnectionInfo,
    /// A kernelspec (`kernel.json`) is malformed or its name is invalid.
    InvalidKernelspec,
    /// A value could not be encoded (for example a non-finite float).
    Encode,
}

impl ErrorKind {
    /// A stable, machine-readable name for this kind, for counters and structured logs.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::Unsigned => "unsigned",
            ErrorKind::BadSignature => "bad_signature",
            ErrorKind::Replayed => "replayed",
            ErrorKind::Stale => "stale",
            ErrorKind::FutureDated => "future_dated",
            ErrorKind::ReplayCacheFull => "replay_cache_full",
            ErrorKind::MalformedFrames => "malformed_frames",
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::InvalidHeader => "invalid_header",
            ErrorKind::InvalidContent => "invalid_content",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::UnsupportedScheme => "unsupported_scheme",
            ErrorKind::EmptyKey => "empty_key",
            ErrorKind::InvalidConnectionInfo => "invalid_connection_info",
            ErrorKind::InvalidKernelspec => "invalid_kernelspec",
            ErrorKind::Encode => "encode",
        }
    }

    /// Every kind, in declaration order (for counters indexed by kind).
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::Unsigned,
        ErrorKind::BadSignature,
        ErrorKind::Replayed,
        ErrorKind::Stale,
        ErrorKind::FutureDated,
        ErrorKind::ReplayCacheFull,
        ErrorKind::MalformedFrames,
        ErrorKind::InvalidJson,
        ErrorKind::InvalidHeader,
        ErrorKind::InvalidContent,
        ErrorKind::TooLarge,
        ErrorKind::UnsupportedScheme,
        ErrorKind::EmptyKey,
        ErrorKind::InvalidConnectionInfo,
        ErrorKind::InvalidKernelspec,
        ErrorKind::Encode,
    ];

    /// The position of this kind in [`ErrorKind::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// Whether this kind means the peer sent something that must be treated as hostile or broken
    /// (as opposed to a local configuration error).
    pub const fn is_rejection(self) -> bool {
        !matches!(
            self,
            ErrorKind::UnsupportedScheme
                | ErrorKind::EmptyKey
                | ErrorKind::InvalidConnectionInfo
                | ErrorKind::InvalidKernelspec
                | ErrorKind::Encode
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A wire-layer error: a kind plus a human-readable detail free of key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    detail: String,
}

impl Error {
    /// Builds an error. `detail` must never contain key material.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error {
            kind,
            detail: detail.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable code of the kind (see [`ErrorKind::code`]).
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.detail)
    }
}

impl std::error::Error for Error {}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn err<T>(kind: ErrorKind, detail: impl Into<String>) -> Result<T> {
    Err(Error::new(kind, detail))
}
