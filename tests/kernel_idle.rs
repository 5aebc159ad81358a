//! An idle built-in kernel sleeps: its threads wake for messages and for shutdown, not on a
//! timer. With a thousand kernels on one machine, a 100 ms tick per channel thread was tens of
//! thousands of wake-ups a second. This counts context switches, which does not depend on how
//! fast or loaded the machine is: a sleeping thread makes none.

use std::time::Duration;

mod common;

use common::{Kernel, BIN};

/// Voluntary plus involuntary context switches of every thread of `pid`.
fn context_switches(pid: u32) -> u64 {
    let mut total = 0;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("reading /proc/PID/task");
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some((key, value)) = line.split_once(':') {
                if key.ends_with("ctxt_switches") {
                    total += value.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    total
}

#[test]
fn idle_kernel_threads_do_not_wake_on_a_timer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = Kernel::start(dir.path());
    // One request proves it serves, then let start-up settle.
    let out = std::process::Command::new(BIN)
        .args(["exec", "--timeout", "20", "--existing"])
        .arg(&kernel.file)
        .arg("1 + 1")
        .env("JUPYTER_RUNTIME_DIR", &kernel.runtime)
        .output()
        .expect("kernelgate exec");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));

    let pid = kernel.child.id();
    let before = context_switches(pid);
    std::thread::sleep(Duration::from_secs(2));
    let woke = context_switches(pid) - before;
    // Three channel threads on a 100 ms tick made at least 60 here; a sleeping kernel makes
    // none, and a few are allowed for libzmq's own housekeeping.
    assert!(woke < 15, "an idle kernel woke {woke} times in 2 s");
    kernel.terminate();
}
