//! `kernelgate serve` as a user runs it: the token it makes for itself (256 bits, owner-only
//! file, shown once, never logged), owner-only connection and state files, a clean stop on
//! SIGTERM that leaves no process or file, and refusal to listen beyond loopback without TLS.
//! Every wait is bounded.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use common::{http, run_bounded, Serve};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Waits (20 s at most) for `path` to exist.
fn wait_for(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: i64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie (state Z) has exited already.
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn own_token_and_private_files_and_sigterm_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let serve = Serve::start_with_own_token(dir.path(), &[]);
    let token = serve.token.clone();
    assert_eq!(token.len(), 64, "256 bits in hex: {token:?}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let kept = std::fs::read_to_string(&serve.token_file).expect("the token file");
    assert_eq!(kept.trim(), token);
    assert_eq!(mode(&serve.token_file), 0o600, "token file owner-only");
    assert_eq!(mode(&serve.runtime), 0o700, "runtime directory owner-only");

    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, model) = http("POST", &format!("{}/api/kernels", serve.url), Some(&token));
        assert_eq!(status, 201, "{model}");
        ids.push(model["id"].as_str().expect("id").to_owned());
    }
    wait_for(&state);
    assert_eq!(mode(&state), 0o600, "state file owner-only");
    let pids: Vec<i64> = {
        let started = Instant::now();
        loop {
            let table: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&state).expect("state")).unwrap_or_default();
            let pids: Vec<i64> = table["kernels"]
                .as_array()
                .map(|ks| ks.iter().filter_map(|k| k["pid"].as_i64()).collect())
                .unwrap_or_default();
            if pids.len() == 2 {
                break pids;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "state file never listed both kernels: {table}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for id in &ids {
        let file = serve.runtime.join(format!("kernel-{id}.json"));
        assert_eq!(mode(&file), 0o600, "connection file owner-only");
    }
    let (runtime, token_file, log) = (
        serve.runtime.clone(),
        serve.token_file.clone(),
        serve.log.clone(),
    );
    serve.stop();
    for pid in pids {
        assert!(!alive(pid), "kernel {pid} outlived the host");
    }
    assert!(!token_file.exists(), "token file left behind");
    assert!(!state.exists(), "state file left behind");
    assert_eq!(
        files_in(&runtime),
        Vec::<PathBuf>::new(),
        "files left behind"
    );
    let log = std::fs::read_to_string(log).expect("serve.log");
    assert!(log.contains("kernelgate: stopped"), "{log}");
    assert!(!log.contains(&token), "the token reached the log");
}

#[test]
fn a_second_host_on_the_same_port_or_state_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Serve::start_with_own_token(dir.path(), &[]);
    let token_before = std::fs::read(&first.token_file).expect("the token file");
    let port = first.port.to_string();
    let other_state = dir.path().join("other-state.json");
    let shared_state = dir.path().join("state.json");
    // Another address of the same port (both bind), then another port with the same state file.
    let cases: [(&str, &str, &Path); 2] = [
        ("127.0.0.2", port.as_str(), other_state.as_path()),
        ("127.0.0.1", "0", shared_state.as_path()),
    ];
    for (ip, port, state) in cases {
        let out = run_bounded(
            &[
                OsStr::new("serve"),
                OsStr::new("--ip"),
                OsStr::new(ip),
                OsStr::new("--port"),
                OsStr::new(port),
                OsStr::new("--state-file"),
                state.as_os_str(),
                OsStr::new("--kernel-dirs"),
                dir.path().join("kernelspecs").as_os_str(),
            ],
            &[("JUPYTER_RUNTIME_DIR", first.runtime.as_os_str())],
            None,
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{ip}:{port}: a second host started: {err}"
        );
        assert!(
            err.contains("another kernelgate host"),
            "{ip}:{port}: {err}"
        );
        assert!(out.stdout.is_empty(), "{ip}:{port}: printed a URL");
    }
    assert_eq!(
        std::fs::read(&first.token_file).expect("the token file"),
        token_before,
        "the first host's token file was touched"
    );
    let (status, _) = http("GET", &format!("{}/api", first.url), Some(&first.token));
    assert_eq!(status, 200, "the first host stopped serving");
    first.stop();
}

