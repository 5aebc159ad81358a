//! HMAC signing and constant-time verification of the four signed parts.
//!
//! The signature is the lowercase hex HMAC of header, parent_header, metadata and content, in that
//! order; buffers are not signed (as jupyter_client does). Keys are zeroized on drop and never
//! printed; errors name the scheme and lengths only.

use std::fmt;

use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{err, ErrorKind, Result};

/// A signature scheme jupyter accepts: `hmac-<hash>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `hmac-md5`
    Md5,
    /// `hmac-sha1`
    Sha1,
    /// `hmac-sha224`
    Sha224,
    /// `hmac-sha256` (jupyter's default)
    Sha256,
    /// `hmac-sha384`
    Sha384,
    /// `hmac-sha512`
    Sha512,
}

impl Scheme {
    /// Every supported scheme.
    pub const ALL: [Scheme; 6] = [
        Scheme::Md5,
        Scheme::Sha1,
        Scheme::Sha224,
        Scheme::Sha256,
        Scheme::Sha384,
        Scheme::Sha512,
    ];

    /// Parses a `signature_scheme` value such as `hmac-sha256`.
    pub fn parse(name: &str) -> Result<Scheme> {
        match name {
            "hmac-md5" => Ok(Scheme::Md5),
            "hmac-sha1" => Ok(Scheme::Sha1),
            "hmac-sha224" => Ok(Scheme::Sha224),
            "hmac-sha256" => Ok(Scheme::Sha256),
            "hmac-sha384" => Ok(Scheme::Sha384),
            "hmac-sha512" => Ok(Scheme::Sha512),
            other => {
                // Echo at most a short, printable prefix: the value comes from a file, not a secret.
                let shown: String = other.chars().take(32).filter(|c| !c.is_control()).collect();
                err(
                    ErrorKind::UnsupportedScheme,
                    format!(
                        "signature scheme {shown:?} is not supported; use one of hmac-md5, hmac-sha1, \
                         hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512"
                    ),
                )
            }
        }
    }

    /// The scheme's name as written in connection files.
    pub const fn name(self) -> &'static str {
        match self {
            Scheme::Md5 => "hmac-md5",
            Scheme::Sha1 => "hmac-sha1",
            Scheme::Sha224 => "hmac-sha224",
            Scheme::Sha256 => "hmac-sha256",
            Scheme::Sha384 => "hmac-sha384",
            Scheme::Sha512 => "hmac-sha512",
        }
    }

    /// Length of the raw digest in bytes (the hex signature is twice as long).
    pub const fn digest_len(self) -> usize {
        match self {
            Scheme::Md5 => 16,
            Scheme::Sha1 => 20,
            Scheme::Sha224 => 28,
            Scheme::Sha256 => 32,
            Scheme::Sha384 => 48,
            Scheme::Sha512 => 64,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Secret key bytes. Zeroized on drop; `Debug` prints `<redacted>`; no `Display`, no `Serialize`.
#[derive(Clone)]
pub struct Key(Zeroizing<Vec<u8>>);

impl Key {
    /// Wraps key bytes (as they appear in the connection file: the ASCII text is the key).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Key {
        Key(Zeroizing::new(bytes.into()))
    }

    /// A fresh key: 256 bits from the OS random source, hex-encoded as jupyter_client does
    /// (jupyter uses the hex text itself as the HMAC key).
    pub fn generate() -> Result<Key> {
        let mut raw = Zeroizing::new([0u8; 32]);
        getrandom::fill(raw.as_mut()).map_err(|e| {
            crate::Error::new(
                ErrorKind::InvalidConnectionInfo,
                format!("OS random source failed: {e}"),
            )
        })?;
        let mut text = Zeroizing::new(vec![0u8; 64]);
        hex::encode_to_slice(raw.as_ref(), text.as_mut_slice()).map_err(|_| {
            crate::Error::new(ErrorKind::Encode, "hex encoding of a fresh key failed")
        })?;
        Ok(Key(Zeroizing::new(text.to_vec())))
    }

    /// The key bytes. Callers must not log or display them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether the key is empty (jupyter's "no authentication").
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}
impl Eq for Key {}

/// A keyed HMAC state, computed once per key so each message costs only the hashing of its parts.
#[derive(Clone)]
enum Keyed {
    Md5(Hmac<md5::Md5>),
    Sha1(Hmac<sha1::Sha1>),
    Sha224(Hmac<sha2::Sha224>),
    Sha256(Hmac<sha2::Sha256>),
    Sha384(Hmac<sha2::Sha384>),
    Sha512(Hmac<sha2::Sha512>),
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8]) -> Result<M> {
    <M as hmac::digest::KeyInit>::new_from_slice(key)
        .map_err(|_| crate::Error::new(ErrorKind::EmptyKey, "HMAC rejected the key length"))
}

