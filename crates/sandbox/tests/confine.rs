//! Real Landlock domains on this machine: a confined shell reads what its plan allows and
//! nothing else, reaches only allowed TCP ports, and cannot signal outside its domain.
//! The tests need Landlock ABI 6 (this project's CI machine offers 7): they fail, never skip,
//! on a machine without it.
#![allow(clippy::expect_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::setup;
use kernelgate_sandbox::policy::{plan, Policy};
use kernelgate_sandbox::{confine_command, Confinement, Support};

fn run_confined(s: &common::Setup, policy: &Policy, ports: &[u16], script: &str) -> Output {
    let support = Support::probe();
    assert!(
        support.abi >= 6,
        "these tests need Landlock ABI 6 or later; this Linux offers {}",
        support.abi
    );
    let plan = plan(policy, None, &s.kernel, ports);
    let confinement = Confinement::build(&plan, &support).expect("ruleset");
    let mut cmd = Command::new("/bin/bash");
    cmd.args(["-c", script]).current_dir(&s.kernel.work_dir);
    confine_command(&mut cmd, confinement);
    cmd.output().expect("spawn")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn files_outside_the_plan_are_closed() {
    let s = setup();
    let script = format!(
        "cat {own}; cat {other} && echo OTHER-READ; ls {runtime} && echo LISTED; \
         echo hi > {work}/f && cat {work}/f; echo x > {root}/escape && echo ESCAPED; \
         sh -c 'cat {other}' && echo CHILD-READ; echo done",
        own = s.kernel.connection_file.display(),
        other = s.root.join("runtime/other.json").display(),
        runtime = s.root.join("runtime").display(),
        work = s.kernel.work_dir.display(),
        root = s.root.display(),
    );
    let out = run_confined(&s, &Policy::default(), &[], &script);
    let text = stdout(&out);
    assert!(text.contains("own key"), "{text}");
    assert!(text.contains("hi\n"), "{text}");
    assert!(text.contains("done"), "{text}");
    for leak in ["other key", "OTHER-READ", "LISTED", "ESCAPED", "CHILD-READ"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
    assert!(!Path::new(&s.root.join("escape")).exists());
}

#[test]
fn tcp_connect_only_to_allowed_ports_and_bind_only_own() {
    let s = setup();
    let allowed = TcpListener::bind("127.0.0.1:0").expect("listen");
    let closed = TcpListener::bind("127.0.0.1:0").expect("listen");
    let allowed_port = allowed.local_addr().expect("addr").port();
    let closed_port = closed.local_addr().expect("addr").port();
    let policy = Policy {
        connect_ports: vec![allowed_port],
        ..Policy::default()
    };
    let script = format!(
        "(exec 3<>/dev/tcp/127.0.0.1/{allowed_port}) && echo ALLOWED-OK; \
         (exec 3<>/dev/tcp/127.0.0.1/{closed_port}) && echo CLOSED-OPEN; echo done"
    );
    let out = run_confined(&s, &policy, &[], &script);
    let text = stdout(&out);
    assert!(text.contains("ALLOWED-OK"), "{text}");
    assert!(!text.contains("CLOSED-OPEN"), "{text}");
    assert!(text.contains("done"), "{text}");
}

#[test]
fn no_signals_outside_the_domain() {
    let s = setup();
    let me = std::process::id();
    let script = format!(
        "kill -0 {me} && echo SIGNALLED; kill -0 $$ && echo SELF; \
         head -c 20 /proc/{me}/environ && echo ENVIRON; head -c 20 /proc/{me}/maps && echo MAPS; \
         head -c 20 /proc/{me}/cmdline && echo CMDLINE; read l < /proc/$$/status && echo OWNPROC; \
         echo done"
    );
    let out = run_confined(&s, &Policy::default(), &[], &script);
    let text = stdout(&out);
    assert!(text.contains("SELF"), "{text}");
    assert!(!text.contains("SIGNALLED"), "{text}");
    assert!(!text.contains("ENVIRON"), "{text}");
    assert!(!text.contains("MAPS"), "{text}");
    assert!(!text.contains("CMDLINE"), "{text}");
    assert!(
        text.contains("OWNPROC"),
        "its own /proc/PID stays readable: {text}"
    );
}

#[test]
fn unconfined_the_same_script_succeeds() {
    // The control: without the domain the same attempts work, so the tests above can fail.
    let s = setup();
    let other = s.root.join("runtime/other.json");
    let out = Command::new("/bin/bash")
        .args([
            "-c",
            &format!("cat {} && kill -0 {}", other.display(), std::process::id()),
        ])
        .output()
        .expect("spawn");
    assert!(stdout(&out).contains("other key"));
    assert!(out.status.success());
}

/// A confined process must not reach a pathname Unix socket (systemd's user manager, ssh-agent,
/// D-Bus sit behind those; Landlock does not govern connect(2) on them), while anonymous pairs
/// and TCP sockets still work.
#[test]
fn no_unix_sockets_but_socketpairs() {
    let s = setup();
    let path = s.root.join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind unix socket");
    let script = format!(
        "/usr/bin/python3 -c '
import socket
try:
    socket.socket(socket.AF_UNIX).connect(\"{path}\"); print(\"UNIX-CONNECTED\")
except PermissionError: print(\"UNIX-REFUSED\")
a, b = socket.socketpair(); a.send(b\"x\"); print(\"PAIR\", b.recv(1))
socket.socket(socket.AF_INET); print(\"INET-OK\")
'",
        path = path.display()
    );
    let out = run_confined(&s, &Policy::default(), &[], &script);
    let text = stdout(&out);
    assert!(
        text.contains("UNIX-REFUSED"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("UNIX-CONNECTED"), "{text}");
    assert!(text.contains("PAIR b'x'"), "{text}");
    assert!(text.contains("INET-OK"), "{text}");
    // Allowed by the policy (`--sandbox-allow-unix-sockets`), the connect succeeds confined.
    let allowing = Policy {
        allow_unix_sockets: true,
        ..Policy::default()
    };
    let out = run_confined(&s, &allowing, &[], &script);
    assert!(stdout(&out).contains("UNIX-CONNECTED"), "{}", stdout(&out));
    // The control: unconfined, the same connect succeeds.
    let out = Command::new("/bin/bash")
        .args(["-c", &script])
        .output()
        .expect("spawn");
    assert!(stdout(&out).contains("UNIX-CONNECTED"), "{}", stdout(&out));
    drop(listener);
}
