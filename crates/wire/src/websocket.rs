//! The two WebSocket encodings of Jupyter Server's `/api/kernels/{id}/channels`, as pure
//! functions over bytes. Every offset read from the peer is bounds-checked.
//!
//! - `v1.kernel.websocket.jupyter.org`: `u64 LE count`, `count` u64 LE offsets, then channel,
//!   header, parent_header, metadata, content and buffers at those offsets.
//! - legacy: a JSON text frame with a `channel` field; with buffers, a binary frame of
//!   `u32 BE nbufs`, `nbufs` u32 BE offsets, then the JSON and the buffers.

use crate::error::{err, ErrorKind, Result};

/// The subprotocol name of the binary framing.
pub const V1_SUBPROTOCOL: &str = "v1.kernel.websocket.jupyter.org";

/// A message in WebSocket form: its channel, the four JSON parts (serialized) and buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsParts {
    /// Channel name (shell, control, stdin, iopub).
    pub channel: String,
    /// header, parent_header, metadata, content as JSON bytes.
    pub parts: [Vec<u8>; 4],
    /// Binary buffers.
    pub buffers: Vec<Vec<u8>>,
}

/// Encodes `msg` in the v1 binary framing.
pub fn encode_v1(msg: &WsParts) -> Vec<u8> {
    let [h, p, m, c] = &msg.parts;
    encode_v1_parts(&msg.channel, [h, p, m, c], &msg.buffers)
}

/// Encodes a message in the v1 binary framing from borrowed parts.
pub fn encode_v1_parts(channel: &str, parts: [&[u8]; 4], buffers: &[Vec<u8>]) -> Vec<u8> {
    let items: Vec<&[u8]> = std::iter::once(channel.as_bytes())
        .chain(parts)
        .chain(buffers.iter().map(Vec::as_slice))
        .collect();
    let count = items.len() + 1;
    let header_len = 8 * (count + 1);
    let total = header_len + items.iter().map(|i| i.len()).sum::<usize>();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(count as u64).to_le_bytes());
    let mut offset = header_len;
    out.extend_from_slice(&(offset as u64).to_le_bytes());
    for item in &items {
        offset += item.len();
        out.extend_from_slice(&(offset as u64).to_le_bytes());
    }
    for item in items {
        out.extend_from_slice(item);
    }
    out
}

/// Decodes the v1 binary framing, refusing more than `max_parts` parts.
pub fn decode_v1(bytes: &[u8], max_parts: usize) -> Result<WsParts> {
    let count = read_offset(bytes, 0, Endian::LittleU64)?;
    // count offsets delimit count-1 items: channel + 4 parts at least.
    if count < 6 {
        return err(
            ErrorKind::MalformedFrames,
            format!("v1 frame has {count} offsets, needs 6"),
        );
    }
    if count - 1 > max_parts {
        return err(
            ErrorKind::TooLarge,
            format!("v1 frame has {} parts", count - 1),
        );
    }
    let offsets = (0..count)
        .map(|i| read_offset(bytes, i + 1, Endian::LittleU64))
        .collect::<Result<Vec<_>>>()?;
    let mut items = between(bytes, &offsets)?.into_iter();
    let channel = String::from_utf8(items.next().unwrap_or_default())
        .map_err(|_| crate::Error::new(ErrorKind::MalformedFrames, "v1 channel is not UTF-8"))?;
    let mut parts: [Vec<u8>; 4] = Default::default();
    for part in parts.iter_mut() {
        *part = items.next().unwrap_or_default();
    }
    Ok(WsParts {
        channel,
        parts,
        buffers: items.collect(),
    })
}

/// The integer encodings of the two framings' offset tables.
#[derive(Clone, Copy)]
enum Endian {
    /// v1: u64 little-endian.
    LittleU64,
    /// legacy: u32 big-endian.
    BigU32,
}

