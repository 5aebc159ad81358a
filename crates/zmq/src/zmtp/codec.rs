//! ZMTP 3.0 framing and the NULL handshake's pieces, as pure functions over bytes (no I/O).
//!
//! The spec is rfc.zeromq.org 23/ZMTP (3.0) and 37/ZMTP (3.1); libzmq 4.x speaks both and
//! talks 3.0 to a peer that greets with minor version 0, which is what this side sends: in 3.0 a
//! subscription is an ordinary message (`0x01` + topic), understood by every libzmq 4 publisher.

use std::fmt;

use crate::socket::RecvLimits;

/// Bytes of a ZMTP 3 greeting.
pub const GREETING_LEN: usize = 64;
/// Bytes of the greeting's signature, enough to tell a ZMTP 3 peer from an older one.
pub const SIGNATURE_LEN: usize = 10;
/// Largest command body accepted (a READY with its properties, an ERROR, a PING).
pub const MAX_COMMAND: u64 = 64 << 10;

/// What is wrong with what a ZMTP peer sent. The connection is dropped on any of these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZmtpError {
    /// The greeting's signature is not ZMTP's.
    NotZmtp,
    /// The peer speaks ZMTP 1 or 2 (libzmq before 4.0).
    OldVersion(u8),
    /// The peer wants a security mechanism other than NULL.
    Mechanism(String),
    /// A frame's flags byte has reserved bits set, or a command claims to continue.
    BadFlags(u8),
    /// A frame larger than the limit was announced; it was not read.
    FrameTooLarge {
        /// The size the peer announced.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A message over the frame-count or byte limits.
    MessageTooLarge {
        /// Frames so far.
        frames: usize,
        /// Bytes so far.
        bytes: usize,
    },
    /// A command that does not parse.
    BadCommand(&'static str),
    /// The peer's socket type cannot talk to ours.
    SocketType(String),
    /// The peer refused the handshake with an ERROR command.
    Refused(String),
    /// The handshake did not go READY, READY.
    Handshake(&'static str),
}

impl fmt::Display for ZmtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZmtpError::NotZmtp => write!(f, "the peer does not speak ZMTP"),
            ZmtpError::OldVersion(v) => write!(f, "the peer speaks ZMTP {v}, not 3 (libzmq < 4)"),
            ZmtpError::Mechanism(m) => {
                write!(f, "the peer wants security mechanism {m:?}, not NULL")
            }
            ZmtpError::BadFlags(b) => write!(f, "invalid frame flags {b:#04x}"),
            ZmtpError::FrameTooLarge { size, max } => {
                write!(
                    f,
                    "a frame of {size} bytes announced, over the limit of {max}"
                )
            }
            ZmtpError::MessageTooLarge { frames, bytes } => {
                write!(
                    f,
                    "a message over the limits ({frames} frames, {bytes} bytes)"
                )
            }
            ZmtpError::BadCommand(what) => write!(f, "malformed command: {what}"),
            ZmtpError::SocketType(t) => write!(f, "the peer's socket type {t:?} does not match"),
            ZmtpError::Refused(reason) => write!(f, "the peer refused the handshake: {reason:?}"),
            ZmtpError::Handshake(what) => write!(f, "handshake: {what}"),
        }
    }
}

impl std::error::Error for ZmtpError {}

/// Our greeting: ZMTP 3.0, mechanism NULL, as client.
pub fn greeting() -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[0] = 0xFF;
    // Bytes 1..9 are "not significant" in ZMTP 3; libzmq puts a ZMTP 1 length there, 1 here.
    g[8] = 1;
    g[9] = 0x7F;
    g[10] = 3;
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    // g[32]: as-server = 0; the rest is filler.
    g
}

/// Checks the first [`SIGNATURE_LEN`] + 1 bytes of the peer's greeting (signature and major
/// version), before waiting for the rest: an older peer's greeting is shorter.
pub fn check_signature(head: &[u8]) -> Result<(), ZmtpError> {
    match head {
        [0xFF, _, _, _, _, _, _, _, _, last, major, ..] if last & 1 == 1 => {
            if *major < 3 {
                Err(ZmtpError::OldVersion(*major))
            } else {
                Ok(())
            }
        }
        _ => Err(ZmtpError::NotZmtp),
    }
}

/// Checks a whole greeting from the peer.
pub fn check_greeting(g: &[u8; GREETING_LEN]) -> Result<(), ZmtpError> {
    check_signature(g)?;
    let mechanism = &g[12..32];
    let name_len = mechanism
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(mechanism.len());
    let (name, rest) = mechanism.split_at(name_len);
    if name != b"NULL" || rest.iter().any(|&b| b != 0) {
        return Err(ZmtpError::Mechanism(
            String::from_utf8_lossy(name).into_owned(),
        ));
    }
    Ok(())
}

