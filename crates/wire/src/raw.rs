//! A verified message kept as the bytes its sender signed, for relays.
//!
//! The host forwards every kernel message to its WebSocket clients. Parsing parent_header,
//! metadata and content into values only to write them out again costs most of the relay's
//! time; a [`RawMessage`] parses the header (its date is needed for the replay check, its ids
//! for routing) and only checks that the other parts are well-formed JSON, so they can be
//! spliced into a WebSocket frame as they are.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::error::{ErrorKind, Result};
use crate::message::{Header, Message};

/// A message whose four signed parts are kept as received.
#[derive(Debug, Clone, PartialEq)]
pub struct RawMessage {
    /// Routing identities (or the IOPub topic).
    pub identities: Vec<Vec<u8>>,
    /// The parsed header (the same bytes are `parts[0]`).
    pub header: Header,
    /// header, parent_header, metadata and content as signed. Each is valid UTF-8 holding one
    /// JSON value; parent_header and metadata are objects.
    pub parts: [Vec<u8>; 4],
    /// Binary buffers.
    pub buffers: Vec<Vec<u8>>,
}

impl RawMessage {
    /// Checks parts that arrived signed; the header was parsed by the caller.
    pub(crate) fn checked(
        identities: Vec<Vec<u8>>,
        header: Header,
        parts: [Vec<u8>; 4],
        buffers: Vec<Vec<u8>>,
    ) -> Result<RawMessage> {
        let [_, parent, metadata, content] = &parts;
        check_json(parent, "parent_header", Shape::Object)?;
        check_json(metadata, "metadata", Shape::Object)?;
        check_json(content, "content", Shape::Any)?;
        Ok(RawMessage {
            identities,
            header,
            parts,
            buffers,
        })
    }

    /// The same message with its parts serialized as [`crate::Session::encode`] would.
    pub fn from_message(msg: &Message) -> Result<RawMessage> {
        Ok(RawMessage {
            identities: msg.identities.clone(),
            header: msg.header.clone(),
            parts: crate::session::serialize_parts(msg)?,
            buffers: msg.buffers.clone(),
        })
    }

    /// The message type (`header.msg_type`).
    pub fn msg_type(&self) -> &str {
        &self.header.msg_type
    }

    /// The content, parsed on demand.
    pub fn content(&self) -> Result<Value> {
        crate::message::decode_content(&self.parts[3])
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Object,
    Any,
}

/// Checks that `bytes` is UTF-8 holding exactly one JSON value (an object for
/// [`Shape::Object`]), without building it.
fn check_json(bytes: &[u8], part: &str, shape: Shape) -> Result<()> {
    let invalid = |why: String| crate::Error::new(ErrorKind::InvalidJson, format!("{part}: {why}"));
    // serde_json skips over strings it ignores without checking their UTF-8.
    std::str::from_utf8(bytes).map_err(|e| invalid(e.to_string()))?;
    match shape {
        Shape::Object => serde_json::from_slice::<AnyObject>(bytes).map(drop),
        Shape::Any => serde_json::from_slice::<IgnoredAny>(bytes).map(drop),
    }
    .map_err(|e| invalid(e.to_string()))
}

/// Deserializes any JSON object and keeps nothing.
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<AnyObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn json_checks_follow_the_parser() {
        for good in [
            &b"{}"[..],
            b" {\"a\": [1, 2.5, null, \"\xc3\xa9\"]} ",
            b"{\"a\":{\"b\":{}}}",
        ] {
            assert!(check_json(good, "p", Shape::Object).is_ok(), "{good:?}");
            assert!(check_json(good, "p", Shape::Any).is_ok(), "{good:?}");
        }
        for any_only in [&b"[1]"[..], b"3", b"\"s\"", b"null"] {
            assert!(check_json(any_only, "p", Shape::Object).is_err());
            assert!(check_json(any_only, "p", Shape::Any).is_ok());
        }
        for bad in [
            &b""[..],
            b"{",
            b"{} {}",
            b"{\"a\": NaN}",
            b"{\"a\": \"\xff\"}",
            b"{\"a\" 1}",
            b"{\"a\": 1,}",
        ] {
            let e = check_json(bad, "content", Shape::Any).err();
            assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::InvalidJson), "{bad:?}");
        }
    }
}
