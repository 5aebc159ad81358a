//! Converting between WebSocket frames (legacy JSON / legacy binary / v1 subprotocol) and the
//! parts the host signs for the kernel. Pure: bytes in, bytes out.

use chrono::{DateTime, Utc};
use kernelgate_wire::websocket::{
    decode_legacy_binary, decode_v1, encode_legacy_binary, encode_v1, WsParts,
};
use kernelgate_wire::{Channel, Message};
use serde_json::{json, Map, Value};

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
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// shell, control or stdin.
    pub channel: Channel,
    /// The header (completed by [`complete_header`]).
    pub header: Map<String, Value>,
    /// parent_header (an object, maybe empty).
    pub parent_header: Value,
    /// metadata (an object).
    pub metadata: Value,
    /// content (an object).
    pub content: Value,
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
        let ser = |v: &Value| serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
        [
            serde_json::to_vec(&self.header).unwrap_or_else(|_| b"{}".to_vec()),
            ser(&self.parent_header),
            ser(&self.metadata),
            ser(&self.content),
        ]
    }
}

/// Decodes a text frame (legacy JSON).
pub fn decode_text(text: &str) -> Result<Incoming, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    from_value(v, Vec::new(), None)
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
            let parse = |b: &[u8], what: &str| -> Result<Value, String> {
                if b.is_empty() {
                    return Ok(json!({}));
                }
                serde_json::from_slice(b).map_err(|e| format!("malformed JSON in {what}: {e}"))
            };
            let v = json!({
                "header": parse(&h, "header")?,
                "parent_header": parse(&p, "parent_header")?,
                "metadata": parse(&m, "metadata")?,
                "content": parse(&c, "content")?,
            });
            from_value(v, buffers, Some(channel))
        }
        Protocol::Legacy => {
            let (json, buffers) =
                decode_legacy_binary(bytes, MAX_PARTS).map_err(|e| e.to_string())?;
            let v: Value =
                serde_json::from_slice(&json).map_err(|e| format!("malformed JSON: {e}"))?;
            from_value(v, buffers, None)
        }
    }
}

fn from_value(
    v: Value,
    buffers: Vec<Vec<u8>>,
    channel: Option<String>,
) -> Result<Incoming, String> {
    let Value::Object(mut o) = v else {
        return Err("message is not a JSON object".into());
    };
    let channel = match channel {
        Some(c) => c,
        None => o
            .get("channel")
            .and_then(Value::as_str)
            .ok_or("message has no channel")?
            .to_owned(),
    };
    let channel = match Channel::parse(&channel) {
        Some(c @ (Channel::Shell | Channel::Control | Channel::Stdin)) => c,
        Some(c) => return Err(format!("clients cannot send on the {} channel", c.name())),
        None => return Err(format!("unknown channel {:?}", truncate(&channel, 40))),
    };
    let header = match o.remove("header") {
        Some(Value::Object(h)) => h,
        _ => return Err("header is missing or not an object".into()),
    };
    let object_or_empty = |v: Option<Value>, what: &str| -> Result<Value, String> {
        match v {
            None | Some(Value::Null) => Ok(json!({})),
            Some(v @ Value::Object(_)) => Ok(v),
            Some(_) => Err(format!("{what} is not an object")),
        }
    };
    let parent_header = object_or_empty(o.remove("parent_header"), "parent_header")?;
    let metadata = object_or_empty(o.remove("metadata"), "metadata")?;
    let content = object_or_empty(o.remove("content"), "content")?;
    for k in ["msg_id", "msg_type"] {
        match header.get(k) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err(format!("header.{k} is missing")),
        }
    }
    Ok(Incoming {
        channel,
        header,
        parent_header,
        metadata,
        content,
        buffers,
    })
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
        .is_some_and(|d| (now - d).abs() <= max_skew);
    if !fresh {
        header.insert(
            "date".into(),
            kernelgate_wire::message::format_date(now).into(),
        );
    }
}

/// Encodes a verified message from the kernel for a client.
pub fn encode(channel: Channel, msg: &Message, protocol: Protocol) -> OutFrame {
    let header = serde_json::to_value(&msg.header).unwrap_or_else(|_| json!({}));
    let parent = match &msg.parent_header {
        Some(p) => serde_json::to_value(p).unwrap_or_else(|_| json!({})),
        None => json!({}),
    };
    match protocol {
        Protocol::V1 => {
            let ser = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
            let parts = WsParts {
                channel: channel.name().to_owned(),
                parts: [
                    ser(&header),
                    ser(&parent),
                    serde_json::to_vec(&msg.metadata).unwrap_or_default(),
                    ser(&msg.content),
                ],
                buffers: msg.buffers.clone(),
            };
            OutFrame::Binary(encode_v1(&parts))
        }
        Protocol::Legacy => {
            let v = json!({
                "header": header,
                "msg_id": msg.header.msg_id,
                "msg_type": msg.header.msg_type,
                "parent_header": parent,
                "metadata": msg.metadata,
                "content": msg.content,
                "buffers": [],
                "channel": channel.name(),
            });
            if msg.buffers.is_empty() {
                OutFrame::Text(v.to_string())
            } else {
                OutFrame::Binary(encode_legacy_binary(v.to_string().as_bytes(), &msg.buffers))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn hdr() -> Value {
        json!({"msg_id": "m1", "msg_type": "execute_request", "session": "s", "username": "u", "date": "2020-01-01T00:00:00Z", "version": "5.4"})
    }

    #[test]
    fn legacy_text_round() {
        let text = json!({"channel": "shell", "header": hdr(), "parent_header": {}, "metadata": {}, "content": {"code": "1"}}).to_string();
        let m = decode_text(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.channel, Channel::Shell);
        assert_eq!(m.msg_id(), "m1");
        assert_eq!(m.content["code"], "1");
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
    }
}