#[test]
fn an_unusable_state_file_stops_the_start_instead_of_being_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = dir.path().join("runtime");
    let state = dir.path().join("state.json");
    let garbage = b"{\"kernels\": \"not a table\"}\n";
    std::fs::write(&state, garbage).expect("write");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = run_bounded(
        &[
            OsStr::new("serve"),
            OsStr::new("--ip"),
            OsStr::new("127.0.0.1"),
            OsStr::new("--port"),
            OsStr::new("0"),
            OsStr::new("--state-file"),
            state.as_os_str(),
            OsStr::new("--kernel-dirs"),
            dir.path().as_os_str(),
        ],
        &[("JUPYTER_RUNTIME_DIR", runtime.as_os_str())],
        None,
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started: {err}");
    assert!(
        err.contains("cannot recover from the state file") && err.contains("--no-recover"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "printed a URL");
    assert_eq!(
        std::fs::read(&state).expect("state"),
        garbage,
        "the state file was changed"
    );
}

#[test]
fn listening_beyond_loopback_without_tls_is_refused() {
    // Refused before anything is bound: nothing listens beyond loopback, even for a moment.
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = dir.path().join("runtime");
    for ip in ["0.0.0.0", "::", "192.0.2.1"] {
        let out = run_bounded(
            &[
                OsStr::new("serve"),
                OsStr::new("--ip"),
                OsStr::new(ip),
                OsStr::new("--port"),
                OsStr::new("0"),
            ],
            &[("JUPYTER_RUNTIME_DIR", runtime.as_os_str())],
            None,
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{ip}: serve started: {err}");
        assert!(
            err.contains("WITHOUT TLS") && err.contains("--insecure-http"),
            "{ip}: {err}"
        );
        assert!(out.stdout.is_empty(), "{ip}: printed a URL");
    }
}

/// Starts a kernel of kernelspec `name` through the REST API: the status code.
fn post_kernel(url: &str, token: &str, name: &str) -> u16 {
    use std::io::{Read, Write};
    let hostport = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let body = format!("{{\"name\": \"{name}\"}}");
    let req = format!(
        "POST /api/kernels HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\
         Authorization: token {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    common::parse_http(&out).0
}

#[test]
fn starting_kernels_prints_a_progress_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A kernel that takes 1.5 s to start: the progress line comes once a second.
    let spec = dir.path().join("kernelspecs/slow");
    std::fs::create_dir_all(&spec).expect("spec dir");
    let argv = serde_json::json!([
        "sh",
        "-c",
        "sleep 1.5; exec \"$0\" kernel -f \"$1\"",
        common::BIN,
        "{connection_file}"
    ]);
    std::fs::write(
        spec.join("kernel.json"),
        serde_json::json!({"argv": argv, "display_name": "slow", "language": "rhai"}).to_string(),
    )
    .expect("kernel.json");
    // Unsandboxed: a foreign kernelspec may not run a binary from the build directory.
    let serve = Serve::start(dir.path(), &[OsStr::new("--sandbox"), OsStr::new("off")]);
    let posts: Vec<_> = (0..3)
        .map(|_| {
            let (url, token) = (serve.url.clone(), serve.token.clone());
            std::thread::spawn(move || post_kernel(&url, &token, "slow"))
        })
        .collect();
    for p in posts {
        assert_eq!(p.join().expect("POST thread"), 201);
    }
    // The last line comes on the tick after they are ready.
    let started = Instant::now();
    while !serve.log().contains("3/3 kernels ready, 0 starting") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no final progress line; log:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = serve.log();
    assert!(
        log.contains("kernels ready, 3 starting") || log.contains("kernels ready, 2 starting"),
        "no progress line while they started; log:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "colour codes in a log file");
    serve.stop();
}
