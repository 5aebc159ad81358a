//! Kernelspecs (`kernel.json`) and the Jupyter search path, as pure functions.
//!
//! Reading directories is left to the caller: [`search_dirs`] says where to look, [`resolve`]
//! picks the winning spec per name from what the caller listed, [`KernelSpec::from_json`] parses.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{err, Error, ErrorKind, Result};

/// How a kernel wants to be interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterruptMode {
    /// SIGINT to the kernel process (jupyter's default).
    #[default]
    Signal,
    /// An `interrupt_request` on the control channel.
    Message,
}

/// A parsed `kernel.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelSpec {
    /// Command line; `{connection_file}`, `{resource_dir}` and `{prefix}` are substituted.
    pub argv: Vec<String>,
    /// Name shown to users.
    pub display_name: String,
    /// Language of the kernel.
    #[serde(default)]
    pub language: String,
    /// Extra environment variables for the kernel process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// How to interrupt it.
    #[serde(default)]
    pub interrupt_mode: InterruptMode,
    /// Free-form metadata (e.g. `supported_encryption`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Protocol version the kernel speaks, if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_protocol_version: Option<String>,
    /// Fields not named above.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl KernelSpec {
    /// Parses and validates `kernel.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<KernelSpec> {
        let spec: KernelSpec = serde_json::from_slice(bytes)
            .map_err(|e| Error::new(ErrorKind::InvalidKernelspec, format!("kernel.json: {e}")))?;
        if spec.argv.is_empty() || spec.argv.first().is_some_and(|a| a.is_empty()) {
            return err(ErrorKind::InvalidKernelspec, "kernel.json: argv is empty");
        }
        Ok(spec)
    }

    /// Whether the spec declares support for CurveZMQ (`metadata.supported_encryption`).
    pub fn supports_curve(&self) -> bool {
        self.metadata
            .get("supported_encryption")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some("curve")))
    }

    /// The command line with placeholders substituted. Unknown `{names}` are left as they are,
    /// as jupyter_client does.
    pub fn command(&self, vars: &ArgvVars<'_>) -> Vec<String> {
        self.argv.iter().map(|a| substitute(a, vars)).collect()
    }
}

/// Values substituted into a kernelspec's argv.
#[derive(Debug, Clone, Copy)]
pub struct ArgvVars<'a> {
    /// Path of the connection file.
    pub connection_file: &'a str,
    /// Directory holding the kernelspec.
    pub resource_dir: &'a str,
    /// The Python prefix (sys.prefix); for us, the installation prefix.
    pub prefix: &'a str,
}

fn substitute(arg: &str, vars: &ArgvVars<'_>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(open) = rest.find('{') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let close = after.find('}');
        let name = close.and_then(|c| after.get(1..c));
        let value = match name {
            Some("connection_file") => Some(vars.connection_file),
            Some("resource_dir") => Some(vars.resource_dir),
            Some("prefix") => Some(vars.prefix),
            _ => None,
        };
        match (value, close) {
            (Some(v), Some(c)) => {
                out.push_str(v);
                rest = after.get(c + 1..).unwrap_or("");
            }
            _ => {
                out.push('{');
                rest = after.get(1..).unwrap_or("");
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether `name` is a valid kernelspec name (`^[a-z0-9._-]+$`, case-insensitive as jupyter).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The environment the search path depends on, given explicitly so the rules stay pure.
#[derive(Debug, Clone, Default)]
pub struct PathEnv {
    /// `$JUPYTER_PATH` (colon-separated).
    pub jupyter_path: Option<String>,
    /// `$JUPYTER_DATA_DIR`.
    pub jupyter_data_dir: Option<PathBuf>,
    /// `$XDG_DATA_HOME`.
    pub xdg_data_home: Option<PathBuf>,
    /// The user's home directory.
    pub home: Option<PathBuf>,
    /// The environment prefix (a virtualenv's or conda env's `sys.prefix`), if any.
    pub env_prefix: Option<PathBuf>,
    /// Whether the environment prefix comes before the user directory
    /// (`$JUPYTER_PREFER_ENV_PATH`, or jupyter_core's default inside a virtual environment).
    pub prefer_env: bool,
}

impl PathEnv {
    /// The user data directory: `$JUPYTER_DATA_DIR`, else `$XDG_DATA_HOME/jupyter`, else
    /// `~/.local/share/jupyter` (Linux rules).
    pub fn user_data_dir(&self) -> Option<PathBuf> {
        if let Some(d) = &self.jupyter_data_dir {
            return Some(d.clone());
        }
        if let Some(x) = self
            .xdg_data_home
            .as_ref()
            .filter(|x| !x.as_os_str().is_empty())
        {
            return Some(x.join("jupyter"));
        }
        self.home.as_ref().map(|h| h.join(".local/share/jupyter"))
    }
}

/// Jupyter's data path in priority order: `$JUPYTER_PATH`, then the user data dir and the
/// environment prefix (in the order `prefer_env` says), then the system directories.
pub fn jupyter_path(env: &PathEnv) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(p) = &env.jupyter_path {
        dirs.extend(p.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    let user = env.user_data_dir();
    let prefix = env.env_prefix.as_ref().map(|p| p.join("share/jupyter"));
    let (first, second) = if env.prefer_env {
        (prefix, user)
    } else {
        (user, prefix)
    };
    dirs.extend(first);
    dirs.extend(second);
    dirs.push(PathBuf::from("/usr/local/share/jupyter"));
    dirs.push(PathBuf::from("/usr/share/jupyter"));
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The directories holding kernelspecs (`<data dir>/kernels`), in priority order.
pub fn search_dirs(env: &PathEnv) -> Vec<PathBuf> {
    jupyter_path(env)
        .into_iter()
        .map(|d| d.join("kernels"))
        .collect()
}

/// Picks, for each valid kernel name, the first directory (in priority order) that has it.
/// `listings` holds, per search directory, the names of the subdirectories that contain a
/// `kernel.json`. Names are compared in lower case, as jupyter_client does.
pub fn resolve(listings: &[(PathBuf, Vec<String>)]) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for (dir, names) in listings {
        for name in names {
            if is_valid_name(name) {
                found
                    .entry(name.to_lowercase())
                    .or_insert_with(|| dir.join(name));
            }
        }
    }
    found
}
