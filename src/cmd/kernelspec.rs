//! `kernelgate kernelspec list|install`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use kernelgate_wire::kernelspec::{self, PathEnv};
use serde_json::json;

/// Kernelspec subcommands.
#[derive(Debug, Subcommand)]
pub enum KernelspecCommand {
    /// List the kernelspecs Jupyter tools would find, in priority order.
    List {
        /// Print JSON like `jupyter kernelspec list --json`.
        #[arg(long)]
        json: bool,
    },
    /// Install the `rhai` kernelspec whose argv runs this binary, so Jupyter tools can launch it.
    Install {
        /// Install into the user's Jupyter data directory (the default; accepted as
        /// `jupyter kernelspec install --user` is).
        #[arg(long, conflicts_with = "prefix")]
        user: bool,
        /// Install into PREFIX/share/jupyter/kernels (e.g. a virtual environment).
        #[arg(long)]
        prefix: Option<PathBuf>,
        /// Kernelspec name.
        #[arg(long, default_value = "rhai")]
        name: String,
    },
}

/// The search-path inputs from this process's environment.
pub fn path_env() -> PathEnv {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let env_prefix = var("VIRTUAL_ENV")
        .or_else(|| var("CONDA_PREFIX"))
        .map(PathBuf::from);
    PathEnv {
        jupyter_path: var("JUPYTER_PATH").map(|v| v.to_string_lossy().into_owned()),
        jupyter_data_dir: var("JUPYTER_DATA_DIR").map(PathBuf::from),
        xdg_data_home: var("XDG_DATA_HOME").map(PathBuf::from),
        home: var("HOME").map(PathBuf::from),
        prefer_env: var("JUPYTER_PREFER_ENV_PATH")
            .is_some_and(|v| !matches!(v.to_str(), Some("0" | "false" | "no"))),
        env_prefix,
    }
}

/// Finds installed kernelspecs: name -> resource directory, first in search order wins.
pub fn find_kernelspecs(env: &PathEnv) -> std::collections::BTreeMap<String, PathBuf> {
    find_kernelspecs_in(&kernelspec::search_dirs(env))
}

/// Finds the kernelspecs in `dirs` (kernels directories, in priority order).
pub fn find_kernelspecs_in(dirs: &[PathBuf]) -> std::collections::BTreeMap<String, PathBuf> {
    let listings: Vec<(PathBuf, Vec<String>)> = dirs
        .iter()
        .map(|dir| {
            let names = std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .filter(|e| e.path().join("kernel.json").is_file())
                        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (dir.clone(), names)
        })
        .collect();
    kernelspec::resolve(&listings)
}

pub fn run(command: KernelspecCommand) -> anyhow::Result<ExitCode> {
    match command {
        KernelspecCommand::List { json } => {
            let specs = find_kernelspecs(&path_env());
            if json {
                let mut out = serde_json::Map::new();
                for (name, dir) in &specs {
                    let spec = std::fs::read(dir.join("kernel.json"))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                    out.insert(name.clone(), json!({ "resource_dir": dir, "spec": spec }));
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "kernelspecs": out }))?
                );
            } else {
                println!("Available kernels:");
                let width = specs.keys().map(String::len).max().unwrap_or(0);
                for (name, dir) in &specs {
                    println!("  {name:width$}    {}", dir.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KernelspecCommand::Install {
            user: _,
            prefix,
            name,
        } => {
            anyhow::ensure!(
                kernelspec::is_valid_name(&name),
                "invalid kernelspec name {name:?}"
            );
            let base = match prefix {
                Some(p) => p.join("share/jupyter/kernels"),
                None => path_env()
                    .user_data_dir()
                    .context("cannot find the user's Jupyter data directory (HOME unset?)")?
                    .join("kernels"),
            };
            let dir = base.join(&name);
            install(&dir)?;
            println!("Installed kernelspec {name} in {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn install(dir: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the kernelgate binary")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The lean `kernelgate-kernel` next to this binary if it is there, else `kernelgate kernel`:
    // the same command the host runs.
    let argv = kernelgate_host::provision::builtin_spec(&exe).spec.argv;
    let spec = json!({
        "argv": argv,
        "display_name": "Rhai (kernelgate)",
        "language": "rhai",
        "interrupt_mode": "message",
        "kernel_protocol_version": kernelgate_wire::PROTOCOL_VERSION,
        "metadata": { "kernelgate": { "builtin": true }, "supported_encryption": ["curve"] },
    });
    let path = dir.join("kernel.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
