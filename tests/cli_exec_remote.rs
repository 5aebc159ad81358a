//! `kernelgate exec --url` against a `kernelgate serve --port 0` child: code on a named kernel and
//! on one it starts (and deletes), both WebSocket framings, and its refusals in words. Every wait
//! is bounded.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::ffi::OsStr;
use std::process::Output;
use std::time::{Duration, Instant};

mod common;

use common::{http, run_bounded, write_private, Serve};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `kernelgate exec --url URL --token-file F --timeout 20 ARGS`.
fn exec(serve: &Serve, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all: Vec<&OsStr> = vec![
        "exec".as_ref(),
        "--url".as_ref(),
        serve.url.as_ref(),
        "--token-file".as_ref(),
        serve.token_file.as_os_str(),
        "--timeout".as_ref(),
        "20".as_ref(),
    ];
    all.extend(args.iter().map(OsStr::new));
    let runtime = [("JUPYTER_RUNTIME_DIR", serve.runtime.as_os_str())];
    run_bounded(&all, &runtime, stdin, LIMIT)
}

/// The ids of the host's kernels.
fn kernels(serve: &Serve) -> Vec<String> {
    let (status, list) = http(
        "GET",
        &format!("{}/api/kernels", serve.url),
        Some(&serve.token),
    );
    assert_eq!(status, 200, "{list}");
    list.as_array()
        .expect("a list")
        .iter()
        .map(|k| k["id"].as_str().expect("id").to_owned())
        .collect()
}

fn ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn exec_url_runs_code_on_a_kernel_of_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    let (status, model) = http(
        "POST",
        &format!("{}/api/kernels", serve.url),
        Some(&serve.token),
    );
    assert_eq!(status, 201, "{model}");
    let id = model["id"].as_str().expect("id").to_owned();

    // Output and result, in both WebSocket framings.
    for protocol in ["auto", "v1", "legacy"] {
        let out = exec(
            &serve,
            &[
                "--kernel-id",
                &id,
                "--ws-protocol",
                protocol,
                r#"print("hi"); 6*7"#,
            ],
            None,
        );
        ok(&out);
        assert_eq!(text(&out.stdout), "hi\n42\n", "{protocol}");
    }

    // The kernel keeps its state between runs; code from stdin with `-` and with no CODE.
    let out = exec(
        &serve,
        &["--kernel-id", &id, "-"],
        Some("let answer = 40 + 2;\nprint(`answer=${answer}`);"),
    );
    ok(&out);
    assert_eq!(text(&out.stdout), "answer=42\n");
    let out = exec(&serve, &["--kernel-id", &id], Some("answer + 1"));
    ok(&out);
    assert_eq!(text(&out.stdout), "43\n");

    // stderr streams go to stderr.
    let out = exec(
        &serve,
        &["--kernel-id", &id, r#"debug("to-stderr"); 1"#],
        None,
    );
    ok(&out);
    assert_eq!(text(&out.stdout), "1\n");
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "{}",
        text(&out.stderr)
    );

    // A raising cell: exit 1, the error on stderr, nothing on stdout.
    let out = exec(
        &serve,
        &["--kernel-id", &id, "let x = 1; x.no_such_function()"],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no_such_function"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "stdout: {}", text(&out.stdout));

    // --json: one message per line, the reply last; an error exits 1 too.
    let out = exec(
        &serve,
        &["--kernel-id", &id, "--json", r#"print("j"); 1+1"#],
        None,
    );
    ok(&out);
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kind = |m: &Value| {
        (
            m["channel"].as_str().unwrap_or("").to_owned(),
            m["header"]["msg_type"].as_str().unwrap_or("").to_owned(),
        )
    };
    let kinds: Vec<(String, String)> = lines.iter().map(kind).collect();
    let has = |ch: &str, ty: &str| kinds.iter().any(|(c, t)| c == ch && t == ty);
    assert!(
        has("iopub", "status") && has("iopub", "stream") && has("iopub", "execute_result"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(|(c, t)| (c.as_str(), t.as_str())),
        Some(("shell", "execute_reply"))
    );
    let out = exec(
        &serve,
        &["--kernel-id", &id, "--json", "throw \"boom\""],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).lines().any(|l| l.contains("\"error\"")));

    // --allow-stdin answers input() from our standard input.
    let out = exec(
        &serve,
        &[
            "--kernel-id",
            &id,
            "--allow-stdin",
            r#"let n = input("name? "); print("hello " + n)"#,
        ],
        Some("bob\n"),
    );
    ok(&out);
    assert_eq!(text(&out.stdout), "name? hello bob\n");

    // Code still running at --timeout: exit 1 in time, and the kernel is interrupted.
    let started = Instant::now();
    let out = run_bounded(
        &[
            "exec".as_ref(),
            "--url".as_ref(),
            serve.url.as_ref(),
            "--token-file".as_ref(),
            serve.token_file.as_os_str(),
            "--kernel-id".as_ref(),
            id.as_ref(),
            "--timeout".as_ref(),
            "2".as_ref(),
            "loop {}".as_ref(),
        ],
        &[],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        text(&out.stderr).contains("did not finish within"),
        "{}",
        text(&out.stderr)
    );
    let out = exec(&serve, &["--kernel-id", &id, "5*5"], None);
    ok(&out);
    assert_eq!(text(&out.stdout), "25\n");

    // Without --kernel-id: a kernel of its own, deleted afterwards (also when the code raised),
    // with the token file named by KERNELGATE_TOKEN_FILE.
    let out = run_bounded(
        &[
            "exec".as_ref(),
            "--url".as_ref(),
            serve.url.as_ref(),
            r#"print("fresh"); answer"#.as_ref(),
        ],
        &[("KERNELGATE_TOKEN_FILE", serve.token_file.as_os_str())],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1), "a fresh kernel has no `answer`");
    assert_eq!(text(&out.stdout), "fresh\n");
    assert!(
        text(&out.stderr).contains("answer"),
        "{}",
        text(&out.stderr)
    );
    let out = exec(
        &serve,
        &["--kernel-name", "rhai", "print(`x=${1+1}`)"],
        None,
    );
    ok(&out);
    assert_eq!(text(&out.stdout), "x=2\n");
    assert_eq!(
        kernels(&serve),
        vec![id.clone()],
        "started kernels are deleted"
    );
    let out = exec(&serve, &["--kernel-name", "no-such-spec", "1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no such kernelspec"),
        "{}",
        text(&out.stderr)
    );

    serve.stop();
}

