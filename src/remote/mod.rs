//! The client side of a Jupyter Server compatible host (`kernelgate serve`, jupyter_server): its
//! base URL, the token read from a file, plain TCP or TLS connections ([`tls`]), the few REST
//! calls `exec --url` needs ([`http`]), and a kernel's WebSocket (`/api/kernels/{id}/channels`)
//! in the `v1.kernel.websocket.jupyter.org` framing or the legacy JSON one ([`channels`]).
//!
//! Every network step is bounded by the timeout given to [`Server::new`]; every refusal is
//! turned into a sentence (the token was refused, no such kernel, connection refused, ...).

mod channels;
mod http;
mod listeners;
mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use kernelgate_host::auth::Token;
use kernelgate_wire::websocket::V1_SUBPROTOCOL;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use channels::Channels;
use http::read_response;
use tls::{tls_connector, tls_error};

/// Largest WebSocket message accepted (outputs can be big: images, buffers).
const MAX_WS_MESSAGE: usize = 256 << 20;

/// A byte stream to the host: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Conn = Box<dyn Io>;

/// Which WebSocket framing to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WsProtocol {
    /// The v1 subprotocol, or legacy JSON when the host does not offer it.
    Auto,
    /// `v1.kernel.websocket.jupyter.org` only.
    V1,
    /// JSON text frames (binary frames for messages with buffers).
    Legacy,
}

/// A host at a base URL, with its token.
pub struct Server {
    /// Some for https.
    tls: Option<tokio_rustls::TlsConnector>,
    /// Host name or address to connect to (IPv6 without brackets).
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority.
    authority: String,
    /// Path prefix without the trailing `/` ("" for the root).
    base: String,
    /// `scheme://authority/base`, for messages (never carries the token).
    shown: String,
    token: Token,
    /// Bound of each connection, handshake and request.
    timeout: Duration,
}

/// The token for `url`: from `token_file`, else (for a loopback URL) the file `kernelgate serve`
/// wrote owner-only to the runtime directory for that port. Never from argv or the environment.
pub fn load_token(token_file: Option<&Path>, url: &str) -> anyhow::Result<Token> {
    if let Some(path) = token_file {
        return Token::load(path).map_err(|e| anyhow!("{e}"));
    }
    let uri = parse_url(url)?;
    let default = default_token_file(&uri);
    match default {
        Some(path) if path.is_file() => {
            let port = port_of(&uri);
            if !listeners::port_is_ours(port) {
                bail!(
                    "not sending the token of {}: something listening on port {port} belongs \
                     to another user, or nothing listens there (the host that wrote it may have \
                     crashed); give --token-file FILE if this is the host you mean",
                    path.display()
                );
            }
            Token::load(&path).map_err(|e| anyhow!("{e}"))
        }
        _ => bail!(
            "no token for {}: give --token-file FILE (or KERNELGATE_TOKEN_FILE=FILE), a file \
             holding the token; the token itself is never taken from argv or the environment",
            shown(&uri)
        ),
    }
}

/// `kernelgate-serve-PORT.token` in the runtime directory, for a loopback URL.
fn default_token_file(uri: &Uri) -> Option<PathBuf> {
    let port = port_of(uri);
    is_loopback(uri).then(|| {
        kernelgate_zmq::files::runtime_dir().join(format!("kernelgate-serve-{port}.token"))
    })
}

/// The URL's host, without the brackets of an IPv6 address.
fn host_of(uri: &Uri) -> &str {
    uri.host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// Whether the URL names this machine's loopback (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(uri: &Uri) -> bool {
    let host = host_of(uri);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The URL's port, or its scheme's.
fn port_of(uri: &Uri) -> u16 {
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    uri.port_u16().unwrap_or(default_port)
}

/// Parses and checks `--url`: http or https, no user info, no query (so no token in argv).
fn parse_url(url: &str) -> anyhow::Result<Uri> {
    let has_token = url
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("token=")));
    if has_token {
        // The URL is not repeated: it holds the secret.
        bail!(
            "--url carries the token (?token=...): command lines are visible to every user of \
             this machine; give the base URL only, and the token in a file with --token-file"
        );
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| anyhow!("invalid --url {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => bail!("--url must start with http:// or https:// (got {url:?})"),
    }
    let authority = uri
        .authority()
        .with_context(|| format!("--url {url:?} has no host"))?;
    if authority.as_str().contains('@') {
        bail!("--url must not carry a user name or password");
    }
    if uri.query().is_some() {
        bail!("--url takes the host's base URL, without a query (got {url:?})");
    }
    Ok(uri)
}

fn shown(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    format!("{scheme}://{authority}{}", uri.path().trim_end_matches('/'))
}

