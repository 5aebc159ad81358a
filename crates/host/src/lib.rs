//! `kernelgate-host`: the multi-kernel server behind `kernelgate serve`.
//!
//! A Jupyter Server compatible REST + WebSocket API ([`api::router`]) over a registry of
//! kernels, each run by a supervisor task (launch, IOPub, heartbeat, restart policy, shutdown
//! escalation). Pure logic lives in [`lifecycle`], [`auth`], [`state`] and [`wsmsg`]; I/O in
//! [`provision`], [`process`], [`kernel`], [`registry`] and [`api`].
//!
//! ```no_run
//! # async fn f(config: kernelgate_host::HostConfig, token: kernelgate_host::auth::Token) -> std::io::Result<()> {
//! let host = kernelgate_host::Host::new(config, token);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! host.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod fanout;
pub mod kernel;
pub mod lifecycle;
pub mod process;
pub mod provision;
pub mod refusals;
pub mod registry;
pub mod sandbox;
pub mod state;
pub mod wsmsg;
pub mod zmqio;

/// The tokio this crate runs on, for the binary (which has no tokio dependency of its own).
pub use tokio;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::auth::{OriginPolicy, Token};
use crate::lifecycle::{CullPolicy, RestartPolicy};
use crate::provision::{LaunchSpec, ProvisionConfig};
use crate::registry::Registry;
use crate::zmqio::ContextPool;

/// Name of the built-in Rhai kernelspec.
pub const BUILTIN_KERNEL: &str = "rhai";

/// Heartbeat monitoring (hang detection).
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatPolicy {
    /// Ping interval.
    pub interval: Duration,
    /// Unanswered pings in a row before the kernel counts as hung and is restarted.
    pub max_misses: u32,
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        HeartbeatPolicy {
            interval: Duration::from_secs(30),
            max_misses: 2,
        }
    }
}

/// Shutdown escalation waits.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownWaits {
    /// After shutdown_request, before SIGTERM.
    pub request_wait: Duration,
    /// After SIGTERM, before SIGKILL.
    pub term_wait: Duration,
}

impl Default for ShutdownWaits {
    fn default() -> Self {
        ShutdownWaits {
            request_wait: Duration::from_secs(3),
            term_wait: Duration::from_secs(2),
        }
    }
}

/// Everything the host needs to know.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Launch settings.
    pub provision: ProvisionConfig,
    /// Kernelspecs by name (the built-in one included).
    pub specs: BTreeMap<String, LaunchSpec>,
    /// Kernelspec used when a POST names none.
    pub default_kernel: String,
    /// Automatic restarts.
    pub restart: RestartPolicy,
    /// Hang detection.
    pub heartbeat: HeartbeatPolicy,
    /// Shutdown escalation.
    pub shutdown: ShutdownWaits,
    /// Idle culling.
    pub cull: CullPolicy,
    /// How long a started kernel has to answer kernel_info.
    pub ready_timeout: Duration,
    /// How long `POST /api/kernels` waits for the kernel to be ready before answering.
    pub post_wait: Duration,
    /// The state file (None: no crash recovery).
    pub state_file: Option<PathBuf>,
    /// Largest WebSocket message accepted.
    pub ws_max_message: usize,
    /// Origins allowed besides the host's own.
    pub origins: OriginPolicy,
    /// Kernels launched at once; more wait their turn. Starting a thousand kernels at once
    /// on a few cores makes every one of them slow to answer, so none is ready for long.
    pub max_starting: usize,
    /// HTTP connections open at once (WebSockets included); past it new ones are closed.
    pub max_connections: usize,
    /// How long a client has to send a request's headers before its connection is closed.
    pub header_read_timeout: Duration,
    /// How long a WebSocket client may leave a write untaken before it is disconnected.
    pub ws_write_timeout: Duration,
    /// Bytes of IOPub output a kernel's slowest WebSocket client may fall behind by; past it
    /// that client misses the oldest messages (the newest is always kept, however large).
    pub iopub_buffer: usize,
    /// Relay WebSocket and IOPub traffic of kernels without CURVE over the host's own ZMTP
    /// links instead of libzmq sockets (the same wire protocol, without libzmq's I/O thread
    /// between the relay and the kernel). On by default; CURVE kernels always use libzmq.
    pub zmtp_links: bool,
}

