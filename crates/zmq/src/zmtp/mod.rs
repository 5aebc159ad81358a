//! ZMTP 3.0 client connections in Rust, for the host's links to its kernels.
//!
//! A libzmq socket hands every message to and from its context's I/O thread: two thread
//! wake-ups per message on top of the caller's own. A relay that receives a message on one
//! connection and sends it on another (the host's WebSocket bridge) pays them on every hop, and
//! on a small machine they were most of its latency. A [`Link`] reads and writes the TCP (or
//! Unix) stream in the task that awaits it instead.
//!
//! Scope, on purpose: the client side (DEALER, SUB) and the NULL mechanism, which has no
//! security of its own (the messages are HMAC-signed above this layer). CURVE is never done
//! here: connections that need it stay on libzmq and libsodium. Everything a peer sends is
//! bounded before it is stored: frame sizes and counts are checked on each frame's header.

mod codec;
mod link;

pub use codec::{
    check_greeting, check_signature, compatible, encode_command, encode_message, greeting,
    parse_command, parse_frame_header, ready_properties, Command, Decoded, Decoder, FrameHeader,
    ZmtpError, GREETING_LEN, MAX_COMMAND, SIGNATURE_LEN,
};
pub use link::{Link, LinkConfig, Role};
