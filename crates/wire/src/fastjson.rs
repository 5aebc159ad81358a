//! A fast path for parsing the JSON parts of a received message.
//!
//! Nearly every message is small objects of strings, booleans, small integers and nested objects.
//! For those this parser builds exactly what serde_json builds (the same `Value`, keys in the same
//! order, the last duplicate key winning), at a fraction of serde's per-value cost. It accepts a
//! strict subset of JSON: anything else (a float, a `\u` escape, a huge integer, `-0`, deep
//! nesting, any syntax error) makes it return `None`, and the caller parses the part with
//! serde_json instead, which also produces the error message. So results never differ, only speed.
//! Tested against serde_json in `tests/properties.rs`.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

use crate::json::special_at;
use crate::message::Header;

/// Nesting deeper than this goes to serde_json (which has its own recursion limit).
const MAX_DEPTH: usize = 32;

/// A part's top-level object (content, metadata) usually holds a handful of keys: it is sized
/// once instead of growing twice. Nested objects grow as serde_json's do, so input made of many
/// tiny objects costs no more memory than it would with serde_json.
const MAP_START: usize = 8;

/// The whole of `bytes` as one JSON value, or `None` to use serde_json.
pub(crate) fn value(bytes: &[u8]) -> Option<Value> {
    let mut c = Cursor::new(bytes)?;
    let v = c.value(0)?;
    c.end()?;
    Some(v)
}

/// The whole of `bytes` as a JSON object, or `None` to use serde_json.
pub(crate) fn object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match value(bytes)? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A header object whose standard fields are all strings (the rest go to `extra`), or `None` to
/// use serde_json (also for a missing msg_id or msg_type, so serde names the error).
/// `Some(None)` is an object without fields, which only a parent header may be.
pub(crate) fn header(bytes: &[u8]) -> Option<Option<Header>> {
    let mut c = Cursor::new(bytes)?;
    c.skip_ws();
    c.eat(b'{')?;
    let mut h = Header::default();
    let (mut has_id, mut has_type) = (false, false);
    if c.peek_after_ws() == Some(b'}') {
        c.pos += 1;
        c.end()?;
        return Some(None);
    }
    loop {
        c.skip_ws();
        let key = c.string()?;
        c.skip_ws();
        c.eat(b':')?;
        c.skip_ws();
        let slot = match key.as_ref() {
            "msg_id" => Some(&mut h.msg_id),
            "msg_type" => Some(&mut h.msg_type),
            "username" => Some(&mut h.username),
            "session" => Some(&mut h.session),
            "date" => Some(&mut h.date),
            "version" => Some(&mut h.version),
            _ => None,
        };
        match slot {
            Some(field) => {
                has_id |= key == "msg_id";
                has_type |= key == "msg_type";
                *field = c.string()?.into_owned();
            }
            None => {
                let v = c.value(1)?;
                h.extra.insert(key.into_owned(), v);
            }
        }
        if !c.comma_or_close(b'}')? {
            break;
        }
    }
    c.end()?;
    (has_id && has_type).then_some(Some(h))
}

struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// The part is validated as UTF-8 once, whole (serde_json refuses invalid UTF-8 inside
    /// strings, and outside them it is a syntax error anyway), so strings need no check of their
    /// own: every string boundary is an ASCII quote or backslash, a char boundary.
    fn new(bytes: &'a [u8]) -> Option<Cursor<'a>> {
        let text = std::str::from_utf8(bytes).ok()?;
        Some(Cursor {
            text,
            bytes,
            pos: 0,
        })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_after_ws(&mut self) -> Option<u8> {
        self.skip_ws();
        self.peek()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.pos += 1)
    }

    fn eat_word(&mut self, word: &[u8]) -> Option<()> {
        let rest = self.bytes.get(self.pos..)?;
        rest.starts_with(word).then(|| self.pos += word.len())
    }

    /// Only trailing whitespace may follow the value.
    fn end(&mut self) -> Option<()> {
        self.skip_ws();
        (self.pos == self.bytes.len()).then_some(())
    }

    /// After an item: `true` on a comma (another item follows), `false` on `close`.
    fn comma_or_close(&mut self, close: u8) -> Option<bool> {
        self.skip_ws();
        let b = self.peek()?;
        self.pos += 1;
        match b {
            b',' => Some(true),
            b if b == close => Some(false),
            _ => None,
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_ws();
        match self.peek()? {
            b'"' => self.string().map(|s| Value::String(s.into_owned())),
            b'{' => self.object(depth).map(Value::Object),
            b'[' => self.array(depth).map(Value::Array),
            b't' => self.eat_word(b"true").map(|()| Value::Bool(true)),
            b'f' => self.eat_word(b"false").map(|()| Value::Bool(false)),
            b'n' => self.eat_word(b"null").map(|()| Value::Null),
            _ => self.integer().map(Value::Number),
        }
    }

    fn object(&mut self, depth: usize) -> Option<Map<String, Value>> {
        self.eat(b'{')?;
        if self.peek_after_ws() == Some(b'}') {
            self.pos += 1;
            return Some(Map::new());
        }
        let mut map = if depth == 0 {
            Map::with_capacity(MAP_START)
        } else {
            Map::new()
        };
        loop {
            self.skip_ws();
            let key = self.string()?.into_owned();
            self.skip_ws();
            self.eat(b':')?;
            let v = self.value(depth + 1)?;
            map.insert(key, v);
            if !self.comma_or_close(b'}')? {
                return Some(map);
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<Vec<Value>> {
        self.eat(b'[')?;
        let mut items = Vec::new();
        if self.peek_after_ws() == Some(b']') {
            self.pos += 1;
            return Some(items);
        }
        loop {
            items.push(self.value(depth + 1)?);
            if !self.comma_or_close(b']')? {
                return Some(items);
            }
        }
    }

    /// An integer of at most 18 digits (so it fits i64 and u64 either way); serde_json's choice of
    /// representation is kept: non-negative as u64, negative as i64. `-0` (a float to serde_json),
    /// leading zeros and any fraction or exponent are left to serde_json.
    fn integer(&mut self) -> Option<Number> {
        let negative = self.eat(b'-').is_some();
        let start = self.pos;
        let digits = self
            .bytes
            .get(start..)?
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = self.bytes.get(start..start + digits)?;
        if digits == 0 || digits > 18 || (digits > 1 && text.first() == Some(&b'0')) {
            return None;
        }
        self.pos += digits;
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let magnitude = text
            .iter()
            .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
        if !negative {
            return Some(Number::from(magnitude));
        }
        if magnitude == 0 {
            return None;
        }
        Some(Number::from(-i64::try_from(magnitude).ok()?))
    }

    /// A string, borrowed when it has no escapes. `\u` escapes go to serde_json.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.pos;
        self.pos = start + special_at(self.bytes.get(start..)?)?;
        let head = self.text.get(start..self.pos)?;
        if self.peek()? == b'"' {
            self.pos += 1;
            return Some(Cow::Borrowed(head));
        }
        let mut out = String::with_capacity(head.len() + 16);
        out.push_str(head);
        loop {
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(Cow::Owned(out));
                }
                b'\\' => {
                    let escaped = self.bytes.get(self.pos + 1).copied()?;
                    out.push(unescape(escaped)?);
                    self.pos += 2;
                }
                _ => {
                    let from = self.pos;
                    let n = special_at(self.bytes.get(from..)?)?;
                    if n == 0 {
                        return None; // a raw control character: invalid JSON
                    }
                    self.pos = from + n;
                    out.push_str(self.text.get(from..self.pos)?);
                }
            }
        }
    }
}

/// The character a two-byte escape stands for (`\u` is not handled here).
fn unescape(b: u8) -> Option<char> {
    Some(match b {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    /// serde_json's answer, written out so key order counts (Map equality ignores it).
    fn serde_text(bytes: &[u8]) -> Option<String> {
        serde_json::from_slice::<Value>(bytes)
            .ok()
            .map(|v| v.to_string())
    }

    /// Whenever the fast path answers, serde_json accepts the same bytes with the same value.
    fn agrees(bytes: &[u8]) -> bool {
        match value(bytes) {
            Some(fast) => serde_text(bytes) == Some(fast.to_string()),
            None => true,
        }
    }

    #[test]
    fn takes_the_common_shapes() {
        for text in [
            r#"{"code": "print('hi')\n1 + 1", "silent": false, "store_history": true, "user_expressions": {}, "allow_stdin": false, "stop_on_error": true}"#,
            r#"{}"#,
            r#" { "a" : [ 1 , -2 , null , true , [ ] , { } ] , "b" : "\"\\\/\b\f\n\r\t" } "#,
            r#"{"a": 1, "a": 2, "b": 3}"#,
            r#"[999999999999999999, -999999999999999999, 0]"#,
            r#""é ü 中文 🎉""#,
        ] {
            assert!(value(text.as_bytes()).is_some(), "{text}");
            assert!(agrees(text.as_bytes()), "{text}");
        }
    }

    #[test]
    fn leaves_the_rest_to_serde() {
        for text in [
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a: 1}",
            "01",
            "-0",
            "-",
            "1.5",
            "1e5",
            "1E5",
            "-0.0",
            "1234567890123456789",
            "\"\\u0041\"",
            "\"\\x\"",
            "\"a\u{1}\"",
            "\"unterminated",
            "tru",
            "truex",
            "nul",
            "[1 2]",
            "{} {}",
            "\u{feff}{}",
            "NaN",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        ] {
            assert_eq!(value(text.as_bytes()), None, "{text:?}");
        }
        assert_eq!(value(b"\"\xff\""), None);
        assert_eq!(value(b"{\"a\": \"\xc3\"}"), None);
    }

    #[test]
    fn headers_need_string_fields_and_both_ids() {
        let ok = br#"{"msg_id": "1", "msg_type": "t", "username": "u", "session": "s", "date": "d", "version": "5.4", "subshell_id": null}"#;
        let h = header(ok).unwrap().unwrap();
        assert_eq!((h.msg_id.as_str(), h.version.as_str()), ("1", "5.4"));
        assert_eq!(h.extra.get("subshell_id"), Some(&Value::Null));
        assert_eq!(header(b" { } "), Some(None));
        assert_eq!(header(br#"{"msg_id": "1"}"#), None);
        assert_eq!(header(br#"{"msg_id": 1, "msg_type": "t"}"#), None);
        assert_eq!(header(br#"{"msg_id": "1", "msg_type": "t"} x"#), None);
        assert_eq!(header(b"[]"), None);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1000i64..1000).prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            "[a-z\"\\\\/\n\t é]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::vec(("[a-z_\"é]{0,8}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Written by us (Python separators) or compactly by serde_json: the same value back,
        /// whenever the fast path takes it.
        #[test]
        fn same_value_as_serde(v in json_value()) {
            let python = crate::json::to_vec(&v).unwrap();
            let compact = serde_json::to_vec(&v).unwrap();
            prop_assert!(agrees(&python));
            prop_assert!(agrees(&compact));
        }

        /// Damaged text: the fast path never accepts what serde_json refuses, nor disagrees.
        #[test]
        fn mutations_agree_with_serde(v in json_value(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
            let mut bytes = crate::json::to_vec(&v).unwrap();
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                if cut { bytes.truncate(i) } else { bytes[i] = byte }
            }
            prop_assert!(agrees(&bytes));
        }

        /// Headers: the fast path gives what serde's Header visitor gives.
        #[test]
        fn headers_agree_with_serde(extra in json_value(), id in "[a-z0-9\"-]{0,12}", damage in any::<Option<(prop::sample::Index, u8)>>()) {
            let h = Header {
                msg_id: id,
                msg_type: "execute_request".into(),
                extra: match extra { Value::Object(m) => m, _ => Map::new() },
                ..Header::default()
            };
            let mut bytes = crate::json::to_vec(&h).unwrap();
            let intact = damage.is_none();
            let plain = h.extra.is_empty();
            if let Some((at, byte)) = damage {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            let fast = header(&bytes);
            if intact && plain {
                prop_assert!(matches!(fast, Some(Some(_))));
            }
            if let Some(Some(fast)) = fast {
                let slow = serde_json::from_slice::<Header>(&bytes).ok();
                prop_assert_eq!(Some(&fast), slow.as_ref());
                if intact {
                    // Re-encoding an intact header gives back the very bytes (its signature).
                    prop_assert_eq!(crate::json::to_vec(&fast).unwrap(), bytes);
                }
            }
        }
    }
}
