//! Host integration tests: crash recovery. After the host is killed, the next host re-adopts
//! every live kernel under its id, and trusts nothing in the state file it cannot verify.
//! Needs the `kernelgate` binary: `cargo build --bin kernelgate` first.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_crash_readopts_and_stop_leaves_nothing() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(
        &token_file,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let state_file = dir.path().join("state.json");
    let runtime = dir.path().join("runtime");
    // The first host is a real `kernelgate serve` process, so it can be killed with -9.
    let mut serve = KillOnDrop(
        std::process::Command::new(kernelgate_bin())
            .args(["serve", "--port", "0", "--kernel-dirs", "/nonexistent"])
            .arg("--state-file")
            .arg(&state_file)
            .arg("--token-file")
            .arg(&token_file)
            .env("JUPYTER_RUNTIME_DIR", &runtime)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(serve.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().split("/?token=").next().unwrap().to_owned();
    let auth = "token 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (s, m) = http(
            "POST",
            &format!("{base}/api/kernels"),
            Some(auth),
            None,
            &[],
        )
        .await;
        assert_eq!(s, 201, "{m}");
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(800)).await; // state file written (debounced)
    let state = kernelgate_host::state::HostState::read(&state_file).expect("state file");
    assert_eq!(state.kernels.len(), 2);
    serve.0.kill().unwrap(); // SIGKILL: a crash
    serve.0.wait().unwrap();
    // Kernel b dies while the host is away.
    let rec_b = state.kernels.iter().find(|k| k.id == ids[1]).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(rec_b.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (a, b) = (ids[0].clone(), ids[1].clone());
    let h2 = TestHost::start(|c| {
        c.state_file = Some(state_file.clone());
        c.provision.runtime_dir = runtime.clone();
    })
    .await;
    let (_, list) = h2.req("GET", "/api/kernels", None).await;
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        vec![a.as_str()],
        "live kernel re-adopted under its id, dead one ({b}) dropped"
    );
    assert!(
        !runtime.join(format!("kernel-{b}.json")).exists(),
        "dead kernel's connection file cleaned up"
    );
    let mut ws = ws_connect(&h2.ws_url(&a, true), true, None).await.unwrap();
    let (_, r, _) = execute(&mut ws, true, "3 * 3").await;
    assert_eq!(r, "9");
    let pid_a = h2.host.shared.registry.get(&a).unwrap().pid().unwrap();
    h2.stop().await;
    assert!(
        !kernelgate_host::provision::process_alive(pid_a),
        "kernel stopped with the host"
    );
    assert!(!state_file.exists(), "state file removed");
    // The crashed `serve` leaves only its empty lock file, which the next `serve` on that port
    // takes over (and removes when it stops); this second host is in-process, lockless.
    let left: Vec<_> = std::fs::read_dir(&runtime)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_none_or(|x| x != "lock"))
        .collect();
    assert!(left.is_empty(), "no connection file left: {left:?}");
}

/// A `kernelgate kernel -f FILE` child (the built-in kernel writing its own connection file)
/// leading its own process group, as the host launches kernels.
fn standalone_kernel(file: &std::path::Path) -> KillOnDrop {
    use std::os::unix::process::CommandExt;
    let child = KillOnDrop(
        std::process::Command::new(kernelgate_bin())
            .args(["kernel", "-f"])
            .arg(file)
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + T;
    while !file.exists() {
        assert!(std::time::Instant::now() < deadline, "no connection file");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn record(id: &str, pid: u32, start_time: Option<u64>, file: &std::path::Path) -> Value {
    json!({"id": id, "name": "rhai", "pid": pid, "start_time": start_time,
           "connection_file": file, "sandbox": null})
}

/// Re-adoption trusts nothing in the state file it can check: a live kernel that does not
/// answer with the key its connection file holds is not adopted (and, being the process that
/// was launched, is stopped); a pid now naming another process is not adopted and that process
/// is left alone; a record without a start time is never killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readoption_refuses_what_it_cannot_verify() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    // A real kernel, its connection file given a different key.
    let real = runtime.join("kernel-wrong-key.json");
    let mut kernel = standalone_kernel(&real);
    let mut info: Value = serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    info["key"] = json!("0".repeat(64));
    let forged = runtime.join("kernel-forged.json");
    std::fs::write(&forged, info.to_string()).unwrap();
    // A process that is not a kernel at all, recorded with another start time, and the same
    // process recorded with no start time.
    let mut stranger = KillOnDrop(
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap(),
    );
    let kernel_pid = kernel.0.id();
    let kernel_start = kernelgate_host::provision::process_start_time(kernel_pid as i32);
    let stranger_pid = stranger.0.id();
    let state = json!({"version": 1, "host_pid": 1, "kernels": [
        record("wrong-key", kernel_pid, kernel_start, &forged),
        record("reused-pid", stranger_pid, Some(1), &runtime.join("kernel-reused.json")),
        record("no-start-time", stranger_pid, None, &runtime.join("kernel-none.json")),
    ]});
    let state_file = dir.path().join("state.json");
    std::fs::write(&state_file, state.to_string()).unwrap();

    let h = TestHost::start(|c| {
        c.state_file = Some(state_file.clone());
        c.provision.runtime_dir = runtime.clone();
    })
    .await;
    let (_, list) = h.req("GET", "/api/kernels", None).await;
    assert_eq!(list, json!([]), "nothing re-adopted");
    assert!(
        !forged.exists(),
        "the unverifiable kernel's connection file removed"
    );
    let exited = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + T;
        while std::time::Instant::now() < deadline {
            if kernel.0.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    })
    .await
    .unwrap();
    assert!(
        exited,
        "the kernel that did not answer with its key was left running"
    );
    assert!(
        stranger.0.try_wait().unwrap().is_none(),
        "a process that merely has a recorded pid was killed"
    );
    h.stop().await;
}