impl Server {
    /// The host at `url` (http:// or https://); for https, certificates are checked against
    /// `cafile` if given, else the system's CA bundle.
    pub fn new(
        url: &str,
        token: Token,
        cafile: Option<&Path>,
        timeout: Duration,
        insecure_http: bool,
    ) -> anyhow::Result<Server> {
        let uri = parse_url(url)?;
        let https = uri.scheme_str() == Some("https");
        if cafile.is_some() && !https {
            bail!("--cafile is for https:// URLs");
        }
        if !https && !insecure_http && !is_loopback(&uri) {
            bail!(
                "refusing to send the token in clear text to {}: use https://, a tunnel to a \
                 loopback address, or --insecure-http",
                shown(&uri)
            );
        }
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("").to_owned();
        let host = host_of(&uri).to_owned();
        let port = port_of(&uri);
        let tls = if https {
            Some(tls_connector(cafile)?)
        } else {
            None
        };
        Ok(Server {
            tls,
            host,
            port,
            authority,
            base: uri.path().trim_end_matches('/').to_owned(),
            shown: shown(&uri),
            token,
            timeout,
        })
    }

    /// The base URL, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A new connection, TLS-wrapped for https.
    async fn connect(&self) -> anyhow::Result<Conn> {
        let deadline = Instant::now() + self.timeout;
        let hp = format!("{}:{}", self.host, self.port);
        let tcp = match timeout_at(
            deadline,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        {
            Err(_) => bail!("no connection to {hp} within {:?}", self.timeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => bail!(
                "connection refused by {hp}: is `kernelgate serve` (or a Jupyter server) running at {}?",
                self.shown
            ),
            Ok(Err(e)) => return Err(anyhow!(e).context(format!("connecting to {hp}"))),
            Ok(Ok(tcp)) => tcp,
        };
        // Requests and replies are small messages: don't let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| anyhow!("{:?} is not a valid TLS server name: {e}", self.host))?;
        match timeout_at(deadline, tls.connect(name, tcp)).await {
            Err(_) => bail!("no TLS handshake with {hp} within {:?}", self.timeout),
            Ok(Ok(stream)) => Ok(Box::new(stream)),
            Ok(Err(e)) => Err(tls_error(&hp, e)),
        }
    }

    /// One REST call; the status and the JSON body (`null` when empty or not JSON).
    async fn rest(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut conn = self.connect().await?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut request = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: token {}\r\n\
             Accept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.base,
            self.authority,
            self.token.expose(),
            body.len()
        );
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str("\r\n");
        request.push_str(&body);
        let hp = format!("{}:{}", self.host, self.port);
        let exchange = async {
            conn.write_all(request.as_bytes()).await?;
            conn.flush().await?;
            read_response(&mut conn).await
        };
        let (status, bytes) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => bail!(
                "{hp} did not answer {method} {path} within {:?}",
                self.timeout
            ),
            Ok(Err(e)) => return Err(e.context(format!("{method} {path} on {}", self.shown))),
            Ok(Ok(r)) => r,
        };
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// `POST /api/kernels`: starts a kernel of `name` (the host's default if None); its id.
    pub async fn start_kernel(&self, name: Option<&str>) -> anyhow::Result<String> {
        let body = name.map_or_else(|| json!({}), |n| json!({ "name": n }));
        let (status, model) = self.rest("POST", "/api/kernels", Some(&body)).await?;
        if status != 201 && status != 200 {
            return Err(self.refusal(status, &model, "starting a kernel", None));
        }
        model
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("{} started a kernel but sent no id: {model}", self.shown))
    }

    /// `DELETE /api/kernels/{id}`.
    pub async fn delete_kernel(&self, id: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .rest("DELETE", &format!("/api/kernels/{id}"), None)
            .await?;
        match status {
            200..=299 => Ok(()),
            _ => Err(self.refusal(status, &body, "shutting the kernel down", Some(id))),
        }
    }

    /// `POST /api/kernels/{id}/interrupt`.
    pub async fn interrupt_kernel(&self, id: &str) -> anyhow::Result<()> {
        let (status, body) = self
            .rest("POST", &format!("/api/kernels/{id}/interrupt"), None)
            .await?;
        match status {
            200..=299 => Ok(()),
            _ => Err(self.refusal(status, &body, "interrupting the kernel", Some(id))),
        }
    }

    /// An HTTP refusal in words.
    fn refusal(
        &self,
        status: u16,
        body: &Value,
        doing: &str,
        kernel: Option<&str>,
    ) -> anyhow::Error {
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(|m| format!(": {}", m.chars().take(200).collect::<String>()))
            .unwrap_or_default();
        match (status, kernel) {
            (401 | 403, _) => anyhow!(
                "the token was refused by {} (HTTP {status}{message}); check --token-file",
                self.shown
            ),
            (404, Some(id)) => anyhow!("no kernel {id} on {} (HTTP 404{message})", self.shown),
            _ => anyhow!("{doing}: {} answered HTTP {status}{message}", self.shown),
        }
    }

    /// Opens the kernel's WebSocket, in the framing `protocol` asks for.
    pub async fn channels(&self, kernel: &str, protocol: WsProtocol) -> anyhow::Result<Channels> {
        match self
            .open_channels(kernel, protocol != WsProtocol::Legacy)
            .await
        {
            // Hosts without the v1 subprotocol answer without one: fall back to legacy JSON.
            Err(Refused::NoSubprotocol) if protocol == WsProtocol::Auto => self
                .open_channels(kernel, false)
                .await
                .map_err(|e| e.into_error(self, kernel)),
            r => r.map_err(|e| e.into_error(self, kernel)),
        }
    }