const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
const FLAG_COMMAND: u8 = 0x04;

/// A frame's header: its flags and body size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// More frames of this message follow.
    pub more: bool,
    /// A command, not a message frame.
    pub command: bool,
    /// Body bytes.
    pub size: u64,
}

/// Parses a frame header at the start of `buf`: `Ok(None)` until enough bytes are there, else
/// the header and its length (2 or 9 bytes).
pub fn parse_frame_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ZmtpError> {
    let Some(&flags) = buf.first() else {
        return Ok(None);
    };
    if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0
        || (flags & FLAG_COMMAND != 0 && flags & FLAG_MORE != 0)
    {
        return Err(ZmtpError::BadFlags(flags));
    }
    let (size, len) = if flags & FLAG_LONG != 0 {
        let Some(bytes) = buf.get(1..9) else {
            return Ok(None);
        };
        let mut be = [0u8; 8];
        be.copy_from_slice(bytes);
        (u64::from_be_bytes(be), 9)
    } else {
        let Some(&size) = buf.get(1) else {
            return Ok(None);
        };
        (u64::from(size), 2)
    };
    let header = FrameHeader {
        more: flags & FLAG_MORE != 0,
        command: flags & FLAG_COMMAND != 0,
        size,
    };
    Ok(Some((header, len)))
}

fn push_header(out: &mut Vec<u8>, mut flags: u8, size: usize) {
    match u8::try_from(size) {
        Ok(short) => {
            out.push(flags);
            out.push(short);
        }
        Err(_) => {
            flags |= FLAG_LONG;
            out.push(flags);
            out.extend_from_slice(&(size as u64).to_be_bytes());
        }
    }
}

/// Appends a multipart message's frames to `out`.
pub fn encode_message(out: &mut Vec<u8>, frames: &[impl AsRef<[u8]>]) {
    let last = frames.len().saturating_sub(1);
    for (i, frame) in frames.iter().enumerate() {
        let frame = frame.as_ref();
        push_header(out, if i < last { FLAG_MORE } else { 0 }, frame.len());
        out.extend_from_slice(frame);
    }
}

/// Appends a command frame: `name` (at most 255 bytes) and its data.
pub fn encode_command(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let name = name.as_bytes();
    let name = name.get(..255).unwrap_or(name);
    push_header(out, FLAG_COMMAND, 1 + name.len() + data.len());
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(data);
}

/// The data of a READY command: `Socket-Type`, and `Identity` when given.
pub fn ready_properties(socket_type: &str, identity: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut property = |name: &str, value: &[u8]| {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    };
    property("Socket-Type", socket_type.as_bytes());
    if let Some(id) = identity {
        property("Identity", id);
    }
    out
}

/// A command from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// READY, with the peer's socket type (the other properties are not needed).
    Ready {
        /// The `Socket-Type` property.
        socket_type: String,
    },
    /// ERROR: the peer gives up on the connection.
    Error(String),
    /// PING (ZMTP 3.1 heartbeats): answered with PONG and this context.
    Ping {
        /// Up to 16 bytes to echo back.
        context: &'a [u8],
    },
    /// Any other command (PONG, SUBSCRIBE, ...): ignored, as the spec says.
    Other,
}

/// Parses a command frame's body.
pub fn parse_command(body: &[u8]) -> Result<Command<'_>, ZmtpError> {
    let (&name_len, rest) = body.split_first().ok_or(ZmtpError::BadCommand("empty"))?;
    let (name, data) = rest
        .split_at_checked(usize::from(name_len))
        .ok_or(ZmtpError::BadCommand("name past the end"))?;
    match name {
        b"READY" => {
            let socket_type = ready_socket_type(data)?
                .ok_or(ZmtpError::BadCommand("READY without Socket-Type"))?;
            Ok(Command::Ready { socket_type })
        }
        b"ERROR" => {
            let (&len, reason) = data.split_first().unwrap_or((&0, &[]));
            let reason = reason.get(..usize::from(len)).unwrap_or(reason);
            Ok(Command::Error(String::from_utf8_lossy(reason).into_owned()))
        }
        b"PING" => {
            // A 2-byte TTL, then the context.
            let context = data.get(2..).unwrap_or(&[]);
            Ok(Command::Ping {
                context: context.get(..16).unwrap_or(context),
            })
        }
        _ => Ok(Command::Other),
    }
}