impl HostConfig {
    /// Defaults: the built-in kernel run by `exe`, connection files in `runtime_dir`.
    pub fn new(exe: &std::path::Path, runtime_dir: PathBuf) -> HostConfig {
        let builtin = provision::builtin_spec(exe);
        let mut specs = BTreeMap::new();
        specs.insert(BUILTIN_KERNEL.to_owned(), builtin);
        HostConfig {
            provision: ProvisionConfig {
                runtime_dir,
                ip: "127.0.0.1".into(),
                startup_timeout: Duration::from_secs(30),
                prefix: String::new(),
                hook: None,
                env_remove: vec!["KERNELGATE_TOKEN_FILE".into()],
                curve: false,
            },
            specs,
            default_kernel: BUILTIN_KERNEL.into(),
            restart: RestartPolicy::default(),
            heartbeat: HeartbeatPolicy::default(),
            shutdown: ShutdownWaits::default(),
            cull: CullPolicy::default(),
            ready_timeout: Duration::from_secs(60),
            post_wait: Duration::from_secs(60),
            state_file: None,
            ws_write_timeout: Duration::from_secs(30),
            ws_max_message: 64 << 20,
            origins: OriginPolicy::default(),
            max_starting: default_max_starting(),
            max_connections: 4096,
            header_read_timeout: api::listen::HEADER_READ_TIMEOUT,
            iopub_buffer: 32 << 20,
            zmtp_links: true,
        }
    }

    /// Adds kernelspecs found on disk (name -> directory); the built-in name is kept.
    pub fn add_specs(&mut self, dirs: &BTreeMap<String, PathBuf>) {
        for (name, spec) in provision::load_specs(dirs) {
            if name != BUILTIN_KERNEL {
                self.specs.insert(name, spec);
            }
        }
    }
}

/// Four kernels starting per core: enough to keep the cores busy while others wait on I/O.
fn default_max_starting() -> usize {
    std::thread::available_parallelism().map_or(8, |n| n.get().saturating_mul(4))
}

/// State shared by the API handlers and the supervisors.
#[derive(Debug)]
pub struct HostShared {
    /// Configuration.
    pub config: HostConfig,
    /// The token.
    pub token: Token,
    /// The kernels.
    pub registry: Registry,
    /// libzmq contexts.
    pub pool: ContextPool,
    /// Set to true when the host stops: WebSocket connections close.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Permits to launch a kernel, held until it is ready ([`HostConfig::max_starting`]).
    pub starting: Arc<tokio::sync::Semaphore>,
    /// Requests and connections turned away before reaching a route.
    pub refusals: Arc<refusals::HttpRefusals>,
    state_dirty: Notify,
}

impl HostShared {
    /// Asks the state writer to write the table.
    pub fn state_changed(&self) {
        self.state_dirty.notify_one();
    }
}

/// A host: configuration, token, kernels.
#[derive(Debug, Clone)]
pub struct Host {
    /// Shared state.
    pub shared: Arc<HostShared>,
}

impl Host {
    /// A host with no kernels yet. Call inside a tokio runtime (background tasks start).
    pub fn new(config: HostConfig, token: Token) -> Host {
        let starting = Arc::new(tokio::sync::Semaphore::new(config.max_starting.max(1)));
        let shared = Arc::new(HostShared {
            config,
            starting,
            token,
            registry: Registry::default(),
            pool: ContextPool::default(),
            closing: tokio::sync::watch::channel(false).0,
            refusals: Arc::default(),
            state_dirty: Notify::new(),
        });
        tokio::spawn(registry::state_writer(shared.clone()));
        tokio::spawn(registry::cull_loop(shared.clone()));
        tokio::spawn(registry::progress_loop(shared.clone()));
        Host { shared }
    }

