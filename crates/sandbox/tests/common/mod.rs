//! A kernel's files for the sandbox tests: a working and a temporary directory, its own
//! connection file and another kernel's, all in a fresh temporary directory.
#![allow(dead_code, clippy::expect_used)]

use std::path::PathBuf;

use kernelgate_sandbox::policy::KernelPaths;

pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub kernel: KernelPaths,
}

pub fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    for d in ["work", "tmp", "runtime"] {
        std::fs::create_dir(root.join(d)).expect("mkdir");
    }
    std::fs::write(root.join("runtime/own.json"), "own key").expect("write");
    std::fs::write(root.join("runtime/other.json"), "other key").expect("write");
    let kernel = KernelPaths {
        connection_file: root.join("runtime/own.json"),
        work_dir: root.join("work"),
        tmp_dir: root.join("tmp"),
        programs: vec![PathBuf::from("/bin/sh")],
        resource_dir: None,
    };
    Setup {
        _dir: dir,
        root,
        kernel,
    }
}
