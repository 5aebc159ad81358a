//! `kernelgate serve`: the multi-kernel host (Jupyter Server compatible REST + WebSocket API).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use kernelgate_host::auth::{OriginPolicy, Token};
use kernelgate_host::lifecycle::CullPolicy;
use kernelgate_host::{Host, HostConfig};
use kernelgate_zmq::files;

/// Flags of `kernelgate serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback without TLS is refused unless --insecure-http.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Port (0 picks a free one and prints it).
    #[arg(long, default_value_t = 8889)]
    port: u16,
    /// File holding the token (owner-only). Default: 256 fresh random bits, written owner-only
    /// to the runtime directory. The token itself is never taken from argv or the environment.
    #[arg(long, env = "KERNELGATE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "keyfile")]
    certfile: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "certfile")]
    keyfile: Option<PathBuf>,
    /// Listen beyond loopback without TLS (the token then crosses the network in clear).
    #[arg(long)]
    insecure_http: bool,
    /// Encrypt the traffic between the host and every kernel whose kernelspec supports it
    /// (`metadata.supported_encryption` lists `curve`: the built-in kernel and ipykernel) with
    /// CurveZMQ, so that no other local user can read a kernel's output off its ports.
    #[arg(long)]
    curve: bool,
    /// Relay kernels through libzmq sockets instead of the host's own ZMTP links (which skip
    /// libzmq's I/O thread, the larger part of the relay's latency). For comparison, or for a
    /// kernel whose ZeroMQ speaks only ZMTP 1 or 2 (libzmq before 4.0).
    #[arg(long)]
    no_zmtp_links: bool,
    /// Kernelspec directories (each holding NAME/kernel.json); replaces the Jupyter path search.
    #[arg(long, value_delimiter = ',')]
    kernel_dirs: Vec<PathBuf>,
    /// Kernelspec started when a request names none.
    #[arg(long, default_value = kernelgate_host::BUILTIN_KERNEL)]
    default_kernel: String,
    /// Origins (scheme://host:port) allowed to use the API from a browser besides this host's
    /// own; `*` allows any (not recommended).
    #[arg(long = "allow-origin")]
    allow_origins: Vec<String>,
    /// State file for crash recovery. Default: kernelgate-host-PORT.json in the runtime dir.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Do not re-adopt kernels left by a previous run.
    #[arg(long)]
    no_recover: bool,
    /// Kernels launched at once (default: 4 per core); more wait their turn, so that starting
    /// hundreds together does not make every one of them slow.
    #[arg(long, value_name = "N")]
    max_starting: Option<usize>,
    /// HTTP connections open at once, WebSockets included; past it new connections are closed
    /// at once (each holds a file descriptor, which kernels need too).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections: usize,
    /// Seconds a client has to send a request's headers before its connection is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    header_timeout: f64,
    /// MiB of output a kernel's slowest WebSocket client may fall behind by; past it that
    /// client misses the oldest output instead of the host holding it (the newest message is
    /// always delivered, however large).
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    iopub_buffer_mib: usize,
    /// Restarts in a row before a dying kernel is declared dead (0 disables auto-restart).
    #[arg(long, default_value_t = 5)]
    restart_limit: u32,
    /// Heartbeat interval in seconds (a dead process is noticed at once by its exit; the
    /// heartbeat only catches hangs, so it can be slow: with 1,000 kernels every ping counts).
    #[arg(long, default_value_t = 30.0)]
    hb_interval: f64,
    /// Missed heartbeats in a row before a kernel counts as hung and is restarted
    /// (default: a minute of silence).
    #[arg(long, default_value_t = 2)]
    hb_misses: u32,
    /// Seconds between shutdown_request and SIGTERM.
    #[arg(long, default_value_t = 3.0)]
    shutdown_wait: f64,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 2.0)]
    term_wait: f64,
    /// Shut down kernels idle this many seconds (0: never, the default).
    #[arg(long, default_value_t = 0)]
    cull_idle_timeout: u64,
    /// Seconds between culling checks.
    #[arg(long, default_value_t = 300)]
    cull_interval: u64,
    /// Cull busy kernels too.
    #[arg(long)]
    cull_busy: bool,
    /// Cull kernels with open connections too.
    #[arg(long)]
    cull_connected: bool,
    #[command(flatten)]
    sandbox: super::sandbox::SandboxArgs,
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::from_secs(1))
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let tls = args.certfile.is_some();
    if !args.ip.is_loopback() && !tls {
        eprintln!("kernelgate: WARNING: listening on {} WITHOUT TLS: the token and all code travel in clear text.", args.ip);
        if !args.insecure_http {
            bail!("refusing to listen beyond loopback without TLS; give --certfile/--keyfile or --insecure-http");
        }
    }
    match kernelgate_host::raise_open_files_limit() {
        Ok(n) if n < 4096 => eprintln!(
            "kernelgate: warning: only {n} open files allowed (ulimit -n); \
             fewer kernels and connections fit"
        ),
        Ok(_) => {}
        Err(e) => eprintln!("kernelgate: warning: cannot read the open files limit: {e}"),
    }
    let rt = kernelgate_host::tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime_dir = files::runtime_dir();
    files::ensure_private_dir(&runtime_dir)
        .with_context(|| format!("runtime directory {}", runtime_dir.display()))?;
    let exe = std::env::current_exe().context("locating the kernelgate binary")?;
    let mut config = HostConfig::new(&exe, runtime_dir.clone());
    let dirs = if args.kernel_dirs.is_empty() {
        super::kernelspec::find_kernelspecs(&super::kernelspec::path_env())
    } else {
        super::kernelspec::find_kernelspecs_in(&args.kernel_dirs)
    };
    config.add_specs(&dirs);
    if !config.specs.contains_key(&args.default_kernel) {
        bail!(
            "default kernel {:?} is not a known kernelspec",
            args.default_kernel
        );
    }
    config.default_kernel = args.default_kernel.clone();
    config.provision.curve = args.curve;
    config.zmtp_links = !args.no_zmtp_links;
    if args.curve {
        let plain: Vec<&String> = config
            .specs
            .iter()
            .filter(|(_, s)| !kernelgate_host::provision::supports_curve(&s.spec))
            .map(|(name, _)| name)
            .collect();
        if !plain.is_empty() {
            eprintln!("kernelgate: warning: --curve: these kernelspecs do not support CURVE and run unencrypted: {plain:?}");
        }
    }
    config.origins = OriginPolicy {
        allow: args.allow_origins.clone(),
    };
    if let Some(n) = args.max_starting {
        config.max_starting = n.max(1);
    }
    config.max_connections = args.max_connections.max(1);
    config.header_read_timeout = secs(args.header_timeout).max(Duration::from_millis(100));
    config.iopub_buffer = args.iopub_buffer_mib.max(1).saturating_mul(1 << 20);
    config.restart.enabled = args.restart_limit > 0;
    config.restart.limit = args.restart_limit;
    config.heartbeat.interval = secs(args.hb_interval).max(Duration::from_millis(100));
    config.heartbeat.max_misses = args.hb_misses.max(1);
    config.shutdown.request_wait = secs(args.shutdown_wait);
    config.shutdown.term_wait = secs(args.term_wait);
    config.cull = CullPolicy {
        idle_timeout: (args.cull_idle_timeout > 0)
            .then(|| Duration::from_secs(args.cull_idle_timeout)),
        interval: Duration::from_secs(args.cull_interval.max(1)),
        cull_busy: args.cull_busy,
        cull_connected: args.cull_connected,
    };

    let listener = std::net::TcpListener::bind((args.ip, args.port))
        .with_context(|| format!("binding {}:{}", args.ip, args.port))?;
    let port = listener.local_addr()?.port();
    config.state_file = Some(
        args.state_file
            .clone()
            .unwrap_or_else(|| runtime_dir.join(format!("kernelgate-host-{port}.json"))),
    );

    // One host at a time per port and per state file: a second host on the same port (another
    // address of it) would overwrite this one's token file and adopt its kernels as its own.
    let _locks = lock_host_files(&runtime_dir, port, config.state_file.as_deref())?;
    let swept = files::remove_stale_temp_files(&runtime_dir);
    if swept > 0 {
        eprintln!("kernelgate: removed {swept} temporary file(s) a crashed writer left in the runtime directory");
    }

    let (token, token_file) = match &args.token_file {
        Some(p) => (Token::load(p)?, None),
        None => {
            let t = Token::generate()?;
            let path = runtime_dir.join(format!("kernelgate-serve-{port}.token"));
            files::write_private_file_atomic(&path, format!("{}\n", t.expose()).as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            (t, Some(files::RemoveOnDrop::new(path)))
        }
    };

    let mut secrets = vec![runtime_dir.clone()];
    secrets.extend(config.state_file.clone());
    secrets.extend(args.token_file.clone());
    // The TLS private key: a kernel holding it could pose as this host.
    secrets.extend(args.keyfile.clone());
    config.provision.hook = args.sandbox.hook(secrets, vec![port])?;

    let host = Host::new(config, token.clone());
    if !args.no_recover {
        let (adopted, cleaned) = host.recover().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot recover from the state file: {e}; the kernels it names would be lost \
                 track of: move it away (after stopping them), or start with --no-recover"
            )
        })?;
        if adopted + cleaned > 0 {
            eprintln!("kernelgate: recovered {adopted} kernel(s) from the previous run, cleaned up {cleaned}");
        }
    }
    let names: Vec<&String> = host.shared.config.specs.keys().collect();
    eprintln!(
        "kernelgate: kernelspecs: {names:?} (default {})",
        host.shared.config.default_kernel
    );
    if let Some(f) = token_file.as_ref().and_then(|f| f.path()) {
        eprintln!("kernelgate: token stored owner-only in {}", f.display());
    }
    let scheme = if args.certfile.is_some() {
        "https"
    } else {
        "http"
    };
    let shown_ip = if args.ip.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        args.ip.to_string()
    };
    eprintln!(
        "kernelgate: serving on {scheme}://{}:{port}/ (Ctrl-C or SIGTERM to stop)",
        shown_ip
    );
    // The one place the token is shown, like Jupyter's startup URL.
    println!("{scheme}://{shown_ip}:{port}/?token={}", token.expose());

    let shutdown = async {
        let mut term = match kernelgate_host::tokio::signal::unix::signal(
            kernelgate_host::tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(t) => t,
            Err(_) => return std::future::pending().await,
        };
        kernelgate_host::tokio::select! {
            _ = kernelgate_host::tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("kernelgate: stopping: shutting down every kernel");
    };
    match (&args.certfile, &args.keyfile) {
        (Some(cert), Some(key)) => host.serve_tls(listener, cert, key, shutdown).await?,
        _ => {
            listener.set_nonblocking(true)?;
            let listener = kernelgate_host::tokio::net::TcpListener::from_std(listener)?;
            host.serve(listener, shutdown).await?
        }
    }
    drop(token_file);
    eprintln!("kernelgate: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Locks the names this host's files share with any other host on `port`, and its state file.
fn lock_host_files(
    runtime_dir: &std::path::Path,
    port: u16,
    state_file: Option<&std::path::Path>,
) -> anyhow::Result<Vec<files::LockFile>> {
    let mut paths = vec![runtime_dir.join(format!("kernelgate-serve-{port}.lock"))];
    if let Some(state) = state_file {
        let mut name = state.as_os_str().to_owned();
        name.push(".lock");
        paths.push(name.into());
    }
    paths
        .iter()
        .map(|path| {
            files::LockFile::acquire(path).map_err(|e| match e {
                kernelgate_zmq::Error::Locked { .. } => anyhow::anyhow!(
                    "another kernelgate host of yours is running with port {port} or the same \
                     state file ({} is locked): the two would share a token file and adopt \
                     each other's kernels; stop it, or give this one another --port or \
                     --state-file",
                    path.display()
                ),
                other => anyhow::anyhow!("{other}"),
            })
        })
        .collect()
}
