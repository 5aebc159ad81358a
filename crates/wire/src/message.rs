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
    let mut out = String::with_capacity(27);
    if crate::date::format_fast(t, &mut out) {
        return out;
    }
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses an ISO 8601 timestamp as jupyter peers write them.
pub fn parse_date(text: &str) -> Result<DateTime<Utc>> {
    if let Some(t) = crate::date::parse_fast(text.as_bytes()) {
        return Ok(t);
    }
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

impl Header {
    /// Appends the header as [`crate::json::to_vec`] would write it, field names as literals.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> Result<()> {
        let fields: [(&[u8], &str); 6] = [
            (b"{\"msg_id\": ", &self.msg_id),
            (b", \"msg_type\": ", &self.msg_type),
            (b", \"username\": ", &self.username),
            (b", \"session\": ", &self.session),
            (b", \"date\": ", &self.date),
            (b", \"version\": ", &self.version),
        ];
        for (name, value) in fields {
            out.extend_from_slice(name);
            crate::json::write_str(out, value)?;
        }
        for (k, v) in &self.extra {
            out.extend_from_slice(b", ");
            crate::json::write_str(out, k)?;
            out.extend_from_slice(b": ");
            crate::json::write_value(out, v)?;
        }
        out.push(b'}');
        Ok(())
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

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Header, A::Error> {
        read_header(map, false)?.ok_or_else(|| de::Error::missing_field("msg_id"))
    }
}

/// Reads header fields; `None` for an object with no fields at all when `empty_is_none`.
fn read_header<'de, A: MapAccess<'de>>(
    mut map: A,
    empty_is_none: bool,
) -> std::result::Result<Option<Header>, A::Error> {
    let mut h = Header::default();
    let (mut has_id, mut has_type, mut any) = (false, false, false);
    while let Some(key) = map.next_key::<Field>()? {
        any = true;
        match key {
            Field::MsgId => {
                h.msg_id = map.next_value()?;
                has_id = true;
            }
            Field::MsgType => {
                h.msg_type = map.next_value()?;
                has_type = true;
            }
            Field::Username => h.username = map.next_value()?,
            Field::Session => h.session = map.next_value()?,
            Field::Date => h.date = map.next_value()?,
            Field::Version => h.version = map.next_value()?,
            Field::Other(name) => {
                let v: Value = map.next_value()?;
                h.extra.insert(name, v);
            }
        }
    }
    if !any && empty_is_none {
        return Ok(None);
    }
    if !has_id {
        return Err(de::Error::missing_field("msg_id"));
    }
    if !has_type {
        return Err(de::Error::missing_field("msg_type"));
    }
    Ok(Some(h))
}

/// A header key. Known names are matched on the borrowed text, so only unknown keys allocate
/// (deserializing a `Cow<str>` would always allocate: serde's `Cow` impl is never borrowed).
enum Field {
    MsgId,
    MsgType,
    Username,
    Session,
    Date,
    Version,
    Other(String),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_identifier(FieldVisitor)
    }
}

struct FieldVisitor;

impl Visitor<'_> for FieldVisitor {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a header field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> std::result::Result<Field, E> {
        Ok(match name {
            "msg_id" => Field::MsgId,
            "msg_type" => Field::MsgType,
            "username" => Field::Username,
            "session" => Field::Session,
            "date" => Field::Date,
            "version" => Field::Version,
            other => Field::Other(other.to_owned()),
        })
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

/// Decodes the parent header: `{}` means none. An object is parsed straight into a header in one
/// pass; anything else is parsed as JSON only to say what is wrong with it.
pub(crate) fn decode_parent(bytes: &[u8]) -> Result<Option<Header>> {
    let trimmed = bytes.trim_ascii();
    if trimmed == b"{}" {
        return Ok(None);
    }
    if let Some(parent) = crate::fastjson::header(bytes) {
        return Ok(parent);
    }
    if trimmed.starts_with(b"{") {
        return serde_json::from_slice::<ParentHeader>(bytes)
            .map(|p| p.0)
            .map_err(|e| part_error(e, "parent_header"));
    }
    let _: Value = decode_json(bytes, "parent_header")?;
    err(ErrorKind::InvalidJson, "parent_header is not a JSON object")
}

/// A parent header object: empty means none.
struct ParentHeader(Option<Header>);

impl<'de> Deserialize<'de> for ParentHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(ParentVisitor)
    }
}

struct ParentVisitor;

impl<'de> Visitor<'de> for ParentVisitor {
    type Value = ParentHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a parent header object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<ParentHeader, A::Error> {
        read_header(map, true).map(ParentHeader)
    }
}

/// Syntax errors are invalid JSON; well-formed JSON of the wrong shape is an invalid header.
fn part_error(e: serde_json::Error, part: &str) -> crate::Error {
    let kind = if e.is_data() {
        ErrorKind::InvalidHeader
    } else {
        ErrorKind::InvalidJson
    };
    crate::Error::new(kind, format!("{part}: {e}"))
}

/// Decodes metadata: `{}` (nearly always) without running the parser.
pub(crate) fn decode_metadata(bytes: &[u8]) -> Result<Map<String, Value>> {
    if bytes.trim_ascii() == b"{}" {
        return Ok(Map::new());
    }
    if let Some(map) = crate::fastjson::object(bytes) {
        return Ok(map);
    }
    decode_json(bytes, "metadata")
}

pub(crate) fn decode_header(bytes: &[u8]) -> Result<Header> {
    if let Some(Some(h)) = crate::fastjson::header(bytes) {
        return Ok(h);
    }
    serde_json::from_slice::<Header>(bytes).map_err(|e| part_error(e, "header"))
}

/// Decodes content (any JSON value; an object for every standard message type).
pub(crate) fn decode_content(bytes: &[u8]) -> Result<Value> {
    if let Some(v) = crate::fastjson::value(bytes) {
        return Ok(v);
    }
    decode_json(bytes, "content")
}

pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8], part: &str) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| crate::Error::new(ErrorKind::InvalidJson, format!("{part}: {e}")))
}
