//! `kernelgate kernel --kernel NAME` errors: an unknown kernelspec name, a kernel that dies at
//! start, a connection file that exists. (ipykernel under management is tested from Python in
//! python/tests/test_managed_kernel.py.)

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

mod common;

use common::run_bounded;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes kernelspec `name` with `argv` into `specs`.
fn spec(specs: &Path, name: &str, argv: &[&str]) {
    let dir = specs.join(name);
    std::fs::create_dir_all(&dir).expect("kernelspec dir");
    let json = serde_json::json!({ "argv": argv, "display_name": name, "language": "sh" });
    std::fs::write(dir.join("kernel.json"), json.to_string()).expect("kernel.json");
}

/// Runs `kernelgate kernel --kernel NAME --kernel-dirs DIR/specs -f DIR/conn.json EXTRA`.
fn managed(dir: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    let specs = dir.join("specs");
    let conn = dir.join("conn.json");
    let work = dir.join("work");
    let mut args: Vec<&OsStr> = ["kernel", "--kernel", name, "--kernel-dirs"]
        .into_iter()
        .map(OsStr::new)
        .collect();
    args.extend([specs.as_os_str(), OsStr::new("-f"), conn.as_os_str()]);
    args.extend([OsStr::new("--kernel-work-root"), work.as_os_str()]);
    args.extend(extra.iter().map(OsStr::new));
    let runtime = dir.join("runtime");
    run_bounded(
        &args,
        &[("JUPYTER_RUNTIME_DIR", runtime.as_os_str())],
        None,
        Duration::from_secs(30),
    )
}

#[test]
fn unknown_kernelspec_name_is_an_error_listing_the_known_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    spec(
        &dir.path().join("specs"),
        "alpha",
        &["true", "{connection_file}"],
    );
    let out = managed(dir.path(), "no-such-kernel", &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(
        err.contains(r#"no kernelspec named "no-such-kernel"; known: alpha, rhai"#),
        "stderr: {err}"
    );
    assert!(
        err.contains("specs"),
        "the searched directory is named: {err}"
    );
    assert!(text(&out.stdout).is_empty());
    assert!(!dir.path().join("conn.json").exists());
}

#[test]
fn kernel_dying_at_start_is_reported_with_its_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let argv = ["sh", "-c", "exit 3", "{connection_file}"];
    spec(&dir.path().join("specs"), "dies", &argv);
    for sandbox in ["off", "on"] {
        let out = managed(dir.path(), "dies", &["--sandbox", sandbox]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--sandbox {sandbox}: {err}");
        assert!(err.contains("died at start (exit status: 3)"), "{err}");
        assert!(text(&out.stdout).is_empty(), "no ready line");
        assert!(
            !dir.path().join("conn.json").exists(),
            "connection file left"
        );
    }
    // The sandboxed run's working directory stays, its TMPDIR goes.
    let work: Vec<_> = std::fs::read_dir(dir.path().join("work"))
        .expect("work root")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert_eq!(work.len(), 1, "{work:?}");
    assert!(work.iter().all(|w| w.is_dir() && !w.join(".tmp").exists()));
}

#[test]
fn an_existing_connection_file_is_not_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    spec(
        &dir.path().join("specs"),
        "alpha",
        &["true", "{connection_file}"],
    );
    std::fs::write(dir.path().join("conn.json"), "{}").expect("conn.json");
    let out = managed(dir.path(), "alpha", &["--sandbox", "off"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("already exists"), "{err}");
    let kept = std::fs::read_to_string(dir.path().join("conn.json")).expect("conn.json");
    assert_eq!(kept, "{}");
}