fn mac_parts<M: Mac + Clone>(state: &M, parts: &[&[u8]; 4], out: &mut [u8]) -> usize {
    let mut mac = state.clone();
    for part in parts {
        mac.update(part);
    }
    let tag = mac.finalize().into_bytes();
    let n = tag.len().min(out.len());
    if let (Some(dst), Some(src)) = (out.get_mut(..n), tag.get(..n)) {
        dst.copy_from_slice(src);
    }
    n
}

/// A raw digest (at most 64 bytes, the size of SHA-512).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    bytes: [u8; 64],
    len: u8,
}

impl Digest {
    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Digests are public (they travel on the wire) but long; show a short prefix.
        let prefix = self.as_bytes().get(..4).unwrap_or(&[]);
        write!(f, "Digest({}..)", hex::encode(prefix))
    }
}

/// Signs and verifies messages with one key and scheme, or deliberately with no key.
#[derive(Clone)]
pub struct Signer {
    scheme: Scheme,
    keyed: Option<Keyed>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("scheme", &self.scheme)
            .field(
                "key",
                &if self.keyed.is_some() {
                    "<redacted>"
                } else {
                    "<none>"
                },
            )
            .finish()
    }
}

impl Signer {
    /// A signer for `key` with `scheme`. An empty key is refused: use [`Signer::unauthenticated`]
    /// to ask for jupyter's no-auth mode explicitly.
    pub fn new(scheme: Scheme, key: &Key) -> Result<Signer> {
        if key.is_empty() {
            return err(
                ErrorKind::EmptyKey,
                "the key is empty; unauthenticated messaging must be requested explicitly",
            );
        }
        let k = key.expose();
        let keyed = match scheme {
            Scheme::Md5 => Keyed::Md5(keyed(k)?),
            Scheme::Sha1 => Keyed::Sha1(keyed(k)?),
            Scheme::Sha224 => Keyed::Sha224(keyed(k)?),
            Scheme::Sha256 => Keyed::Sha256(keyed(k)?),
            Scheme::Sha384 => Keyed::Sha384(keyed(k)?),
            Scheme::Sha512 => Keyed::Sha512(keyed(k)?),
        };
        Ok(Signer {
            scheme,
            keyed: Some(keyed),
        })
    }

    /// A signer that produces empty signatures and accepts any. Only for callers that explicitly
    /// opted into jupyter's "empty key" mode; every message is then forgeable.
    pub fn unauthenticated() -> Signer {
        Signer {
            scheme: Scheme::Sha256,
            keyed: None,
        }
    }

