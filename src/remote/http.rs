//! The one HTTP/1.1 answer of a `Connection: close` request, read with `httparse`.

use anyhow::{anyhow, bail};
use tokio::io::AsyncReadExt as _;

use super::Conn;

/// Largest REST response body read.
const MAX_BODY: usize = 16 << 20;

/// Reads one HTTP/1.1 response (the request said `Connection: close`): status and body.
pub(super) async fn read_response(conn: &mut Conn) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match conn.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer closing without close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(anyhow!(e).context("reading the answer")),
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if buf.len() > MAX_BODY {
            bail!("the answer is larger than {MAX_BODY} bytes");
        }
        let eof = n == 0;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(head)) => {
                let status = response.code.unwrap_or(0);
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                };
                let length = header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
                let chunked = header("transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                let body = buf.get(head..).unwrap_or_default();
                if chunked {
                    if let Some(b) = dechunk(body) {
                        return Ok((status, b));
                    }
                } else if let Some(length) = length {
                    if let Some(b) = body.get(..length) {
                        return Ok((status, b.to_vec()));
                    }
                } else if status == 204 || status == 304 || eof {
                    return Ok((status, body.to_vec()));
                }
                if eof {
                    bail!("the connection closed in the middle of the answer");
                }
            }
            Ok(httparse::Status::Partial) if eof && buf.is_empty() => {
                bail!("the server closed the connection without answering (is it serving https? then use an https:// URL)")
            }
            Ok(httparse::Status::Partial) if !eof => {}
            _ => bail!(
                "the answer is not HTTP (is the server serving https? then use an https:// URL)"
            ),
        }
    }
}

/// The body of a complete chunked transfer; None while incomplete.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(rest.get(..line_end)?).ok()?;
        let size = line.split(';').next()?.trim();
        let n = usize::from_str_radix(size, 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        // The size comes from the server: no arithmetic on it may overflow.
        let start = line_end.checked_add(2)?;
        let end = start.checked_add(n)?;
        out.extend_from_slice(rest.get(start..end)?);
        rest = rest.get(end.checked_add(2)?..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"3\r\nab"), None);
        assert_eq!(dechunk(b"3\r\nabc\r\n"), None);
        // A size near usize::MAX is refused, not overflowed.
        assert_eq!(dechunk(b"ffffffffffffffff\r\nabc\r\n0\r\n\r\n"), None);
        assert_eq!(dechunk(b"fffffffffffffffe\r\nabc\r\n0\r\n\r\n"), None);
    }
}