    async fn open_channels(&self, kernel: &str, v1: bool) -> Result<Channels, Refused> {
        let session = uuid::Uuid::new_v4().to_string();
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        let url = format!(
            "{scheme}://{}{}/api/kernels/{kernel}/channels?session_id={session}",
            self.authority, self.base
        );
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Refused::Other(anyhow!("invalid WebSocket URL {url:?}: {e}")))?;
        let authz = HeaderValue::from_str(&format!("token {}", self.token.expose()))
            .map_err(|_| Refused::Other(anyhow!("the token is not a valid HTTP header value")))?;
        request.headers_mut().insert("Authorization", authz);
        if v1 {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(V1_SUBPROTOCOL),
            );
        }
        let conn = self.connect().await.map_err(Refused::Other)?;
        // tungstenite zero-fills its whole read buffer (128 KiB by default) before every read.
        let config = WebSocketConfig::default()
            .read_buffer_size(16 << 10)
            .max_message_size(Some(MAX_WS_MESSAGE))
            .max_frame_size(Some(MAX_WS_MESSAGE));
        let handshake = tokio_tungstenite::client_async_with_config(request, conn, Some(config));
        let (ws, response) = match tokio::time::timeout(self.timeout, handshake).await {
            Err(_) => {
                return Err(Refused::Other(anyhow!(
                    "no WebSocket handshake with {} within {:?}",
                    self.shown,
                    self.timeout
                )))
            }
            Ok(Err(WsError::Http(r))) => {
                let body = r
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                return Err(Refused::Http(r.status().as_u16(), body));
            }
            Ok(Err(WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(
                SubProtocolError::NoSubProtocol,
            )))) => return Err(Refused::NoSubprotocol),
            Ok(Err(e)) => {
                let not_http = matches!(
                    e,
                    WsError::Protocol(
                        ProtocolError::HttparseError(_) | ProtocolError::HandshakeIncomplete
                    ) | WsError::ConnectionClosed
                        | WsError::AlreadyClosed
                        | WsError::Io(_)
                );
                let hint = if not_http && self.tls.is_none() {
                    " (is the host serving https? then use an https:// URL)"
                } else {
                    ""
                };
                return Err(Refused::Other(anyhow!(
                    "WebSocket handshake with {} failed: {e}{hint}",
                    self.shown
                )));
            }
            Ok(Ok(r)) => r,
        };
        let v1 = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .is_some_and(|p| p.as_bytes() == V1_SUBPROTOCOL.as_bytes());
        Ok(Channels::new(ws, v1, session))
    }
}

/// Why a WebSocket was not opened.
enum Refused {
    /// An HTTP answer instead of the upgrade.
    Http(u16, Value),
    /// The host did not take the v1 subprotocol.
    NoSubprotocol,
    Other(anyhow::Error),
}

impl Refused {
    fn into_error(self, server: &Server, kernel: &str) -> anyhow::Error {
        match self {
            Refused::Http(status, body) => {
                server.refusal(status, &body, "opening the kernel's WebSocket", Some(kernel))
            }
            Refused::NoSubprotocol => anyhow!(
                "{} does not speak the {V1_SUBPROTOCOL} WebSocket protocol; try --ws-protocol legacy",
                server.shown
            ),
            Refused::Other(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_never_echo_a_token() {
        let e = parse_url("http://127.0.0.1:8889/?token=s3cr3t").err();
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("carries the token") && !e.contains("s3cr3t"),
            "{e}"
        );
        assert!(parse_url("ftp://h/").is_err());
        assert!(parse_url("http://u:p@h/").is_err());
        assert!(parse_url("http://h:1/?x=1").is_err());
        let u = parse_url("https://[::1]:9/base/").ok();
        assert_eq!(
            u.as_ref().map(shown).as_deref(),
            Some("https://[::1]:9/base")
        );
        let u = parse_url("http://localhost:8889").ok();
        let f = u.as_ref().and_then(default_token_file);
        assert!(f.is_some_and(|f| f.ends_with("kernelgate-serve-8889.token")));
        let u = parse_url("http://example.org:8889").ok();
        assert!(u.as_ref().and_then(default_token_file).is_none());
    }

    #[test]
    fn the_token_goes_in_clear_text_only_to_loopback_or_when_asked() {
        let token = || Token::from_text(&"a".repeat(64)).unwrap_or_else(|e| panic!("{e}"));
        let server = |url: &str, insecure: bool| {
            Server::new(url, token(), None, Duration::from_secs(1), insecure)
        };
        let e = server("http://192.0.2.1:8888", false)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("clear text")));
        assert!(server("http://192.0.2.1:8888", true).is_ok());
        assert!(server("http://127.0.0.1:8888", false).is_ok());
        assert!(server("http://[::1]:8888", false).is_ok());
    }
}
