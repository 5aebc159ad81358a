//! CURVE keys and Z85 text encoding (ZeroMQ RFC 32).

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::ffi;

const Z85_CHARS: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Encodes bytes as Z85. The input length must be a multiple of 4.
pub fn z85_encode(data: &[u8]) -> Result<String> {
    if data.len() % 4 != 0 {
        return Err(Error::InvalidArgument(
            "Z85 input length must be a multiple of 4".into(),
        ));
    }
    let mut out = String::with_capacity(data.len() / 4 * 5);
    for chunk in data.chunks_exact(4) {
        let mut word = [0u8; 4];
        word.copy_from_slice(chunk);
        let mut v = u32::from_be_bytes(word);
        let mut block = [0u8; 5];
        for slot in block.iter_mut().rev() {
            // v % 85 < 85 always, so the fallback is unreachable.
            *slot = Z85_CHARS.get((v % 85) as usize).copied().unwrap_or(b'0');
            v /= 85;
        }
        block.iter().for_each(|&c| out.push(char::from(c)));
    }
    Ok(out)
}

/// Decodes Z85 text. The length must be a multiple of 5 and every character valid.
pub fn z85_decode(text: &str) -> Result<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 5 != 0 {
        return Err(Error::InvalidArgument(
            "Z85 length must be a multiple of 5".into(),
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / 5 * 4);
    for chunk in bytes.chunks_exact(5) {
        let mut v: u64 = 0;
        for &c in chunk {
            let digit = Z85_CHARS
                .iter()
                .position(|&z| z == c)
                .ok_or_else(|| Error::InvalidArgument("invalid Z85 character".into()))?;
            v = v * 85 + digit as u64;
        }
        let v = u32::try_from(v)
            .map_err(|_| Error::InvalidArgument("Z85 block out of range".into()))?;
        out.extend_from_slice(&v.to_be_bytes());
    }
    Ok(out)
}

/// A CURVE public key (32 bytes). Displays as Z85; public keys may be logged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// From 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// From 40 Z85 characters or 32 raw bytes.
    pub fn parse(input: impl AsRef<[u8]>) -> Result<Self> {
        let input = input.as_ref();
        match input.len() {
            32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(input);
                Ok(Self(k))
            }
            40 => {
                let text = std::str::from_utf8(input)
                    .map_err(|_| Error::InvalidKey("public key is not Z85 text"))?;
                Self::from_z85(text)
            }
            _ => Err(Error::InvalidKey(
                "a CURVE key is 32 bytes or 40 Z85 characters",
            )),
        }
    }

    /// From 40 Z85 characters.
    pub fn from_z85(text: &str) -> Result<Self> {
        let raw = z85_decode(text).map_err(|_| Error::InvalidKey("public key is not valid Z85"))?;
        let arr: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::InvalidKey("a CURVE key is 40 Z85 characters"))?;
        Ok(Self(arr))
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 40-character Z85 form.
    pub fn to_z85(&self) -> String {
        z85_encode(&self.0).unwrap_or_default() // 32 is a multiple of 4: cannot fail
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_z85())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_z85())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_z85(s)
    }
}

/// A CURVE secret key, held as its 40-character Z85 text. Zeroized on drop; `Debug`
/// prints `<redacted>`; it has no `Display`.
#[derive(Clone, Zeroize, zeroize::ZeroizeOnDrop)]
pub struct SecretKey(String);

impl SecretKey {
    /// From 40 Z85 characters (validated).
    pub fn from_z85(text: &str) -> Result<Self> {
        let raw = Zeroizing::new(
            z85_decode(text).map_err(|_| Error::InvalidKey("secret key is not valid Z85"))?,
        );
        if raw.len() != 32 {
            return Err(Error::InvalidKey("a CURVE key is 40 Z85 characters"));
        }
        Ok(Self(text.to_owned()))
    }

    /// From 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(z85_encode(bytes).unwrap_or_default())
    }

    /// The Z85 text. Handle with care: never log it.
    pub fn as_z85(&self) -> &str {
        &self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> Result<PublicKey> {
        PublicKey::from_z85(&ffi::curve_public(&self.0)?)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A new CURVE keypair from libzmq (libsodium's RNG): (public key in Z85, secret key).
pub fn curve_keypair() -> Result<(String, SecretKey)> {
    let (public, secret) = ffi::curve_keypair()?;
    Ok((public, SecretKey(secret)))
}

/// The Z85 public key matching a secret key.
pub fn curve_public(secret: &SecretKey) -> Result<String> {
    ffi::curve_public(secret.as_z85())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z85_rfc32_vector() {
        let data = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        assert_eq!(z85_encode(&data).ok().as_deref(), Some("HelloWorld"));
        assert_eq!(z85_decode("HelloWorld").ok(), Some(data.to_vec()));
        assert!(z85_decode("Hello").is_ok());
        assert!(z85_decode("Hell\"").is_err());
        assert!(z85_decode("#####").is_err()); // > u32::MAX
        assert!(z85_encode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn keypair_public_matches() -> Result<()> {
        let (public, secret) = curve_keypair()?;
        assert_eq!(public.len(), 40);
        assert_eq!(curve_public(&secret)?, public);
        assert_eq!(secret.public_key()?.to_z85(), public);
        assert_eq!(format!("{secret:?}"), "SecretKey(<redacted>)");
        let pk = PublicKey::parse(public.as_bytes())?;
        assert_eq!(PublicKey::parse(pk.as_bytes())?, pk);
        assert!(PublicKey::parse(b"short").is_err());
        Ok(())
    }
}
