//! JSON encoding byte-compatible with jupyter_client's `json.dumps(obj, ensure_ascii=False)`.
//!
//! Python separates items with `", "` and keys from values with `": "`, and prints floats with
//! `repr` (`1e+16`, `1e-05`, `100.0`). Emitting the same bytes means a message decoded and
//! re-encoded by us carries the same signature as the original.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// A serde_json formatter that writes what Python's `json.dumps` writes by default.
#[derive(Debug, Default, Clone, Copy)]
pub struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(python_float_repr(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        self.write_f64(w, f64::from(value))
    }
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation when the decimal
/// exponent is below -4 or at least 16, exponent with a sign and at least two digits.
pub fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Rust's `{:e}` yields the shortest round-trip digits, e.g. "-1.2345e-5".
    let sci = format!("{value:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
            out.push_str(&digits);
        } else {
            let point = point as usize;
            if point >= digits.len() {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', point - digits.len()));
                out.push_str(".0");
            } else {
                let (int, frac) = digits.split_at(point);
                out.push_str(int);
                out.push('.');
                out.push_str(frac);
            }
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        ));
    }
    out
}

/// Serializes `value` as jupyter_client would. (A non-finite float in a typed struct becomes
/// `null`, as serde_json does; `serde_json::Value` cannot hold one.)
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value
        .serialize(&mut ser)
        .map_err(|e| Error::new(ErrorKind::Encode, e.to_string()))?;
    Ok(out)
}

/// Appends `value` exactly as [`to_vec`] writes it, without serde's per-value dispatch: strings
/// that need no escape are copied whole; numbers and strings with escapes go through serde.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<()> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_serde(out, n)?,
        Value::String(s) => write_str(out, s)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_value(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                write_str(out, k)?;
                out.extend_from_slice(b": ");
                write_value(out, v)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Appends `s` as a JSON string, escaped as serde_json (and Python) escape it.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    if special_at(s.as_bytes()).is_some() {
        return write_serde(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

fn write_serde<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, PythonFormatter);
    value
        .serialize(&mut ser)
        .map_err(|e| Error::new(ErrorKind::Encode, e.to_string()))
}

/// Index of the first byte JSON escapes inside a string, the same set that ends a plain run when
/// parsing: a quote, a backslash or a control character. Eight bytes at a time, the tail padded
/// with a harmless byte; within a word, the lowest flagged byte is the answer (see
/// [`special_bits`]).
pub(crate) fn special_at(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut skipped = 0;
    for chunk in &mut words {
        let hits = special_bits(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])));
        if hits != 0 {
            return Some(skipped + first_flagged(hits));
        }
        skipped += 8;
    }
    let rest = words.remainder();
    let mut tail = [b'a'; 8];
    tail.get_mut(..rest.len())?.copy_from_slice(rest);
    let hits = special_bits(u64::from_le_bytes(tail));
    (hits != 0).then(|| skipped + first_flagged(hits))
}

/// The index of the lowest byte whose high bit is set in `hits` (bytes are little-endian).
fn first_flagged(hits: u64) -> usize {
    (hits.trailing_zeros() / 8) as usize
}

/// The high bit of each byte of `w` that may be a quote, a backslash or below 0x20. These are the
/// classic "has a zero / small byte" tests: a borrow can flag a byte above a true hit, never
/// below one and never miss one, so the lowest flagged byte is always a true hit.
fn special_bits(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let quote = w ^ (ONES * u64::from(b'"'));
    let slash = w ^ (ONES * u64::from(b'\\'));
    let hits = (quote.wrapping_sub(ONES) & !quote)
        | (slash.wrapping_sub(ONES) & !slash)
        | (w.wrapping_sub(ONES * 0x20) & !w);
    hits & HIGH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_match_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (-0.0, "-0.0"),
            (100.0, "100.0"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (std::f64::consts::PI, "3.141592653589793"),
            (1e-300, "1e-300"),
            (-2.5e22, "-2.5e+22"),
        ];
        for (v, want) in cases {
            assert_eq!(python_float_repr(v), want, "{v}");
        }
    }

    #[test]
    fn special_bytes_are_found_at_every_position() {
        for len in 0..40 {
            assert_eq!(special_at(&vec![b'a'; len]), None);
            for at in 0..len {
                for special in [b'"', b'\\', 0, 0x1f, b'\n'] {
                    let mut bytes = vec![0xc3; len]; // high bytes must not look special
                    if let Some(b) = bytes.get_mut(at) {
                        *b = special;
                    }
                    assert_eq!(special_at(&bytes), Some(at), "{len} {at} {special}");
                }
            }
        }
        assert_eq!(special_at(b"  !#[]~\x7f "), None);
    }

    proptest::proptest! {
        /// Any bytes, specials anywhere (borrows from one hit could flag the bytes above it).
        #[test]
        fn special_at_finds_the_first_of_any_bytes(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![proptest::num::u8::ANY, proptest::sample::select(vec![0u8, 1, b'"', b'\\', b'!', b'#', 0x20, 0x21, 0x5d])],
                0..40,
            )
        ) {
            let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            proptest::prop_assert_eq!(special_at(&bytes), naive);
        }
    }

    #[test]
    fn write_value_matches_to_vec() {
        let v = serde_json::json!({
            "a": [1, -2, 2.5, 1e16, "x\"y\\z\n\u{1}", null, true, false],
            "b": {}, "c": [], "é ü": {"nested": {"deep": [[]]}}, "": "",
            "big": u64::MAX, "neg": i64::MIN,
        });
        let mut out = Vec::new();
        assert!(write_value(&mut out, &v).is_ok());
        assert_eq!(Some(out), to_vec(&v).ok());
    }

    #[test]
    fn separators_match_python() {
        let v = serde_json::json!({"a": [1, 2.0, "x"], "b": {}});
        assert_eq!(
            to_vec(&v).ok(),
            Some(br#"{"a": [1, 2.0, "x"], "b": {}}"#.to_vec())
        );
    }
}