/// The `Socket-Type` among READY's properties (names compared case-insensitively, as the spec
/// says).
fn ready_socket_type(mut data: &[u8]) -> Result<Option<String>, ZmtpError> {
    let mut found = None;
    while !data.is_empty() {
        let (&name_len, rest) = data
            .split_first()
            .ok_or(ZmtpError::BadCommand("property"))?;
        let (name, rest) = rest
            .split_at_checked(usize::from(name_len))
            .ok_or(ZmtpError::BadCommand("property name past the end"))?;
        let (len, rest) = rest
            .split_at_checked(4)
            .ok_or(ZmtpError::BadCommand("property length past the end"))?;
        let mut be = [0u8; 4];
        be.copy_from_slice(len);
        let len = usize::try_from(u32::from_be_bytes(be))
            .map_err(|_| ZmtpError::BadCommand("property length"))?;
        let (value, rest) = rest
            .split_at_checked(len)
            .ok_or(ZmtpError::BadCommand("property value past the end"))?;
        if name.eq_ignore_ascii_case(b"Socket-Type") {
            found = Some(String::from_utf8_lossy(value).into_owned());
        }
        data = rest;
    }
    Ok(found)
}

/// Whether a peer of `theirs` may talk to a socket of `ours` (the pairs kernelgate uses).
pub fn compatible(ours: &str, theirs: &str) -> bool {
    matches!(
        (ours, theirs),
        ("DEALER", "ROUTER" | "DEALER" | "REP")
            | ("SUB", "PUB" | "XPUB")
            | ("REQ", "ROUTER" | "REP")
    )
}

/// What [`Decoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole multipart message.
    Message(Vec<Vec<u8>>),
    /// A command frame's body.
    Command(Vec<u8>),
}

/// Reassembles messages from frames, within limits that are checked on each frame's header,
/// before its body is waited for or stored.
#[derive(Debug)]
pub struct Decoder {
    limits: RecvLimits,
    max_frame: u64,
    frames: Vec<Vec<u8>>,
    bytes: usize,
}

impl Decoder {
    /// A decoder refusing frames over `max_frame` bytes and messages over `limits`.
    pub fn new(limits: RecvLimits, max_frame: u64) -> Decoder {
        Decoder {
            limits,
            max_frame,
            frames: Vec::new(),
            bytes: 0,
        }
    }

    /// Forgets a partly received message (the connection it came on is gone).
    pub fn reset(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }

    /// Bytes `buf` must hold before the next frame can be decoded (at least its header's),
    /// never more than a frame this decoder accepts: a size over the limits is refused by
    /// [`Decoder::decode`], not waited for.
    pub fn wanted(&self, buf: &[u8]) -> usize {
        match parse_frame_header(buf) {
            Ok(Some((h, len))) => {
                let size = h.size.min(self.max_frame.max(MAX_COMMAND));
                len.saturating_add(usize::try_from(size).unwrap_or(usize::MAX))
            }
            Ok(None) if buf.first().is_some_and(|f| f & FLAG_LONG != 0) => 9,
            _ => 2,
        }
    }