    /// Re-adopts kernels from the state file of a previous run, if any: (adopted, cleaned up).
    /// An error when the file exists but cannot be used (refused, or not a state file).
    pub async fn recover(&self) -> Result<(usize, usize), String> {
        let Some(path) = &self.shared.config.state_file else {
            return Ok((0, 0));
        };
        Ok(match state::HostState::load(path)? {
            Some(s) => registry::adopt_previous(&self.shared, s).await,
            None => (0, 0),
        })
    }

    /// The HTTP router (for tests: drive it with `tower::ServiceExt::oneshot`).
    pub fn router(&self) -> axum::Router {
        api::router(self.shared.clone())
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then shuts every kernel down and
    /// removes the state file.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let server = api::listen::server(
            listener.into_std()?,
            self.acceptor(),
            self.shared.config.header_read_timeout,
        )?;
        let app = self.make_service();
        server.handle(self.on_shutdown(shutdown)).serve(app).await?;
        self.shutdown().await;
        Ok(())
    }

    /// Like [`Host::serve`], over TLS (rustls with the ring provider) with a PEM certificate
    /// chain and private key.
    pub async fn serve_tls(
        &self,
        listener: std::net::TcpListener,
        certfile: &std::path::Path,
        keyfile: &std::path::Path,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let server = api::tls_server(
            listener,
            certfile,
            keyfile,
            self.acceptor(),
            self.shared.config.header_read_timeout,
        )
        .await?;
        let app = self.make_service();
        server.handle(self.on_shutdown(shutdown)).serve(app).await?;
        self.shutdown().await;
        Ok(())
    }

    /// The API as a service that knows each connection's peer address.
    fn make_service(
        &self,
    ) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<
        axum::Router,
        std::net::SocketAddr,
    > {
        self.router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>()
    }

    fn acceptor(&self) -> api::listen::CappedAcceptor {
        api::listen::CappedAcceptor::new(
            self.shared.config.max_connections,
            self.shared.refusals.clone(),
        )
    }

    /// A handle that shuts the server down gracefully once `shutdown` resolves.
    fn on_shutdown(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> axum_server::Handle {
        let handle = axum_server::Handle::new();
        let h = handle.clone();
        let closing = self.shared.closing.clone();
        tokio::spawn(async move {
            shutdown.await;
            // WebSocket loops end on this; graceful shutdown then waits for requests in flight.
            closing.send_replace(true);
            h.graceful_shutdown(Some(Duration::from_secs(5)));
        });
        handle
    }

    /// Shuts every kernel down and removes the state file.
    pub async fn shutdown(&self) {
        registry::shutdown_all(&self.shared).await;
        if let Some(p) = &self.shared.config.state_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Most open files the host asks for: each WebSocket connection costs 7 descriptors (its TCP
/// connection, and an eventfd and a TCP connection for each of its three ZeroMQ sockets) and each
/// kernel a few more. Not more: kernels inherit the limit, and a sandboxed kernel's subprocesses,
/// which cannot list `/proc/self/fd`, close descriptors one by one up to it.
const OPEN_FILES_WANTED: u64 = 65_536;

/// Raises the soft limit on open files towards [`OPEN_FILES_WANTED`] (within the hard limit).
/// Returns the limit in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    let want = OPEN_FILES_WANTED.min(hard);
    if soft >= want {
        return Ok(soft);
    }
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).map_err(std::io::Error::from)?;
    Ok(want)
}

#[cfg(test)]
mod tests {
    #[test]
    fn open_files_limit_is_raised_within_the_hard_limit() {
        use nix::sys::resource::{getrlimit, Resource};
        let raised = super::raise_open_files_limit().ok();
        let limits = getrlimit(Resource::RLIMIT_NOFILE).ok();
        assert!(raised.is_some(), "getrlimit failed");
        assert_eq!(raised, limits.map(|(soft, _)| soft));
        let hard = limits.map_or(0, |(_, hard)| hard);
        assert!(raised <= Some(hard));
        assert!(raised >= Some(super::OPEN_FILES_WANTED.min(hard)));
    }
}
