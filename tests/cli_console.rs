//! `kernelgate console` driven through a pseudo-terminal (util-linux `script` provides it).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{Kernel, BIN};

/// `kernelgate console --existing FILE` in a pty, HOME in `home`.
fn console_in_a_pty(home: &std::path::Path, file: &std::path::Path) -> std::process::Child {
    // util-linux `script` provides the pty (Debian's essential bsdutils package): a missing
    // tool fails the test rather than skipping it.
    assert!(
        Command::new("script").arg("--version").output().is_ok(),
        "util-linux `script` (for a pty) is not installed"
    );
    // `exec`: the shell `script` starts must not stay between the pty and the console. dash (the
    // usual /bin/sh) would stay, and the pty's SIGINT on Ctrl-C would kill it, not the console.
    let command = format!("exec {BIN} console --existing {}", file.display());
    Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("HOME", home)
        .env("SHELL", "/bin/sh")
        .env_remove("JUPYTER_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script")
}

/// Waits at most `within` for `child` to exit: a console that does not exit fails the test
/// instead of hanging it.
fn exited_within(child: std::process::Child, within: Duration) -> std::process::Output {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(within)
        .expect("console exited in time")
        .expect("console")
}

/// A kernel that dies while a cell runs ends the console (which would otherwise wait for the
/// cell as long as it likes): its heartbeat falls silent.
#[test]
fn console_notices_a_dead_kernel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kernel = Kernel::start(dir.path());
    let mut console = console_in_a_pty(dir.path(), &kernel.file);
    let mut keys = console.stdin.take().expect("stdin");
    std::thread::sleep(Duration::from_millis(1500));
    keys.write_all(b"let i = 0; loop { i += 1; }\r")
        .expect("typing");
    keys.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(1500));
    kernel.child.kill().expect("kill the kernel");
    let out = exited_within(console, Duration::from_secs(60));
    drop(keys);
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(!out.status.success(), "{screen}");
    assert!(screen.contains("heartbeats"), "{screen}");
}

#[test]
fn console_runs_cells_multiline_input_and_interrupts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = Kernel::start(dir.path());
    let mut console = console_in_a_pty(dir.path(), &kernel.file);
    let mut keys = console.stdin.take().expect("stdin");
    // The line editor drops typeahead it read past a line's end: one line at a time.
    for line in [
        "print(\"hi\"); 6*7\r",
        "fn twice(x) {\r",
        "x * 2\r",
        "}\r",
        "twice(21) + 1\r",
        "let who = input(\"who? \");\r",
        "carol\r",
        "who\r",
        "let i = 0; loop { i += 1; }\r",
        "\x03", // Ctrl-C while the loop runs: the pty sends SIGINT to the console
        "1 + 1\r",
        "exit\r",
    ] {
        std::thread::sleep(Duration::from_millis(if line == "\x03" {
            1500
        } else {
            600
        }));
        keys.write_all(line.as_bytes()).expect("typing");
        keys.flush().expect("flush");
    }
    // The pty's input stays open until the console exits: `script` hangs up on the console when
    // its stdin ends, which on a loaded machine can come before the console has finished leaving.
    let out = exited_within(console, Duration::from_secs(60));
    drop(keys);
    drop(kernel);
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    for expected in [
        "In [1]: ",
        "hi\n",
        "Out[1]: 42",
        "...: ",
        "Out[3]: 43",
        "who? carol",
        "\"carol\"",
        "KeyboardInterrupt",
        "Interrupted",
        "Out[7]: 2",
    ] {
        assert!(
            screen.contains(expected),
            "{expected:?} missing from:\n{screen}"
        );
    }
    assert!(out.status.success(), "{}\n{screen}", out.status);
    let history = dir.path().join(".local/share/kernelgate/console_history");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&history).expect("history").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "history file must be owner-only");
}