    /// Decodes from `buf[*pos..]`, advancing `pos` past every frame used: a message once its
    /// last frame is in, a command, or `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &[u8], pos: &mut usize) -> Result<Option<Decoded>, ZmtpError> {
        loop {
            let rest = buf.get(*pos..).unwrap_or(&[]);
            let Some((header, header_len)) = parse_frame_header(rest)? else {
                return Ok(None);
            };
            let max = if header.command {
                MAX_COMMAND
            } else {
                self.max_frame
            };
            if header.size > max {
                return Err(ZmtpError::FrameTooLarge {
                    size: header.size,
                    max,
                });
            }
            // At most `max` (checked above), so this fits.
            let size = usize::try_from(header.size).unwrap_or(usize::MAX);
            if !header.command
                && (self.frames.len() >= self.limits.max_frames
                    || self.bytes.saturating_add(size) > self.limits.max_total_bytes)
            {
                return Err(ZmtpError::MessageTooLarge {
                    frames: self.frames.len() + 1,
                    bytes: self.bytes.saturating_add(size),
                });
            }
            let end = header_len.saturating_add(size);
            let Some(body) = rest.get(header_len..end) else {
                return Ok(None);
            };
            *pos += end;
            if header.command {
                // Also between the frames of a message (libzmq sends a heartbeat PING there):
                // the message's frames so far are kept.
                return Ok(Some(Decoded::Command(body.to_vec())));
            }
            self.frames.push(body.to_vec());
            self.bytes += size;
            if !header.more {
                self.bytes = 0;
                return Ok(Some(Decoded::Message(std::mem::take(&mut self.frames))));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits() -> RecvLimits {
        RecvLimits {
            max_frames: 8,
            max_total_bytes: 1000,
        }
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Decoded>, ZmtpError> {
        let mut d = Decoder::new(limits(), 600);
        let mut pos = 0;
        let mut out = Vec::new();
        while let Some(m) = d.decode(bytes, &mut pos)? {
            out.push(m);
        }
        assert_eq!(pos, bytes.len(), "every byte used");
        Ok(out)
    }

    #[test]
    fn greeting_is_zmtp_3_0_null_client() {
        let g = greeting();
        assert_eq!(g.len(), 64);
        check_greeting(&g).unwrap();
        assert_eq!((g[10], g[11], g[32]), (3, 0, 0));
    }

    #[test]
    fn greetings_of_others_are_refused() {
        let mut g = greeting();
        g[0] = b'G';
        assert_eq!(check_greeting(&g), Err(ZmtpError::NotZmtp));
        let mut g = greeting();
        g[10] = 2;
        assert_eq!(check_greeting(&g), Err(ZmtpError::OldVersion(2)));
        let mut g = greeting();
        g[12..17].copy_from_slice(b"CURVE");
        assert_eq!(
            check_greeting(&g),
            Err(ZmtpError::Mechanism("CURVE".into()))
        );
        let mut g = greeting();
        g[20] = b'x';
        assert!(matches!(check_greeting(&g), Err(ZmtpError::Mechanism(_))));
        assert_eq!(check_signature(&[0xFF]), Err(ZmtpError::NotZmtp));
    }

    #[test]
    fn messages_round_trip_with_short_and_long_frames() {
        let frames = vec![b"<IDS|MSG>".to_vec(), Vec::new(), vec![7u8; 300]];
        let mut out = Vec::new();
        encode_message(&mut out, &frames);
        // 300 bytes need the 8-byte size.
        assert_eq!(out[2 + 9 + 2], FLAG_LONG);
        assert_eq!(decode_all(&out).unwrap(), vec![Decoded::Message(frames)]);
    }

    #[test]
    fn partial_input_waits_and_resumes() {
        let frames = vec![b"a".to_vec(), vec![1u8; 299]];
        let mut out = Vec::new();
        encode_message(&mut out, &frames);
        let mut d = Decoder::new(limits(), 600);
        let mut got = None;
        let mut buf = Vec::new();
        let mut pos = 0;
        for b in &out {
            assert!(d.wanted(&buf[pos..]) >= 2);
            buf.push(*b);
            if let Some(m) = d.decode(&buf, &mut pos).unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got, Some(Decoded::Message(frames)));
    }

    #[test]
    fn wanted_is_the_whole_next_frame() {
        let mut out = Vec::new();
        encode_message(&mut out, &[vec![0u8; 300]]);
        let d = Decoder::new(limits(), 600);
        assert_eq!(d.wanted(&out[..1]), 9);
        assert_eq!(d.wanted(&out[..9]), 309);
        assert_eq!(d.wanted(&[]), 2);
        // A huge announced size is capped at what the decoder would accept.
        let mut huge = vec![FLAG_LONG];
        huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
        assert!(d.wanted(&huge) <= 9 + MAX_COMMAND as usize);
    }

    #[test]
    fn limits_are_checked_on_the_header_before_the_body() {
        // A 2^62-byte frame announced: refused from its 9 header bytes alone.
        let mut huge = vec![FLAG_LONG];
        huge.extend_from_slice(&(1u64 << 62).to_be_bytes());
        assert!(matches!(
            decode_all(&huge),
            Err(ZmtpError::FrameTooLarge { .. })
        ));
        // Too many frames.
        let mut out = Vec::new();
        encode_message(&mut out, &vec![b"x".to_vec(); 9]);
        assert!(matches!(
            decode_all(&out),
            Err(ZmtpError::MessageTooLarge { frames: 9, .. })
        ));
        // Too many bytes in total, each frame under the frame limit.
        let mut out = Vec::new();
        encode_message(&mut out, &[vec![0u8; 500], vec![0u8; 501]]);
        assert!(matches!(
            decode_all(&out),
            Err(ZmtpError::MessageTooLarge { .. })
        ));
        // A command over its own limit.
        let mut cmd = vec![FLAG_COMMAND | FLAG_LONG];
        cmd.extend_from_slice(&(MAX_COMMAND + 1).to_be_bytes());
        assert!(matches!(
            decode_all(&cmd),
            Err(ZmtpError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn reserved_flags_are_refused_and_commands_between_frames_taken() {
        assert_eq!(decode_all(&[0x08, 0]), Err(ZmtpError::BadFlags(0x08)));
        assert_eq!(
            decode_all(&[FLAG_COMMAND | FLAG_MORE, 0]),
            Err(ZmtpError::BadFlags(5))
        );
        // A command between the frames of a message is taken, and the message goes on.
        let mut out = vec![FLAG_MORE, 1, b'a'];
        encode_command(&mut out, "PING", &[0, 0]);
        out.extend_from_slice(&[0, 1, b'b']);
        assert_eq!(
            decode_all(&out).unwrap(),
            vec![
                Decoded::Command(b"\x04PING\x00\x00".to_vec()),
                Decoded::Message(vec![b"a".to_vec(), b"b".to_vec()])
            ]
        );
    }

    #[test]
    fn ready_round_trips_and_other_commands_parse() {
        let mut out = Vec::new();
        encode_command(&mut out, "READY", &ready_properties("ROUTER", Some(b"id")));
        let Decoded::Command(body) = decode_all(&out).unwrap().remove(0) else {
            panic!("not a command")
        };
        assert_eq!(
            parse_command(&body).unwrap(),
            Command::Ready {
                socket_type: "ROUTER".into()
            }
        );
        assert_eq!(
            parse_command(b"\x05ERROR\x03bad").unwrap(),
            Command::Error("bad".into())
        );
        assert_eq!(
            parse_command(b"\x04PING\x00\x0actx").unwrap(),
            Command::Ping { context: b"ctx" }
        );
        assert_eq!(parse_command(b"\x04PONG").unwrap(), Command::Other);
    }

    #[test]
    fn malformed_commands_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"\x09READY",
            b"\x05READY\x0bSocket-Type\x00\x00",
            b"\x05READY\x0bSocket-Type\x00\x00\x00\x09ROUTER",
            b"\x05READY",
        ] {
            assert!(parse_command(body).is_err(), "{body:?}");
        }
        assert!(parse_command(b"\x05ERROR").is_ok());
        assert!(parse_command(b"\x05ERROR\x09ab").is_ok());
    }

    proptest::proptest! {
        /// Whatever a peer sends, in whatever pieces it arrives: an error or messages, never a
        /// panic, and never a frame past the limits.
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), cut in 0usize..600) {
            let mut d = Decoder::new(limits(), 600);
            let cut = cut.min(bytes.len());
            let mut buf = bytes[..cut].to_vec();
            let mut pos = 0;
            let mut failed = false;
            for chunk in [&bytes[cut..], &[][..]] {
                loop {
                    match d.decode(&buf, &mut pos) {
                        Ok(Some(Decoded::Message(m))) => {
                            proptest::prop_assert!(m.len() <= 8);
                            proptest::prop_assert!(m.iter().map(Vec::len).sum::<usize>() <= 1000);
                        }
                        Ok(Some(Decoded::Command(body))) => { let _ = parse_command(&body); }
                        Ok(None) => break,
                        Err(_) => { failed = true; break; }
                    }
                }
                if failed { break; }
                proptest::prop_assert!(d.wanted(&buf[pos..]) <= 9 + MAX_COMMAND as usize);
                buf.extend_from_slice(chunk);
            }
        }

        /// Encoding then decoding gives the frames back, split anywhere.
        #[test]
        fn encode_then_decode_is_identity(frames in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 1..8), cut in 0usize..3000) {
            let mut out = Vec::new();
            encode_message(&mut out, &frames);
            let mut d = Decoder::new(RecvLimits { max_frames: 8, max_total_bytes: 1 << 20 }, 1 << 20);
            let cut = cut.min(out.len());
            let mut pos = 0;
            let first = d.decode(&out[..cut], &mut pos).unwrap();
            let got = match first {
                Some(m) => m,
                None => d.decode(&out, &mut pos).unwrap().unwrap(),
            };
            proptest::prop_assert_eq!(got, Decoded::Message(frames));
            proptest::prop_assert_eq!(pos, out.len());
        }
    }

    #[test]
    fn socket_types_pair_as_libzmq_pairs_them() {
        assert!(compatible("DEALER", "ROUTER"));
        assert!(compatible("SUB", "PUB"));
        assert!(compatible("SUB", "XPUB"));
        assert!(!compatible("SUB", "ROUTER"));
        assert!(!compatible("DEALER", "PUB"));
    }
}