/// The `index`-th integer of the offset table at the start of `bytes`, bounds-checked.
fn read_offset(bytes: &[u8], index: usize, endian: Endian) -> Result<usize> {
    let width = match endian {
        Endian::LittleU64 => 8,
        Endian::BigU32 => 4,
    };
    let at = index.saturating_mul(width);
    let slice = bytes.get(at..at.saturating_add(width)).ok_or_else(|| {
        crate::Error::new(
            ErrorKind::MalformedFrames,
            "frame truncated in its offset table",
        )
    })?;
    let value = match endian {
        Endian::LittleU64 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(slice);
            u64::from_le_bytes(b)
        }
        Endian::BigU32 => {
            let mut b = [0u8; 4];
            b.copy_from_slice(slice);
            u64::from(u32::from_be_bytes(b))
        }
    };
    usize::try_from(value)
        .map_err(|_| crate::Error::new(ErrorKind::MalformedFrames, "offset too large"))
}

/// The byte ranges between consecutive `offsets`, each bounds-checked.
fn between(bytes: &[u8], offsets: &[usize]) -> Result<Vec<Vec<u8>>> {
    offsets
        .windows(2)
        .map(|pair| {
            let (start, end) = match pair {
                [s, e] => (*s, *e),
                _ => return err(ErrorKind::MalformedFrames, "offsets"),
            };
            bytes.get(start..end).map(<[u8]>::to_vec).ok_or_else(|| {
                crate::Error::new(ErrorKind::MalformedFrames, "offsets out of range")
            })
        })
        .collect()
}

/// Encodes the legacy binary form (used when a legacy message has buffers): `json` is the whole
/// message object without buffers.
pub fn encode_legacy_binary(json: &[u8], buffers: &[Vec<u8>]) -> Vec<u8> {
    let nbufs = buffers.len() + 1;
    let mut out = Vec::new();
    out.extend_from_slice(&(nbufs as u32).to_be_bytes());
    let mut offset = 4 * (nbufs + 1);
    out.extend_from_slice(&(offset as u32).to_be_bytes());
    offset += json.len();
    for b in buffers.iter() {
        out.extend_from_slice(&(offset as u32).to_be_bytes());
        offset += b.len();
    }
    out.extend_from_slice(json);
    for b in buffers {
        out.extend_from_slice(b);
    }
    out
}

/// Decodes the legacy binary form into the JSON message and its buffers.
pub fn decode_legacy_binary(bytes: &[u8], max_parts: usize) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let nbufs = read_offset(bytes, 0, Endian::BigU32)?;
    if nbufs == 0 {
        return err(ErrorKind::MalformedFrames, "binary frame has no parts");
    }
    if nbufs > max_parts {
        return err(
            ErrorKind::TooLarge,
            format!("binary frame has {nbufs} parts"),
        );
    }
    let mut offsets = (0..nbufs)
        .map(|i| read_offset(bytes, i + 1, Endian::BigU32))
        .collect::<Result<Vec<_>>>()?;
    offsets.push(bytes.len());
    let mut parts = between(bytes, &offsets)?.into_iter();
    let json = parts.next().unwrap_or_default();
    Ok((json, parts.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_round_trip_and_truncation() {
        let msg = WsParts {
            channel: "shell".into(),
            parts: [
                b"{}".to_vec(),
                b"{}".to_vec(),
                b"{}".to_vec(),
                b"{\"a\": 1}".to_vec(),
            ],
            buffers: vec![vec![1, 2, 3], vec![]],
        };
        let bytes = encode_v1(&msg);
        assert_eq!(decode_v1(&bytes, 64), Ok(msg));
        for cut in 0..bytes.len() {
            assert!(decode_v1(bytes.get(..cut).unwrap_or(&[]), 64).is_err());
        }
    }

    #[test]
    fn legacy_round_trip() {
        let bufs = vec![vec![9u8; 5], vec![7u8; 2]];
        let bytes = encode_legacy_binary(b"{\"x\": 1}", &bufs);
        assert_eq!(
            decode_legacy_binary(&bytes, 64),
            Ok((b"{\"x\": 1}".to_vec(), bufs))
        );
        assert!(decode_legacy_binary(&[0, 0, 0, 200], 64).is_err());
    }
}
