//! `kernelgate kernel -f FILE` with a FILE that exists: the kernel takes its key from it, so it
//! must be a file of ours that no one else could have written, or a local user who planted it
//! at a shared path (/tmp/k.json) would hold the key of the kernel started on it.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

mod common;

use common::run_bounded;

/// Runs the built-in kernel on `file`; it must refuse it, saying `why`.
fn refused(dir: &Path, file: &Path, why: &str) {
    let runtime = dir.join("runtime");
    let out = run_bounded(
        &[OsStr::new("kernel"), OsStr::new("-f"), file.as_os_str()],
        &[("JUPYTER_RUNTIME_DIR", runtime.as_os_str())],
        None,
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the kernel ran on {}: {err}",
        file.display()
    );
    assert!(err.contains(why), "{}: {err}", file.display());
}

const CONNECTION: &str = r#"{"transport": "tcp", "ip": "127.0.0.1", "shell_port": 0,
    "iopub_port": 0, "stdin_port": 0, "control_port": 0, "hb_port": 0,
    "signature_scheme": "hmac-sha256", "key": "known-to-whoever-wrote-the-file"}"#;

#[test]
fn a_connection_file_everyone_could_write_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = dir.path().join("shared.json");
    std::fs::write(&shared, CONNECTION).expect("write");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    refused(dir.path(), &shared, "writable by every user");
    // Through a symlink, the target is what is judged.
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&shared, &link).expect("symlink");
    refused(dir.path(), &link, "writable by every user");
}

#[test]
fn a_connection_file_of_another_user_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let planted = dir.path().join("planted.json");
    std::fs::write(&planted, CONNECTION).expect("write");
    if kernelgate_zmq::files::euid() == 0 {
        std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).expect("chown");
        refused(dir.path(), &planted, "owned by uid 65534");
    } else {
        // Not root: no file of another user can be made; one over the size limit stands in
        // for a file that must not be read whole.
        std::fs::write(&planted, vec![b' '; 65 << 10]).expect("write");
        refused(dir.path(), &planted, "larger than");
    }
}

#[test]
fn jupyters_escape_hatch_for_file_systems_without_permissions_is_honoured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = dir.path().join("shared.json");
    // A kernel that starts would run until killed: give it a file it refuses after the check
    // (a connection file without a key), and see it get past the ownership check to that error.
    std::fs::write(&shared, r#"{"transport": "tcp", "ip": "127.0.0.1"}"#).expect("write");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let runtime = dir.path().join("runtime");
    let out = run_bounded(
        &[OsStr::new("kernel"), OsStr::new("-f"), shared.as_os_str()],
        &[
            ("JUPYTER_RUNTIME_DIR", runtime.as_os_str()),
            ("JUPYTER_ALLOW_INSECURE_WRITES", OsStr::new("true")),
        ],
        None,
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("writable by every user"), "{err}");
    assert!(err.contains("connection file"), "{err}");
}
