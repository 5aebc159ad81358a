//! Logging of refused messages: counted by kind in [`Rejections`] (shared with the client) and
//! logged at most once a second. Logs name the channel and the error kind only: never key
//! material, never message bytes.

use kernelgate_wire::{Channel, Rejections};

/// Counts a refused message and logs it unless the log rate limit is reached.
pub(crate) fn record(rejections: &Rejections, channel: Channel, error: &kernelgate_wire::Error) {
    let kind = error.kind();
    if let Some(suppressed) = rejections.record(kind) {
        tracing::warn!(
            channel = channel.name(),
            kind = kind.code(),
            total = rejections.count(kind),
            suppressed_since_last_log = suppressed,
            "refused message: {}",
            error.detail()
        );
    }
}

/// Counts and logs a message the transport refused as over the receive limits (never stored).
pub(crate) fn record_too_large(
    rejections: &Rejections,
    channel: Channel,
    error: &kernelgate_zmq::Error,
) {
    let err = kernelgate_wire::Error::new(kernelgate_wire::ErrorKind::TooLarge, error.to_string());
    record(rejections, channel, &err);
}
