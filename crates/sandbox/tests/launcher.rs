//! The launcher binary the host starts sandboxed kernels through: the command it runs is
//! confined by the plan it was given, and without a plan nothing runs at all.
#![allow(clippy::expect_used)]

use std::process::Command;

mod common;

use kernelgate_sandbox::launcher::{wrap, LaunchPlan};
use kernelgate_sandbox::policy::{plan, Policy};
use kernelgate_sandbox::Support;

const LAUNCHER: &str = env!("CARGO_BIN_EXE_kernelgate-sandbox-exec");

#[test]
fn launched_command_is_confined_to_its_plan() {
    let support = Support::probe();
    assert!(
        support.abi >= 1,
        "this test needs Landlock; this Linux has none"
    );
    let s = common::setup();
    let (root, kernel) = (&s.root, &s.kernel);
    let plan = LaunchPlan {
        abi: support.abi,
        plan: plan(&Policy::default(), None, kernel, &[]),
    };
    let script = format!(
        "cat {own}; echo; cat {other} || echo refused; env | grep -c KERNELGATE_SANDBOX_PLAN",
        own = kernel.connection_file.display(),
        other = root.join("runtime/other.json").display(),
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &script]).current_dir(&kernel.work_dir);
    let out = wrap(&cmd, LAUNCHER.as_ref(), &plan)
        .expect("wrap")
        .output()
        .expect("spawning the launcher");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("own key\n"), "{text}");
    assert!(
        text.contains("refused"),
        "read another kernel's file: {text}"
    );
    assert!(!text.contains("other key"), "{text}");
    // The plan does not reach the kernel's environment.
    assert!(text.trim_end().ends_with('0'), "{text}");

    // Without a plan the launcher refuses to run anything.
    let out = Command::new(LAUNCHER)
        .args(["--", "/bin/echo", "ran"])
        .env_remove("KERNELGATE_SANDBOX_PLAN")
        .output()
        .expect("spawning the launcher");
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ran"));
}