    /// Whether messages are authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.keyed.is_some()
    }

    /// The scheme in use.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The raw HMAC of the four signed parts, or `None` when unauthenticated.
    pub fn digest(&self, parts: &[&[u8]; 4]) -> Option<Digest> {
        let mut bytes = [0u8; 64];
        let len = match self.keyed.as_ref()? {
            Keyed::Md5(m) => mac_parts(m, parts, &mut bytes),
            Keyed::Sha1(m) => mac_parts(m, parts, &mut bytes),
            Keyed::Sha224(m) => mac_parts(m, parts, &mut bytes),
            Keyed::Sha256(m) => mac_parts(m, parts, &mut bytes),
            Keyed::Sha384(m) => mac_parts(m, parts, &mut bytes),
            Keyed::Sha512(m) => mac_parts(m, parts, &mut bytes),
        };
        Some(Digest {
            bytes,
            len: u8::try_from(len).unwrap_or(0),
        })
    }

    /// The signature frame for the four signed parts: lowercase hex, or empty when unauthenticated.
    pub fn sign(&self, parts: &[&[u8]; 4]) -> Vec<u8> {
        let Some(d) = self.digest(parts) else {
            return Vec::new();
        };
        let mut out = vec![0u8; d.as_bytes().len() * 2];
        match hex::encode_to_slice(d.as_bytes(), &mut out) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// Verifies `signature` (the hex signature frame) over the four parts in constant time.
    /// Returns the raw digest for replay tracking, or `None` when unauthenticated.
    pub fn verify(&self, signature: &[u8], parts: &[&[u8]; 4]) -> Result<Option<Digest>> {
        let Some(expected) = self.digest(parts) else {
            return Ok(None);
        };
        if signature.is_empty() {
            return err(ErrorKind::Unsigned, "the message carries no signature");
        }
        let expected_len = usize::from(expected.len) * 2;
        if signature.len() != expected_len {
            return err(
                ErrorKind::BadSignature,
                format!(
                    "signature has {} characters, {} needs {expected_len}",
                    signature.len(),
                    self.scheme
                ),
            );
        }
        // Decode the (public) signature text, then compare raw digests in constant time. Only
        // lowercase hex is accepted, as jupyter sends and as comparing hexdigest() text would.
        let mut received = [0u8; 64];
        let digest_len = usize::from(expected.len);
        let received = received.get_mut(..digest_len).unwrap_or(&mut []);
        if decode_lower_hex(signature, received).is_none()
            || !bool::from(ct_eq_words(expected.as_bytes(), received))
        {
            return err(
                ErrorKind::BadSignature,
                "signature does not match the message",
            );
        }
        Ok(Some(expected))
    }
}

/// Decodes lowercase hex `text` into `out` (exactly twice as long). The text is the peer's
/// signature frame, public data, so how fast this fails leaks nothing; it is table-driven and
/// branch-free because a per-character `match` cost more than a third of a microsecond.
fn decode_lower_hex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    let value = |c: u8| HEX_VALUE.get(usize::from(c)).copied().unwrap_or(INVALID);
    let mut invalid = 0u8;
    for (pair, byte) in text.chunks_exact(2).zip(out.iter_mut()) {
        if let [hi, lo] = pair {
            let (hi, lo) = (value(*hi), value(*lo));
            invalid |= hi | lo;
            *byte = (hi << 4) | (lo & 0x0f);
        }
    }
    (invalid & INVALID == 0).then_some(())
}

/// Marks a byte that is not a lowercase hex digit (digit values never have these bits).
const INVALID: u8 = 0xf0;

/// The value of each lowercase hex digit, [`INVALID`] for every other byte.
// Evaluated at compile time: an index out of bounds would fail the build, not a run.
#[allow(clippy::indexing_slicing)]
const HEX_VALUE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Constant-time equality of two digests: XOR-folds whole 64-bit words (no data-dependent branch
/// or early exit), then one constant-time comparison of the fold with zero. Digest lengths are
/// multiples of 8 (16 to 64 bytes) except SHA-224's 28, whose 4-byte tail is folded the same way.
fn ct_eq_words(a: &[u8], b: &[u8]) -> subtle::Choice {
    if a.len() != b.len() {
        return subtle::Choice::from(0);
    }
    let mut diff = 0u64;
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut wa).zip(&mut wb) {
        diff |= word(x) ^ word(y);
    }
    for (x, y) in wa.remainder().iter().zip(wb.remainder()) {
        diff |= u64::from(x ^ y);
    }
    diff.ct_eq(&0)
}

/// The little-endian u64 of an 8-byte slice (0 for any other length).
pub(crate) fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn lowercase_hex_decodes_and_everything_else_is_refused() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut out = vec![0u8; 256];
        assert_eq!(decode_lower_hex(text.as_bytes(), &mut out), Some(()));
        assert_eq!(out, bytes);
        let hex_digit = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        for bad in (0..=255u8).filter(|&c| !hex_digit(c)) {
            for at in 0..4 {
                let mut text = *b"0a1b";
                text[at] = bad;
                assert_eq!(
                    decode_lower_hex(&text, &mut [0; 2]),
                    None,
                    "{bad:#x} at {at}"
                );
            }
        }
        assert_eq!(decode_lower_hex(b"0a1", &mut [0; 2]), None);
        assert_eq!(decode_lower_hex(b"0A1B", &mut [0; 2]), None);
    }
}
