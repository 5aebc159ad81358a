//! `kernelgate console` driven through a pseudo-terminal (util-linux `script` provides it).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kernelgate");

#[test]
fn console_runs_cells_multiline_input_and_interrupts() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` (for a pty) is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("k.json");
    let mut kernel = Command::new(BIN)
        .args(["kernel", "-f"])
        .arg(&file)
        .env("JUPYTER_RUNTIME_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("kernel");
    let started = Instant::now();
    while !file.exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "no connection file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let command = format!("{BIN} console --existing {}", file.display());
    let mut console = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("HOME", dir.path())
        .env_remove("JUPYTER_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("script");
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
        std::thread::sleep(Duration::from_millis(if line == "\x03" { 1500 } else { 600 }));
        keys.write_all(line.as_bytes()).expect("typing");
        keys.flush().expect("flush");
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(keys);
    let out = console.wait_with_output().expect("console");
    let _ = kernel.kill();
    let _ = kernel.wait();
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    for expected in ["In [1]: ", "hi\n", "Out[1]: 42", "...: ", "Out[3]: 43", "who? carol", "\"carol\"", "KeyboardInterrupt", "Interrupted", "Out[7]: 2"] {
        assert!(screen.contains(expected), "{expected:?} missing from:\n{screen}");
    }
    assert!(out.status.success(), "{screen}");
    let history = dir.path().join(".local/share/kernelgate/console_history");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&history).expect("history").permissions());
    assert_eq!(mode & 0o077, 0, "history file must be owner-only");
}
