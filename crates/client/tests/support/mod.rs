//! Test harness: a real ipykernel started through jupyter_client from the project's venv.
//! Every wait has a deadline; a missing venv fails the test (it is not skipped).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("KERNELGATE_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        p.exists(),
        "Python venv with jupyter_client and ipykernel not found at {} (set KERNELGATE_PYTHON)",
        p.display()
    );
    p
}

/// A kernel running under jupyter_client's KernelManager; shut down on drop.
pub struct Kernel {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub connection_file: PathBuf,
    pub runtime_dir: tempfile::TempDir,
    pub pid: u32,
}

impl Kernel {
    pub fn start(encryption: &str) -> Kernel {
        let runtime_dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/kernel_host.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(encryption)
            .env("JUPYTER_RUNTIME_DIR", runtime_dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the kernel host script");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut k = Kernel {
            child,
            stdin,
            lines,
            connection_file: PathBuf::new(),
            runtime_dir,
            pid: 0,
        };
        let first = k.line(Duration::from_secs(30));
        k.connection_file = PathBuf::from(first["connection_file"].as_str().unwrap());
        k.pid = u32::try_from(first["pid"].as_u64().unwrap()).unwrap();
        k
    }

    fn line(&mut self, timeout: Duration) -> Value {
        let line = self
            .lines
            .recv_timeout(timeout)
            .expect("kernel host script answered in time");
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad line from kernel host {line:?}: {e}"))
    }

    /// Waits (up to 10 s) for the kernel process to exit; true if it is still alive.
    pub fn wait_exit(&mut self) -> bool {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "wait").unwrap();
        stdin.flush().unwrap();
        self.line(Duration::from_secs(20))["alive"]
            .as_bool()
            .unwrap()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: the script shuts the kernel down
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
