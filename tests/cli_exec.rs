//! `kernelgate exec` against the built-in kernel started by `kernelgate kernel -f FILE`.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{Kernel, BIN};

/// Runs `kernelgate exec --existing FILE ARGS` with `stdin`.
fn exec(kernel: &Kernel, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("exec")
        .arg("--existing")
        .arg(&kernel.file)
        .args(["--timeout", "20"])
        .args(args)
        .env("JUPYTER_RUNTIME_DIR", &kernel.runtime)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning kernelgate exec");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        pipe.write_all(text.as_bytes()).expect("writing stdin");
    }
    drop(pipe);
    child
        .wait_with_output()
        .expect("waiting for kernelgate exec")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exec_runs_code_streams_outputs_and_reports_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = Kernel::start(dir.path());

    // Output and result.
    let out = exec(&kernel, &[r#"print("hi"); 6*7"#], None);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n42\n");

    // State persists between runs; code from stdin with `-` and with no CODE at all.
    let out = exec(
        &kernel,
        &["-"],
        Some("let answer = 40 + 2;\nprint(`answer=${answer}`);"),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "answer=42\n");
    let out = exec(&kernel, &[], Some("answer + 1"));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "43\n");

    // An error: exit 1, traceback on stderr, nothing on stdout.
    let out = exec(&kernel, &["let x = 1; x.no_such_function()"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no_such_function"), "stderr: {err}");
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));

    // --json: every line parses, with the status messages, outputs and the reply.
    let out = exec(&kernel, &["--json", r#"print("j"); 1+1"#], None);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<(String, String)> = lines
        .iter()
        .map(|m| {
            for key in ["channel", "header", "parent_header", "metadata", "content"] {
                assert!(m.get(key).is_some(), "{key} missing in {m}");
            }
            (
                m["channel"].as_str().unwrap_or("").into(),
                m["header"]["msg_type"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let has = |ch: &str, ty: &str| kinds.iter().any(|(c, t)| c == ch && t == ty);
    assert!(
        has("iopub", "status") && has("iopub", "stream") && has("iopub", "execute_result"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(|(c, t)| (c.as_str(), t.as_str())),
        Some(("shell", "execute_reply"))
    );
    let result = lines
        .iter()
        .find(|m| m["header"]["msg_type"] == "execute_result")
        .expect("result");
    assert_eq!(result["content"]["data"]["text/plain"], "2");

    // --json with an error exits 1 too.
    let out = exec(&kernel, &["--json", "throw \"boom\""], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).lines().any(|l| l.contains("\"error\"")));

    // --allow-stdin answers input() from our standard input.
    let out = exec(
        &kernel,
        &[
            "--allow-stdin",
            r#"let n = input("name? "); print("hello " + n)"#,
        ],
        Some("bob\n"),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "name? hello bob\n");

    // The connection file by name, resolved in the runtime directory.
    std::fs::create_dir_all(&kernel.runtime).expect("runtime dir");
    std::fs::copy(&kernel.file, kernel.runtime.join("kernel-test1.json")).expect("copy");
    let out = Command::new(BIN)
        .args(["exec", "--existing", "test1", "5*5"])
        .env("JUPYTER_RUNTIME_DIR", &kernel.runtime)
        .output()
        .expect("exec by name");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "25\n");
    std::fs::remove_file(kernel.runtime.join("kernel-test1.json")).expect("rm");

    kernel.terminate();
}

#[test]
fn exec_explains_a_missing_file_and_a_silent_kernel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["exec", "--existing", "no-such-kernel", "1"])
        .env("JUPYTER_RUNTIME_DIR", dir.path())
        .output()
        .expect("exec");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    // A connection file nobody listens on: a clear timeout, not a hang.
    let file = dir.path().join("dead.json");
    let listeners: Vec<_> = (0..5)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    drop(listeners);
    let info = serde_json::json!({
        "transport": "tcp", "ip": "127.0.0.1", "shell_port": ports[0], "iopub_port": ports[1],
        "stdin_port": ports[2], "control_port": ports[3], "hb_port": ports[4],
        "key": "abc", "signature_scheme": "hmac-sha256",
    });
    std::fs::write(&file, info.to_string()).expect("write");
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["exec", "--timeout", "1", "--existing"])
        .arg(&file)
        .arg("1")
        .output()
        .expect("exec");
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        text(&out.stderr).contains("did not answer"),
        "{}",
        text(&out.stderr)
    );
}
