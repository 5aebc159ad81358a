//! The host token and the Origin check. Pure except [`Token::load`] / [`Token::generate`].
//!
//! The token is >= 256 random bits (hex), compared in constant time, accepted only as
//! `Authorization: token <t>` (or `Bearer <t>`) or the `token` query parameter, and never
//! logged: [`Token`]'s `Debug` prints `<redacted>`.

use std::path::Path;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// The host's secret token.
#[derive(Clone)]
pub struct Token(String);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Why a token could not be set up.
#[derive(Debug)]
pub struct TokenError(pub String);

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenError {}

/// Minimum token length in characters when read from a file (a hex token of 256 bits is 64).
pub const MIN_TOKEN_CHARS: usize = 32;

impl Token {
    /// 256 fresh random bits from the OS, as 64 hex characters.
    pub fn generate() -> Result<Token, TokenError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())
            .map_err(|e| TokenError(format!("OS random source: {e}")))?;
        Ok(Token(hex::encode(bytes.as_ref())))
    }

    /// Reads a token from `path` (first line, trimmed). Refuses short tokens and files other
    /// users can read.
    pub fn load(path: &Path) -> Result<Token, TokenError> {
        // A token is 64 characters; a huge file named by mistake is refused unread. The mode is
        // checked on the opened file.
        let bytes = Zeroizing::new(
            kernelgate_zmq::files::read_private(path, 64 << 10)
                .map_err(|e| TokenError(format!("token file: {e}")))?,
        );
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| TokenError(format!("token file {} is not UTF-8 text", path.display())))?;
        Token::from_text(text.lines().next().unwrap_or("").trim())
    }

    /// A token from text (validated for length and charset; never echoed in errors).
    pub fn from_text(text: &str) -> Result<Token, TokenError> {
        if text.len() < MIN_TOKEN_CHARS {
            return Err(TokenError(format!(
                "token is shorter than {MIN_TOKEN_CHARS} characters"
            )));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError(
                "token has spaces or non-ASCII characters".into(),
            ));
        }
        Ok(Token(text.to_owned()))
    }

    /// The token text: only for writing the owner-only token file and printing the URL once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison (the length is not secret).
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.len() == candidate.len() && bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }
}

/// Where a request carried a token, if anywhere we accept.
pub fn presented_token<'a>(
    authorization: Option<&'a str>,
    query: Option<&'a str>,
) -> Option<String> {
    if let Some(h) = authorization {
        let h = h.trim();
        let (scheme, rest) = h.split_once(char::is_whitespace).unwrap_or((h, ""));
        if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") {
            return Some(rest.trim().to_owned());
        }
    }
    let query = query?;
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("token=") {
            return Some(percent_decode(v));
        }
    }
    None
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hexpair = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hexpair.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The outcome of authenticating a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The right token.
    Ok,
    /// No token where we look for one (401).
    Missing,
    /// A token, but not the right one (403).
    Wrong,
}

/// Checks a request's token.
pub fn check(token: &Token, authorization: Option<&str>, query: Option<&str>) -> AuthOutcome {
    match presented_token(authorization, query) {
        None => AuthOutcome::Missing,
        Some(t) if token.matches(&t) => AuthOutcome::Ok,
        Some(_) => AuthOutcome::Wrong,
    }
}

/// Origins allowed to open WebSockets and call the API from a browser.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Exact origins (`https://lab.example.org`); `*` allows any.
    pub allow: Vec<String>,
}

impl OriginPolicy {
    /// Whether a request with `origin` (the header, if any) to `host` (the Host header) passes.
    /// No Origin header: a non-browser client, allowed (it still needs the token). Same host:
    /// allowed. Otherwise only listed origins.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        if self
            .allow
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .map(|h| h.trim_end_matches('/'));
        match (origin_host, host) {
            (Some(o), Some(h)) => o.eq_ignore_ascii_case(h),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> Token {
        Token::from_text("0123456789abcdef0123456789abcdef0123456789abcdef")
            .unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn generated_tokens_are_256_bits_and_distinct() {
        let a = Token::generate()
            .map(|t| t.expose().to_owned())
            .unwrap_or_default();
        let b = Token::generate()
            .map(|t| t.expose().to_owned())
            .unwrap_or_default();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn debug_is_redacted() {
        assert!(!format!("{:?}", tok()).contains("0123"));
    }

    #[test]
    fn header_and_query_forms() {
        let t = tok();
        let s = t.expose().to_owned();
        assert_eq!(
            check(&t, Some(&format!("token {s}")), None),
            AuthOutcome::Ok
        );
        assert_eq!(
            check(&t, Some(&format!("Bearer {s}")), None),
            AuthOutcome::Ok
        );
        assert_eq!(
            check(&t, None, Some(&format!("session_id=x&token={s}"))),
            AuthOutcome::Ok
        );
        assert_eq!(check(&t, None, None), AuthOutcome::Missing);
        assert_eq!(
            check(&t, Some(&format!("Basic {s}")), None),
            AuthOutcome::Missing
        );
        assert_eq!(check(&t, Some("token nope"), None), AuthOutcome::Wrong);
        assert_eq!(
            check(&t, None, Some(&format!("xtoken={s}"))),
            AuthOutcome::Missing
        );
        assert_eq!(
            check(&t, None, Some(&format!("token={s}x"))),
            AuthOutcome::Wrong
        );
    }

    #[test]
    fn short_tokens_refused() {
        assert!(Token::from_text("short").is_err());
        assert!(Token::from_text("has space 0123456789abcdef0123456789").is_err());
    }

    #[test]
    fn origins() {
        let p = OriginPolicy {
            allow: vec!["https://lab.example.org".into()],
        };
        assert!(p.allows(None, Some("127.0.0.1:8889")));
        assert!(p.allows(Some("http://127.0.0.1:8889"), Some("127.0.0.1:8889")));
        assert!(p.allows(Some("https://lab.example.org"), Some("127.0.0.1:8889")));
        assert!(!p.allows(Some("http://evil.example"), Some("127.0.0.1:8889")));
        assert!(!p.allows(Some("null"), Some("127.0.0.1:8889")));
        assert!(OriginPolicy {
            allow: vec!["*".into()]
        }
        .allows(Some("http://evil.example"), None));
    }
}
