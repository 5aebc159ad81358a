//! Converting between WebSocket frames (legacy JSON / legacy binary / v1 subprotocol) and the
//! parts the host signs for the kernel. Pure: bytes in, bytes out.

use chrono::{DateTime, Utc};
use kernelgate_wire::websocket::{
    decode_legacy_binary, decode_v1, encode_legacy_binary, encode_v1_parts, WsParts,
};
use kernelgate_wire::{Channel, RawMessage};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Which framing a WebSocket connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// JSON text frames (binary frames for messages with buffers).
    Legacy,
    /// `v1.kernel.websocket.jupyter.org`.
    V1,
}

/// A frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutFrame {
    /// Text frame.
    Text(String),
    /// Binary frame.
    Binary(Vec<u8>),
}

/// Most parts (channel + 4 + buffers) accepted in one binary frame.
pub const MAX_PARTS: usize = 1024;

/// A message from a WebSocket client, checked and ready to sign.
///
/// Only the header is parsed into values (the host completes it). parent_header, metadata and
/// content are checked to be JSON objects and kept as the client's text: a tree of values costs
/// tens of times its text (a 60 MB content of small numbers took 2.4 GB), and the host has no
/// use for one.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// shell, control or stdin.
    pub channel: Channel,
    /// The header (completed by [`complete_header`]).
    pub header: Map<String, Value>,
    /// parent_header: a JSON object, as text (`{}` when none).
    pub parent_header: Box<str>,
    /// metadata: a JSON object, as text.
    pub metadata: Box<str>,
    /// content: a JSON object, as text.
    pub content: Box<str>,
    /// Binary buffers.
    pub buffers: Vec<Vec<u8>>,
}

impl Incoming {
    /// msg_id from the header.
    pub fn msg_id(&self) -> &str {
        self.header
            .get("msg_id")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The four signed parts, serialized.
    pub fn signed_parts(&self) -> [Vec<u8>; 4] {
        [
            serde_json::to_vec(&self.header).unwrap_or_else(|_| b"{}".to_vec()),
            self.parent_header.as_bytes().to_vec(),
            self.metadata.as_bytes().to_vec(),
            self.content.as_bytes().to_vec(),
        ]
    }

    /// The approximate memory the message holds (for bounds on queued messages).
    pub fn size(&self) -> usize {
        let buffers: usize = self.buffers.iter().map(Vec::len).sum();
        self.parent_header.len() + self.metadata.len() + self.content.len() + buffers
    }
}

/// A legacy JSON message: the header parsed, the bodies kept as text. Other fields (`buffers`,
/// `msg_id`, ...) are skipped without building values.
#[derive(serde::Deserialize)]
struct Envelope {
    channel: Option<String>,
    header: Option<Value>,
    parent_header: Option<Box<RawValue>>,
    metadata: Option<Box<RawValue>>,
    content: Option<Box<RawValue>>,
}

/// Decodes a text frame (legacy JSON).
pub fn decode_text(text: &str) -> Result<Incoming, String> {
    decode_envelope(serde_json::from_str(text), Vec::new())
}

/// Decodes a binary frame in `protocol`'s framing.
pub fn decode_binary(bytes: &[u8], protocol: Protocol) -> Result<Incoming, String> {
    match protocol {
        Protocol::V1 => {
            let WsParts {
                channel,
                parts,
                buffers,
            } = decode_v1(bytes, MAX_PARTS).map_err(|e| e.to_string())?;
            let [h, p, m, c] = parts;
            let raw = |b: &[u8], what: &str| -> Result<Option<Box<RawValue>>, String> {
                if b.is_empty() {
                    return Ok(None);
                }
                serde_json::from_slice(b)
                    .map(Some)
                    .map_err(|e| format!("malformed JSON in {what}: {e}"))
            };
            let header = if h.is_empty() {
                None
            } else {
                Some(
                    serde_json::from_slice(&h)
                        .map_err(|e| format!("malformed JSON in header: {e}"))?,
                )
            };
            let envelope = Envelope {
                channel: Some(channel),
                header,
                parent_header: raw(&p, "parent_header")?,
                metadata: raw(&m, "metadata")?,
                content: raw(&c, "content")?,
            };
            decode_envelope(Ok(envelope), buffers)
        }
        Protocol::Legacy => {
            let (json, buffers) =
                decode_legacy_binary(bytes, MAX_PARTS).map_err(|e| e.to_string())?;
            decode_envelope(serde_json::from_slice(&json), buffers)
        }
    }
}

fn decode_envelope(
    parsed: serde_json::Result<Envelope>,
    buffers: Vec<Vec<u8>>,
) -> Result<Incoming, String> {
    let e = parsed.map_err(|e| format!("malformed message: {e}"))?;
    let channel = e.channel.ok_or("message has no channel")?;
    let channel = match Channel::parse(&channel) {
        Some(c @ (Channel::Shell | Channel::Control | Channel::Stdin)) => c,
        Some(c) => return Err(format!("clients cannot send on the {} channel", c.name())),
        None => return Err(format!("unknown channel {:?}", truncate(&channel, 40))),
    };
    let header = match e.header {
        Some(Value::Object(h)) => h,
        _ => return Err("header is missing or not an object".into()),
    };
    for k in ["msg_id", "msg_type"] {
        match header.get(k) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err(format!("header.{k} is missing")),
        }
    }
    Ok(Incoming {
        channel,
        header,
        parent_header: object_or_empty(e.parent_header, "parent_header")?,
        metadata: object_or_empty(e.metadata, "metadata")?,
        content: object_or_empty(e.content, "content")?,
        buffers,
    })
}

