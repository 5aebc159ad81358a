//! The message model: header, parent header, metadata, content and buffers.
//!
//! Content and metadata are kept as JSON values with their key order, so that unknown fields and
//! unknown message types pass through untouched; [`crate::content`] gives typed views.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{err, ErrorKind, Result};

/// The protocol version we speak.
pub const PROTOCOL_VERSION: &str = "5.4";

/// The five Jupyter channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Requests from clients and their replies (ROUTER/DEALER).
    Shell,
    /// Priority requests: interrupt, shutdown, debug (ROUTER/DEALER).
    Control,
    /// Input requests from the kernel to a client (ROUTER/DEALER).
    Stdin,
    /// Broadcast of outputs and status (PUB/SUB).
    #[serde(rename = "iopub")]
    IoPub,
    /// Liveness echo of raw bytes (REP/REQ), never signed.
    Heartbeat,
}

impl Channel {
    /// The channel name used in WebSocket messages and connection files.
    pub const fn name(self) -> &'static str {
        match self {
            Channel::Shell => "shell",
            Channel::Control => "control",
            Channel::Stdin => "stdin",
            Channel::IoPub => "iopub",
            Channel::Heartbeat => "hb",
        }
    }

    /// Parses a channel name (`shell`, `control`, `stdin`, `iopub`, `hb`).
    pub fn parse(name: &str) -> Option<Channel> {
        match name {
            "shell" => Some(Channel::Shell),
            "control" => Some(Channel::Control),
            "stdin" => Some(Channel::Stdin),
            "iopub" => Some(Channel::IoPub),
            "hb" | "heartbeat" => Some(Channel::Heartbeat),
            _ => None,
        }
    }
}

/// A message header. Field order matches jupyter_client's, and unknown fields (such as the 5.5
/// `subshell_id`) are kept in `extra` and written back after the standard ones.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Header {
    /// Unique id of this message.
    pub msg_id: String,
    /// The message type, e.g. `execute_request`.
    pub msg_type: String,
    /// The user name of the sender.
    pub username: String,
    /// The sender's session id.
    pub session: String,
    /// ISO 8601 timestamp, as sent (kept verbatim so re-encoding is exact).
    pub date: String,
    /// Protocol version, e.g. `5.4`.
    pub version: String,
    /// Any other header fields, in their original order.
    pub extra: Map<String, Value>,
}

impl Header {
    /// The header's date as UTC. A date without a time zone is taken as UTC (old peers).
    pub fn parsed_date(&self) -> Result<DateTime<Utc>> {
        parse_date(&self.date)
    }
}

/// Formats a timestamp the way jupyter_client does (`2026-01-02T03:04:05.123456Z`).
pub fn format_date(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses an ISO 8601 timestamp as jupyter peers write them.
pub fn parse_date(text: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, fmt) {
            return Ok(t.and_utc());
        }
    }
    let shown: String = text.chars().take(40).collect();
    err(
        ErrorKind::InvalidHeader,
        format!("header date {shown:?} is not an ISO 8601 timestamp"),
    )
}

impl Serialize for Header {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(6 + self.extra.len()))?;
        map.serialize_entry("msg_id", &self.msg_id)?;
        map.serialize_entry("msg_type", &self.msg_type)?;
        map.serialize_entry("username", &self.username)?;
        map.serialize_entry("session", &self.session)?;
        map.serialize_entry("date", &self.date)?;
        map.serialize_entry("version", &self.version)?;
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Header, A::Error> {
        let mut h = Header::default();
        let (mut has_id, mut has_type) = (false, false);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "msg_id" => {
                    h.msg_id = map.next_value()?;
                    has_id = true;
                }
                "msg_type" => {
                    h.msg_type = map.next_value()?;
                    has_type = true;
                }
                "username" => h.username = map.next_value()?,
                "session" => h.session = map.next_value()?,
                "date" => h.date = map.next_value()?,
                "version" => h.version = map.next_value()?,
                _ => {
                    let v: Value = map.next_value()?;
                    h.extra.insert(key.into_owned(), v);
                }
            }
        }
        if !has_id {
            return Err(de::Error::missing_field("msg_id"));
        }
        if !has_type {
            return Err(de::Error::missing_field("msg_type"));
        }
        Ok(h)
    }
}

/// A complete Jupyter message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Routing identities (ROUTER) or the IOPub topic.
    pub identities: Vec<Vec<u8>>,
    /// This message's header.
    pub header: Header,
    /// The header of the message this one answers, if any (`{}` on the wire when none).
    pub parent_header: Option<Header>,
    /// Metadata, in original key order.
    pub metadata: Map<String, Value>,
    /// Content, in original key order (an object for every standard message type).
    pub content: Value,
    /// Unsigned binary buffers.
    pub buffers: Vec<Vec<u8>>,
}

impl Message {
    /// The message type (`header.msg_type`).
    pub fn msg_type(&self) -> &str {
        &self.header.msg_type
    }

    /// The content decoded as a typed struct from [`crate::content`].
    pub fn content_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.content).map_err(|e| {
            crate::Error::new(
                ErrorKind::InvalidContent,
                format!("{}: {e}", self.header.msg_type),
            )
        })
    }

    /// The id of the parent message, or "" when there is none.
    pub fn parent_msg_id(&self) -> &str {
        self.parent_header
            .as_ref()
            .map(|p| p.msg_id.as_str())
            .unwrap_or("")
    }
}

/// Decodes the parent header: `{}` means none.
pub(crate) fn decode_parent(bytes: &[u8]) -> Result<Option<Header>> {
    let trimmed = bytes.trim_ascii();
    if trimmed == b"{}" {
        return Ok(None);
    }
    let value: Value = decode_json(bytes, "parent_header")?;
    match &value {
        Value::Object(m) if m.is_empty() => Ok(None),
        Value::Object(_) => Header::deserialize(value).map(Some).map_err(|e| {
            crate::Error::new(ErrorKind::InvalidHeader, format!("parent_header: {e}"))
        }),
        _ => err(ErrorKind::InvalidJson, "parent_header is not a JSON object"),
    }
}

pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header> {
    serde_json::from_slice::<Header>(bytes).map_err(|e| {
        let kind = if e.is_data() {
            ErrorKind::InvalidHeader
        } else {
            ErrorKind::InvalidJson
        };
        crate::Error::new(kind, format!("header: {e}"))
    })
}

pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8], part: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| crate::Error::new(ErrorKind::InvalidJson, format!("{part}: {e}")))
}
