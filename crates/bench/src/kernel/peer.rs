//! The Python side of `kernel`: `python/peers/bench_kernel.py` measures jupyter_client against
//! ipykernel and against our kernel. It takes turns with our client against its ipykernel (a
//! `{"turn": K, ...}` line after each of its blocks, answered with a line when our block is
//! done), then hands that ipykernel over for our remaining cases and shuts it down after.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::{connected, our_client_cases, our_execute, stats, with_refusals, Args, Case, BLOCKS};
use crate::python::{workspace_root, Python};

/// The peer's cases and our client's against ipykernel. `file` is our kernel's connection file,
/// `block` the size of one turn.
pub(super) fn cases(
    args: &Args,
    python: &Python,
    dir: &Path,
    file: &Path,
    execute: &Value,
    block: &Args,
) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    let mut peer = Command::new(python.path())
        .arg(workspace_root().join("python/peers/bench_kernel.py"))
        .arg("--ours")
        .arg(file)
        .args([
            "--rounds",
            &args.rounds.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .args(["--starts", &args.starts.clamp(1, 3).to_string()])
        .args(["--blocks", &BLOCKS.to_string()])
        .env("JUPYTER_RUNTIME_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting python/peers/bench_kernel.py")?;
    let stdout = peer.stdout.take().ok_or_else(|| anyhow!("peer stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut peer_stdin = peer.stdin.take();
    let mut ipykernel: Option<PathBuf> = None;
    // Our client's execute round trips to ipykernel, block by block in the peer's turns.
    let mut ipy_exec: Result<Vec<f64>> = Ok(Vec::new());
    for line in lines.by_ref() {
        let line = line?;
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("peer printed {line:?}"))?;
        if v.get("turn").is_some() {
            if let Ok(samples) = &mut ipy_exec {
                match our_turn(&v, execute, block) {
                    Ok(more) => samples.extend(more),
                    Err(e) => ipy_exec = Err(e),
                }
            }
            // Whatever happened, the peer goes on (and shuts its kernel down in the end).
            if let Some(stdin) = peer_stdin.as_mut() {
                writeln!(stdin, "go")?;
            }
            continue;
        }
        if let Some(f) = v.get("ipykernel").and_then(Value::as_str) {
            ipykernel = Some(f.into());
            break;
        }
        cases.push(Case::from_peer(&v)?);
    }
    let Some(ipy_file) = ipykernel else {
        let status = peer.wait()?;
        bail!("the Python peer ended ({status}) before handing over its ipykernel");
    };
    let ipy_result = ipy_exec.and_then(|samples| {
        let mut out = vec![Case::latency("execute/ours->ipykernel", stats(samples))];
        out.extend(our_client_cases(&ipy_file, "ipykernel", args)?);
        Ok(out)
    });
    if let Some(mut stdin) = peer_stdin.take() {
        let _ = writeln!(stdin, "done");
    }
    for line in lines {
        let _ = line?;
    }
    let status = peer.wait()?;
    cases.extend(ipy_result.context("our client -> ipykernel")?);
    if !status.success() {
        bail!("python/peers/bench_kernel.py failed: {status}");
    }
    Ok(cases)
}

/// Our turn between two of the peer's blocks (its line `{"turn": K, "ipykernel": FILE}`): a
/// block of execute round trips from a new client of that ipykernel.
fn our_turn(line: &Value, execute: &Value, block: &Args) -> Result<Vec<f64>> {
    let file = line
        .get("ipykernel")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the peer's turn names no ipykernel: {line}"))?;
    let mut c = connected(Path::new(file))?;
    let samples = our_execute(&mut c, execute, block);
    with_refusals(&c, samples)
}