/// A body's text: a JSON object as given, `{}` for none or null, an error for anything else.
/// (The text is valid JSON: serde_json checked it whole.)
fn object_or_empty(raw: Option<Box<RawValue>>, what: &str) -> Result<Box<str>, String> {
    let Some(raw) = raw else {
        return Ok("{}".into());
    };
    let text = raw.get().trim_start();
    if text.starts_with('{') {
        Ok(raw.into())
    } else if text == "null" {
        Ok("{}".into())
    } else {
        Err(format!("{what} is not an object"))
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Fills what a browser may leave out of a header (session, username, version) and dates it
/// `now` when its date is missing, unparseable or off by more than `max_skew` (the kernel
/// refuses stale messages; the host is the one vouching for this message by signing it).
pub fn complete_header(
    header: &mut Map<String, Value>,
    session_id: &str,
    now: DateTime<Utc>,
    max_skew: chrono::Duration,
) {
    header.entry("session").or_insert_with(|| session_id.into());
    header.entry("username").or_insert_with(|| "".into());
    header
        .entry("version")
        .or_insert_with(|| kernelgate_wire::PROTOCOL_VERSION.into());
    let fresh = header
        .get("date")
        .and_then(Value::as_str)
        .and_then(|d| kernelgate_wire::message::parse_date(d).ok())
        // Never dated ahead of now by more than a second: kernels refuse messages from more
        // than their clock skew (5 s) in the future, and a fast browser clock must not make
        // every message vanish.
        .is_some_and(|d| now - d <= max_skew && d - now <= chrono::Duration::seconds(1));
    if !fresh {
        header.insert(
            "date".into(),
            kernelgate_wire::message::format_date(now).into(),
        );
    }
}

/// Encodes a verified message from the kernel for a client. The signed parts go out as the
/// kernel wrote them (checked to be well-formed JSON by the wire crate), never parsed and
/// re-serialized: splicing a complete JSON value into an object cannot change its structure.
pub fn encode(channel: Channel, msg: &RawMessage, protocol: Protocol) -> OutFrame {
    let [header, parent, metadata, content] = &msg.parts;
    match protocol {
        Protocol::V1 => OutFrame::Binary(encode_v1_parts(
            channel.name(),
            [header, parent, metadata, content],
            &msg.buffers,
        )),
        Protocol::Legacy => {
            let mut out = Vec::with_capacity(msg.parts.iter().map(Vec::len).sum::<usize>() + 160);
            out.extend_from_slice(b"{\"header\": ");
            out.extend_from_slice(header);
            out.extend_from_slice(b", \"msg_id\": ");
            push_json_str(&mut out, &msg.header.msg_id);
            out.extend_from_slice(b", \"msg_type\": ");
            push_json_str(&mut out, &msg.header.msg_type);
            out.extend_from_slice(b", \"parent_header\": ");
            out.extend_from_slice(parent);
            out.extend_from_slice(b", \"metadata\": ");
            out.extend_from_slice(metadata);
            out.extend_from_slice(b", \"content\": ");
            out.extend_from_slice(content);
            out.extend_from_slice(b", \"buffers\": [], \"channel\": ");
            push_json_str(&mut out, channel.name());
            out.push(b'}');
            if msg.buffers.is_empty() {
                // Every spliced part is UTF-8 (checked on receipt); the rest is ours.
                match String::from_utf8(out) {
                    Ok(text) => OutFrame::Text(text),
                    Err(e) => OutFrame::Binary(encode_legacy_binary(e.as_bytes(), &[])),
                }
            } else {
                OutFrame::Binary(encode_legacy_binary(&out, &msg.buffers))
            }
        }
    }
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
#[allow(clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use kernelgate_wire::websocket::encode_v1;
    use serde_json::json;

    fn hdr() -> Value {
        json!({"msg_id": "m1", "msg_type": "execute_request", "session": "s", "username": "u", "date": "2020-01-01T00:00:00Z", "version": "5.4"})
    }

    #[test]
    fn legacy_text_round() {
        let text = json!({"channel": "shell", "header": hdr(), "parent_header": {}, "metadata": {}, "content": {"code": "1"}}).to_string();
        let m = decode_text(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.channel, Channel::Shell);
        assert_eq!(m.msg_id(), "m1");
        let content: Value = serde_json::from_str(&m.content).unwrap_or_default();
        assert_eq!(content["code"], "1");
    }

    #[test]
    fn bodies_are_kept_as_the_clients_text() {
        // No tree of values: a large content costs its text once, not tens of times over.
        let big = format!("{{\"a\": [{}0]}}", "0,".repeat(100_000));
        let text = format!(
            "{{\"channel\": \"shell\", \"header\": {}, \"parent_header\": null, \"content\": {big}, \"buffers\": []}}",
            hdr()
        );
        let m = decode_text(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&*m.content, big.as_str());
        assert_eq!((&*m.parent_header, &*m.metadata), ("{}", "{}"));
        let [_, p, md, c] = m.signed_parts();
        assert_eq!((p.as_slice(), md.as_slice()), (&b"{}"[..], &b"{}"[..]));
        assert_eq!(c, big.as_bytes());
        for bad in ["[1]", "3", "\"x\""] {
            let text = format!(
                "{{\"channel\": \"shell\", \"header\": {}, \"content\": {bad}}}",
                hdr()
            );
            assert!(decode_text(&text).is_err(), "{bad} accepted as content");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(decode_text("{not json").is_err());
        assert!(decode_text("[1,2]").is_err());
        assert!(decode_text(&json!({"channel": "iopub", "header": hdr()}).to_string()).is_err());
        assert!(decode_text(&json!({"channel": "nope", "header": hdr()}).to_string()).is_err());
        assert!(decode_text(&json!({"channel": "shell"}).to_string()).is_err());
        assert!(
            decode_text(&json!({"channel": "shell", "header": {"msg_id": "x"}}).to_string())
                .is_err()
        );
        assert!(decode_text(
            &json!({"channel": "shell", "header": hdr(), "content": 3}).to_string()
        )
        .is_err());
        assert!(decode_binary(&[1, 2, 3], Protocol::V1).is_err());
        assert!(decode_binary(&[0xff; 64], Protocol::V1).is_err());
        assert!(decode_binary(&[0xff; 64], Protocol::Legacy).is_err());
        assert!(decode_binary(&[], Protocol::Legacy).is_err());
    }

    #[test]
    fn v1_with_buffers() {
        let ser = |v: Value| serde_json::to_vec(&v).unwrap_or_default();
        let parts = WsParts {
            channel: "shell".into(),
            parts: [
                ser(hdr()),
                ser(json!({})),
                ser(json!({})),
                ser(json!({"code": "x"})),
            ],
            buffers: vec![vec![1, 2, 3], vec![]],
        };
        let m = decode_binary(&encode_v1(&parts), Protocol::V1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.buffers, vec![vec![1, 2, 3], vec![]]);
        assert_eq!(m.channel, Channel::Shell);
    }

    #[test]
    fn header_completion() {
        let now = Utc::now();
        let mut h = Map::new();
        h.insert("msg_id".into(), "a".into());
        complete_header(&mut h, "sess", now, chrono::Duration::seconds(30));
        assert_eq!(h["session"], "sess");
        assert_eq!(h["version"], kernelgate_wire::PROTOCOL_VERSION);
        let d = h["date"].as_str().unwrap_or("").to_owned();
        // An old date is replaced, a fresh one kept.
        let mut old = h.clone();
        old.insert("date".into(), "2001-01-01T00:00:00Z".into());
        complete_header(&mut old, "sess", now, chrono::Duration::seconds(30));
        assert_eq!(old["date"].as_str(), Some(d.as_str()));
        complete_header(&mut h, "other", now, chrono::Duration::seconds(30));
        assert_eq!(h["session"], "sess");
        // A date from a clock running ahead is replaced (kernels would refuse it), one a
        // moment ahead kept.
        let ahead = |secs: i64| {
            let mut f = h.clone();
            let date = now + chrono::Duration::seconds(secs);
            f.insert(
                "date".into(),
                kernelgate_wire::message::format_date(date).into(),
            );
            complete_header(&mut f, "sess", now, chrono::Duration::seconds(30));
            f["date"].as_str().unwrap_or("").to_owned()
        };
        assert_eq!(ahead(10), d);
        assert_eq!(
            ahead(-10),
            kernelgate_wire::message::format_date(now - chrono::Duration::seconds(10))
        );
    }

    fn kernel_message(buffers: Vec<Vec<u8>>) -> RawMessage {
        let header = serde_json::from_value(json!({"msg_id": "k\"1", "msg_type": "stream", "session": "s", "username": "u", "date": "2020-01-01T00:00:00Z", "version": "5.4"}))
            .unwrap_or_else(|e| panic!("{e}"));
        let msg = kernelgate_wire::Message {
            identities: vec![b"stream.stdout".to_vec()],
            header,
            parent_header: None,
            metadata: Map::new(),
            content: json!({"name": "stdout", "text": "h\u{e9}\n"}),
            buffers,
        };
        RawMessage::from_message(&msg).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn kernel_messages_encode_for_both_protocols() {
        let msg = kernel_message(Vec::new());
        let OutFrame::Text(text) = encode(Channel::IoPub, &msg, Protocol::Legacy) else {
            panic!("a message without buffers is a text frame");
        };
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["msg_id"], "k\"1");
        assert_eq!(v["msg_type"], "stream");
        assert_eq!(v["header"]["msg_id"], "k\"1");
        assert_eq!(v["parent_header"], json!({}));
        assert_eq!(v["metadata"], json!({}));
        assert_eq!(v["content"]["text"], "h\u{e9}\n");
        assert_eq!(v["buffers"], json!([]));
        assert_eq!(v["channel"], "iopub");

        let with_buffers = kernel_message(vec![vec![1, 2], vec![]]);
        let OutFrame::Binary(b) = encode(Channel::IoPub, &with_buffers, Protocol::Legacy) else {
            panic!("buffers need a binary frame");
        };
        let (json, buffers) = decode_legacy_binary(&b, MAX_PARTS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(buffers, vec![vec![1, 2], vec![]]);
        let v: Value = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["content"]["name"], "stdout");

        let OutFrame::Binary(b) = encode(Channel::Shell, &with_buffers, Protocol::V1) else {
            panic!("v1 frames are binary");
        };
        let parts = decode_v1(&b, MAX_PARTS).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parts.channel, "shell");
        assert_eq!(parts.parts, with_buffers.parts);
        assert_eq!(parts.buffers, with_buffers.buffers);
    }
}
