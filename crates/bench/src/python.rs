//! Locating the Python peer interpreter and running the peer scripts in `python/peers/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The workspace root (this crate lives in `<root>/crates/bench`).
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// A Python interpreter that can import jupyter_client.
#[derive(Debug, Clone)]
pub struct Python {
    path: PathBuf,
    /// The jupyter_client version it imports.
    pub jupyter_client: String,
}

impl Python {
    /// `explicit`, else `<workspace>/.venv/bin/python`; checked to exist and to import
    /// jupyter_client. Failing either is an error: the comparison is the point of the benchmark.
    pub fn locate(explicit: Option<&Path>) -> Result<Python> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => workspace_root().join(".venv/bin/python"),
        };
        if !path.exists() {
            bail!(
                "Python peer interpreter {} does not exist; create the venv with scripts/setup-venv \
                 or pass --python PATH",
                path.display()
            );
        }
        let out = Command::new(&path)
            .args([
                "-c",
                "import jupyter_client, zmq; print(jupyter_client.__version__)",
            ])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", path.display()))?;
        if !out.status.success() {
            bail!(
                "{} cannot import jupyter_client ({}): {}; run scripts/setup-venv or pass --python PATH",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let jupyter_client = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok(Python {
            path,
            jupyter_client,
        })
    }

    /// The interpreter's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `python/peers/<script> args…` to completion and returns its stdout's JSON lines.
    pub fn run_peer(&self, script: &str, args: &[String]) -> Result<Vec<Value>> {
        let script_path = workspace_root().join("python/peers").join(script);
        let out = Command::new(&self.path)
            .arg(&script_path)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", script_path.display()))?;
        if !out.status.success() {
            bail!("peer {} failed: {}", script_path.display(), out.status);
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).with_context(|| format!("peer {script} printed {l:?}"))
            })
            .collect()
    }
}
