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
