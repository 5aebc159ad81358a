//! Shared by the CLI integration tests: the built-in kernel as a child process.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_kernelgate");

/// A `kernelgate kernel` child, killed if a test fails before stopping it.
pub struct Kernel {
    pub child: Child,
    pub file: PathBuf,
    pub runtime: PathBuf,
}

impl Kernel {
    /// Starts `kernelgate kernel -f DIR/k.json` (runtime dir DIR/runtime) and waits for the file.
    pub fn start(dir: &Path) -> Kernel {
        let file = dir.join("k.json");
        let runtime = dir.join("runtime");
        let child = Command::new(BIN)
            .args(["kernel", "-f"])
            .arg(&file)
            .env("JUPYTER_RUNTIME_DIR", &runtime)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning kernelgate kernel");
        let started = Instant::now();
        while !file.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no connection file after 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Kernel {
            child,
            file,
            runtime,
        }
    }

    /// SIGTERM, then waits: the kernel must exit on its own and remove its connection file.
    pub fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(status.success(), "kernel exited with {status}");
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "kernel still running 10 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!self.file.exists(), "connection file left behind");
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kernelgate serve --port 0` child on 127.0.0.1 with its own runtime and data directories and
/// a token file, killed if a test fails before stopping it. Its log goes to `DIR/serve.log`.
pub struct Serve {
    pub child: Child,
    /// The base URL it printed, without the token (`http://127.0.0.1:PORT`).
    pub url: String,
    pub port: u16,
    pub token: String,
    /// Where the token is kept (given with --token-file, or the one serve wrote itself).
    pub token_file: PathBuf,
    pub runtime: PathBuf,
    pub log: PathBuf,
}

impl Serve {
    /// Starts `kernelgate serve --token-file DIR/token` (a token made here) with `extra` flags
    /// and waits (20 s at most) for its URL line.
    pub fn start(dir: &Path, extra: &[&std::ffi::OsStr]) -> Serve {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let token_file = dir.join("token");
        write_private(&token_file, &format!("{token}\n"));
        let mut args = vec![std::ffi::OsStr::new("--token-file"), token_file.as_os_str()];
        args.extend_from_slice(extra);
        let mut serve = Serve::launch(dir, &args);
        serve.token_file = token_file;
        assert_eq!(serve.token, token, "the URL shows the token given");
        serve
    }

    /// Starts `kernelgate serve` without a token file: it makes its own token, which is read
    /// back from the URL it prints; `token_file` is where serve says it keeps it.
    pub fn start_with_own_token(dir: &Path, extra: &[&std::ffi::OsStr]) -> Serve {
        let mut serve = Serve::launch(dir, extra);
        serve.token_file = serve
            .runtime
            .join(format!("kernelgate-serve-{}.token", serve.port));
        serve
    }

    fn launch(dir: &Path, extra: &[&std::ffi::OsStr]) -> Serve {
        let specs = dir.join("kernelspecs");
        std::fs::create_dir_all(&specs).expect("kernelspecs dir");
        let runtime = dir.join("runtime");
        let log = dir.join("serve.log");
        let mut child = Command::new(BIN)
            .args(["serve", "--ip", "127.0.0.1", "--port", "0", "--no-recover"])
            .arg("--kernel-dirs")
            .arg(&specs)
            .arg("--state-file")
            .arg(dir.join("state.json"))
            .args(extra)
            .env("JUPYTER_RUNTIME_DIR", &runtime)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env_remove("KERNELGATE_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("serve.log"))
            .spawn()
            .expect("spawning kernelgate serve");
        // The one stdout line: SCHEME://127.0.0.1:PORT/?token=...
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if !line.is_empty() => line,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kernelgate serve printed no URL within 20 s; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let (url, token) = line
            .trim()
            .split_once("/?token=")
            .map(|(u, t)| (u.to_owned(), t.to_owned()))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in the URL");
        Serve {
            child,
            url,
            port,
            token,
            token_file: PathBuf::new(),
            runtime,
            log,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (30 s at most): it must shut its kernels down and exit 0.
    pub fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(
                    status.success(),
                    "serve exited with {status}; log:\n{}",
                    self.log()
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve still running 30 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` to a new owner-only (0600) file.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("creating a private file");
    std::io::Write::write_all(&mut f, text.as_bytes()).expect("writing a private file");
}

/// Runs `kernelgate ARGS` with `env` and `stdin`; killed after `limit`.
pub fn run_bounded(
    args: &[&std::ffi::OsStr],
    env: &[(&str, &std::ffi::OsStr)],
    stdin: Option<&str>,
    limit: Duration,
) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("KERNELGATE_TOKEN_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning kernelgate");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        std::io::Write::write_all(&mut pipe, text.as_bytes()).expect("writing stdin");
    }
    drop(pipe);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for kernelgate"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("kernelgate {args:?} still running after {limit:?}");
        }
    }
}

/// A REST call over plain HTTP/1.1 (std only; every read bounded): status and JSON body.
pub fn http(method: &str, url: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = std::net::TcpStream::connect(hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: token {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    parse_http(&out)
}

/// Status and JSON body of a whole `Connection: close` answer (chunked or not).
pub fn parse_http(out: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(out).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {text:?}"));
    let (head, mut body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut plain = String::new();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        while let Some((len, after)) = body.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            plain.push_str(after.get(..n).unwrap_or(""));
            body = after.get(n + 2..).unwrap_or("");
        }
    } else {
        plain = body.to_owned();
    }
    (
        status,
        serde_json::from_str(&plain).unwrap_or(serde_json::Value::Null),
    )
}