#[test]
fn exec_url_refusals_are_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = Serve::start(dir.path(), &[]);
    let url: &OsStr = serve.url.as_ref();

    // A wrong token: refused in words, for a new kernel and for a named one alike.
    let wrong = dir.path().join("wrong-token");
    write_private(&wrong, &format!("{}\n", "f".repeat(64)));
    for extra in [&[][..], &["--kernel-id", "abc"][..]] {
        let mut args: Vec<&OsStr> = vec![
            "exec".as_ref(),
            "--url".as_ref(),
            url,
            "--token-file".as_ref(),
            wrong.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        args.push("1".as_ref());
        let out = run_bounded(&args, &[], None, LIMIT);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("the token was refused"), "{err}");
        assert!(
            !err.contains(&"f".repeat(64)),
            "the token is not echoed: {err}"
        );
    }
    assert!(kernels(&serve).is_empty());

    // A token file other users can read is refused before anything is sent.
    let shared = dir.path().join("shared-token");
    std::fs::write(&shared, format!("{}\n", serve.token)).expect("write");
    let out = run_bounded(
        &[
            "exec".as_ref(),
            "--url".as_ref(),
            url,
            "--token-file".as_ref(),
            shared.as_os_str(),
            "1".as_ref(),
        ],
        &[],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("readable by other users"),
        "{}",
        text(&out.stderr)
    );

    // No such kernel.
    let out = exec(&serve, &["--kernel-id", "no-such-kernel", "1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no kernel no-such-kernel on"),
        "{}",
        text(&out.stderr)
    );

    // The token in the URL (visible to every user in argv) is refused and not repeated.
    let with_token = format!("{}/?token={}", serve.url, serve.token);
    let out = run_bounded(
        &[
            "exec".as_ref(),
            "--url".as_ref(),
            with_token.as_ref(),
            "1".as_ref(),
        ],
        &[],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("carries the token") && !err.contains(&serve.token),
        "{err}"
    );

    // No token file at all (a URL that is not loopback has no default).
    let out = run_bounded(
        &[
            "exec".as_ref(),
            "--url".as_ref(),
            "http://192.0.2.1:9/".as_ref(),
            "1".as_ref(),
        ],
        &[],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--token-file"),
        "{}",
        text(&out.stderr)
    );

    // Nobody listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = run_bounded(
        &[
            "exec".as_ref(),
            "--url".as_ref(),
            format!("http://127.0.0.1:{port}").as_ref(),
            "--token-file".as_ref(),
            serve.token_file.as_os_str(),
            "1".as_ref(),
        ],
        &[],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("connection refused"),
        "{}",
        text(&out.stderr)
    );

    // https to a plain-HTTP host: a TLS failure in words.
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("cert");
    let cafile = dir.path().join("cert.pem");
    std::fs::write(&cafile, cert.cert.pem()).expect("write");
    let out = run_bounded(
        &[
            "exec".as_ref(),
            "--url".as_ref(),
            serve.url.replacen("http:", "https:", 1).as_ref(),
            "--cafile".as_ref(),
            cafile.as_os_str(),
            "--token-file".as_ref(),
            serve.token_file.as_os_str(),
            "1".as_ref(),
        ],
        &[],
        None,
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("TLS handshake with"),
        "{}",
        text(&out.stderr)
    );

    // --existing and --url are exclusive; one of them is needed.
    for args in [
        &["exec", "1"][..],
        &[
            "exec",
            "--existing",
            "x",
            "--url",
            "http://127.0.0.1:1",
            "1",
        ][..],
    ] {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let out = run_bounded(&args, &[], None, LIMIT);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    }

    serve.stop();
}
