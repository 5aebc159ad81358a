//! `kernelgate serve --certfile/--keyfile` with a self-signed certificate made here (rcgen):
//! https REST and a wss execute (through `exec --url https://... --cafile`) trusting it, no
//! plain HTTP on the TLS port; and TCP_NODELAY on every connection the TLS server accepts.
//! Every wait is bounded.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{parse_http, run_bounded, write_private, Serve, BIN};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const LIMIT: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem owner-only).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("self-signed certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).expect("cert.pem");
    write_private(&key, &c.signing_key.serialize_pem());
    (cert, key)
}

/// A TLS client trusting only `cert`.
fn connector(cert: &Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert).expect("pem") {
        roots.add(c.expect("certificate")).expect("trust anchor");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A REST call over https to 127.0.0.1:`port`, trusting `cert`: status and JSON body.
fn https(cert: &Path, port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            let mut tls = connector(cert)
                .connect(name, tcp)
                .await
                .expect("TLS handshake with the host's certificate");
            let mut req = format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: 0\r\n"
            );
            if let Some(t) = token {
                req.push_str(&format!("Authorization: token {t}\r\n"));
            }
            req.push_str("\r\n");
            tls.write_all(req.as_bytes()).await.expect("write");
            let mut out = Vec::new();
            match tls.read_to_end(&mut out).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
                Err(e) => panic!("reading the answer: {e}"),
            }
            parse_http(&out)
        };
        tokio::time::timeout(LIMIT, exchange)
            .await
            .expect("https answer in time")
    })
}

#[test]
fn serve_over_tls_answers_https_and_wss_and_refuses_plain_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let serve = Serve::start(
        dir.path(),
        &[
            "--certfile".as_ref(),
            cert.as_os_str(),
            "--keyfile".as_ref(),
            key.as_os_str(),
        ],
    );
    assert!(serve.url.starts_with("https://127.0.0.1:"), "{}", serve.url);
    let token = Some(serve.token.as_str());

    // REST over https: the token is still required; a kernel starts.
    let (status, _) = https(&cert, serve.port, "GET", "/api/kernels", None);
    assert_eq!(status, 401);
    let (status, list) = https(&cert, serve.port, "GET", "/api/kernels", token);
    assert_eq!((status, list), (200, serde_json::json!([])));
    let (status, model) = https(&cert, serve.port, "POST", "/api/kernels", token);
    assert_eq!(status, 201, "{model}");
    let id = model["id"].as_str().expect("id").to_owned();

    // Code over wss, trusting the certificate with --cafile, in both framings.
    let exec = |args: &[&OsStr]| -> Output {
        let mut all: Vec<&OsStr> = vec![
            "exec".as_ref(),
            "--url".as_ref(),
            serve.url.as_ref(),
            "--cafile".as_ref(),
            cert.as_os_str(),
            "--token-file".as_ref(),
            serve.token_file.as_os_str(),
            "--timeout".as_ref(),
            "20".as_ref(),
        ];
        all.extend_from_slice(args);
        run_bounded(&all, &[], None, LIMIT)
    };
    for protocol in ["v1", "legacy"] {
        let out = exec(&[
            "--kernel-id".as_ref(),
            id.as_ref(),
            "--ws-protocol".as_ref(),
            protocol.as_ref(),
            r#"print("over tls"); 6*7"#.as_ref(),
        ]);
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "over tls\n42\n");
    }
    // A kernel of its own (POST and DELETE over https), and a raising cell.
    let out = exec(&[r#"print("fresh"); throw "boom""#.as_ref()]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "fresh\n");
    assert!(text(&out.stderr).contains("boom"), "{}", text(&out.stderr));
    let (_, list) = https(&cert, serve.port, "GET", "/api/kernels", token);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // Without --cafile the self-signed certificate is not trusted, and that is said.
    let out = run_bounded(
        &[
            "exec".as_ref(),
            "--url".as_ref(),
            serve.url.as_ref(),
            "--token-file".as_ref(),
            serve.token_file.as_os_str(),
            "--kernel-id".as_ref(),
            id.as_ref(),
            "1".as_ref(),
        ],
        &[],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("not trusted") || err.contains("CA bundle"),
        "{err}"
    );

    // Plain HTTP to the TLS port gets no HTTP answer ...
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", serve.port)).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let req = format!(
        "GET /api/kernels HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {}\r\nConnection: close\r\n\r\n",
        serve.token
    );
    let _ = plain.write_all(req.as_bytes());
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "{}", text(&answer));
    // ... and `exec --url http://` says what went wrong.
    let out = run_bounded(
        &[
            "exec".as_ref(),
            "--url".as_ref(),
            serve.url.replacen("https:", "http:", 1).as_ref(),
            "--token-file".as_ref(),
            serve.token_file.as_os_str(),
            "--kernel-id".as_ref(),
            id.as_ref(),
            "--timeout".as_ref(),
            "10".as_ref(),
            "1".as_ref(),
        ],
        &[],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("https"), "{err}");

    serve.stop();
}

/// The server-side socket of a connection from `client` to `server` in this process, and
/// whether TCP_NODELAY is set on it.
#[allow(unsafe_code)]
fn server_side_nodelay(server: std::net::SocketAddr, client: std::net::SocketAddr) -> Option<bool> {
    use std::os::fd::FromRawFd as _;
    for entry in std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
    {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor is only queried (getsockname, getpeername, getsockopt) and
        // never closed: the stream is never dropped. Had it been closed or reused since the
        // listing, the queries fail or name another socket, which the address check skips.
        let s = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        if s.local_addr().ok() == Some(server) && s.peer_addr().ok() == Some(client) {
            return s.nodelay().ok();
        }
    }
    None
}

#[test]
fn tls_server_sets_nodelay_on_accepted_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let token = kernelgate_host::auth::Token::generate().expect("token");
        let secret = token.expose().to_owned();
        let config = kernelgate_host::HostConfig::new(Path::new(BIN), dir.path().join("runtime"));
        let host = kernelgate_host::Host::new(config, token);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = kernelgate_host::api::listen::CappedAcceptor::new(16, Default::default());
        let timeout = kernelgate_host::api::listen::HEADER_READ_TIMEOUT;
        let server = kernelgate_host::api::tls_server(listener, &cert, &key, acceptor, timeout)
            .await
            .expect("TLS server");
        let app = host
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let task = tokio::spawn(server.serve(app));

        let check = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            // The default, which the server must have changed on its side.
            assert!(!tcp.nodelay().expect("nodelay"));
            let client = tcp.local_addr().expect("addr");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            let mut tls = connector(&cert)
                .connect(name, tcp)
                .await
                .expect("handshake");
            let req = format!(
                "GET /api HTTP/1.1\r\nHost: {addr}\r\nAuthorization: token {secret}\r\n\r\n"
            );
            tls.write_all(req.as_bytes()).await.expect("write");
            let mut buf = vec![0u8; 4096];
            let n = tls.read(&mut buf).await.expect("read");
            assert!(
                buf.get(..n).is_some_and(|b| b.starts_with(b"HTTP/1.1 200")),
                "{}",
                text(buf.get(..n).unwrap_or_default())
            );
            // The connection is still open (keep-alive): find the server's end of it.
            assert_eq!(server_side_nodelay(addr, client), Some(true));
        };
        tokio::time::timeout(LIMIT, check).await.expect("in time");
        task.abort();
    });
}
