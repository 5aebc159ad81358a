//! ZAP authenticator (ZeroMQ RFC 27): answers libzmq's authentication requests for all
//! sockets of one context, from a [`Policy`] that the host can change at run time.
//!
//! Without a ZAP handler libzmq admits ANY CURVE client: start the authenticator before
//! binding CURVE servers, and consider [`Socket::set_zap_enforce_domain`] so that a
//! missing handler fails closed.
//!
//! [`Socket::set_zap_enforce_domain`]: crate::Socket::set_zap_enforce_domain

mod certs;
mod policy;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use certs::{
    create_certificates, load_certificate, load_public_keys_from_dir, write_certificates,
};
pub use policy::{DomainPolicy, Policy};

use crate::context::Context;
use crate::curve::PublicKey;
use crate::error::{Error, Result};
use crate::poll::{poll, PollEvents, PollItem};
use crate::socket::{RecvLimits, Socket, SocketConfig, SocketType};

/// The endpoint libzmq sends ZAP requests to.
pub const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// How often the thread re-checks its stop flag if the control message is lost.
const STOP_CHECK: Duration = Duration::from_millis(500);

/// Counters kept by the authenticator.
#[derive(Debug, Default)]
struct Stats {
    allowed: AtomicU64,
    denied: AtomicU64,
}

/// Starts ZAP handlers.
#[derive(Debug)]
pub struct ZapAuthenticator;

impl ZapAuthenticator {
    /// Binds the ZAP endpoint on `ctx` and answers requests on a background thread, with
    /// an empty (deny-all) policy. Fails with `EADDRINUSE` if a handler is already bound
    /// on this context.
    pub fn start(ctx: &Context) -> Result<ZapHandle> {
        Self::start_with(ctx, Policy::new())
    }

    /// Like [`ZapAuthenticator::start`], with an initial policy.
    pub fn start_with(ctx: &Context, policy: Policy) -> Result<ZapHandle> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let config = SocketConfig {
            linger: Some(Duration::ZERO),
            max_msg_size: Some(64 * 1024),
            recv_limits: RecvLimits {
                max_frames: 16,
                max_total_bytes: 64 * 1024,
            },
            ..SocketConfig::default()
        };
        // Bound here, before returning, so sockets created after start() are covered.
        let zap = ctx.socket_with(SocketType::Rep, &config)?;
        zap.bind(ZAP_ENDPOINT)?;
        let endpoint = format!(
            "inproc://kernelgate-zap-control-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let control_rx = ctx.socket_with(SocketType::Pair, &config)?;
        control_rx.bind(&endpoint)?;
        let control_tx = ctx.socket_with(SocketType::Pair, &config)?;
        control_tx.connect(&endpoint)?;

        let policy = Arc::new(RwLock::new(policy));
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            zap,
            control: control_rx,
            policy: Arc::clone(&policy),
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
            log: DenialLog::default(),
        };
        let thread = std::thread::Builder::new()
            .name("kernelgate-zap".into())
            .spawn(move || worker.run())
            .map_err(Error::Thread)?;
        Ok(ZapHandle {
            policy,
            stats,
            stop,
            control: Mutex::new(control_tx),
            thread: Some(thread),
        })
    }
}

/// Controls a running authenticator; stops it (and joins its thread) on drop.
/// After that, the context has no ZAP handler again.
#[derive(Debug)]
pub struct ZapHandle {
    policy: Arc<RwLock<Policy>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    control: Mutex<Socket>,
    thread: Option<JoinHandle<()>>,
}

impl ZapHandle {
    /// Changes the policy; takes effect for the next handshake.
    pub fn update<R>(&self, f: impl FnOnce(&mut Policy) -> R) -> R {
        // A poisoned lock only means a panic elsewhere mid-update; the maps are still valid.
        f(&mut self.policy.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// A copy of the current policy.
    pub fn policy(&self) -> Policy {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds or replaces a domain.
    pub fn set_domain(&self, domain: impl Into<String>, rules: DomainPolicy) {
        self.update(|p| p.set_domain(domain, rules));
    }

    /// Removes a domain (its clients are refused from then on).
    pub fn remove_domain(&self, domain: &str) {
        self.update(|p| p.remove_domain(domain));
    }

    /// Admits a CURVE client key to a domain (creating the domain if needed).
    pub fn allow_curve_client(&self, domain: &str, key: PublicKey) {
        tracing::info!(domain, client = %key, "ZAP: allowing CURVE client");
        self.update(|p| p.domain_mut(domain).curve_clients.insert(key));
    }

    /// Revokes a CURVE client key; returns whether it was present. Existing
    /// connections are not cut; new handshakes are refused.
    pub fn remove_curve_client(&self, domain: &str, key: &PublicKey) -> bool {
        self.update(|p| p.domain_mut(domain).curve_clients.remove(key))
    }

    /// Refuses connections from an IP address to a domain.
    pub fn deny_address(&self, domain: &str, ip: std::net::IpAddr) {
        self.update(|p| p.domain_mut(domain).deny_addresses.insert(ip));
    }

    /// Handshakes refused so far.
    pub fn denied(&self) -> u64 {
        self.stats.denied.load(Ordering::Relaxed)
    }

    /// Handshakes admitted so far.
    pub fn allowed(&self) -> u64 {
        self.stats.allowed.load(Ordering::Relaxed)
    }

    /// Stops the handler and waits for its thread.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for ZapHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(control) = self.control.lock() {
            // If this is lost, the thread still sees `stop` within STOP_CHECK.
            let _ = control.send(b"STOP", false, true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Rate-limits denial warnings: at most `BURST` per window, then a summary.
#[derive(Debug)]
struct DenialLog {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Default for DenialLog {
    fn default() -> Self {
        Self {
            window_start: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }
}

impl DenialLog {
    const BURST: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(10);

    fn should_log(&mut self) -> bool {
        if self.window_start.elapsed() >= Self::WINDOW {
            if self.suppressed > 0 {
                tracing::warn!(count = self.suppressed, "ZAP: further denials not logged");
            }
            *self = Self::default();
        }
        if self.logged < Self::BURST {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

struct Worker {
    zap: Socket,
    control: Socket,
    policy: Arc<RwLock<Policy>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    log: DenialLog,
}

impl Worker {
    fn run(mut self) {
        tracing::debug!("ZAP authenticator started");
        while !self.stop.load(Ordering::SeqCst) {
            let mut items = [
                PollItem::new(&self.zap, PollEvents::READABLE),
                PollItem::new(&self.control, PollEvents::READABLE),
            ];
            match poll(&mut items, Some(STOP_CHECK)) {
                Ok(_) => {}
                Err(e) if e.is_terminated() => break,
                Err(e) if e.errno() == Some(libc::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "ZAP poll failed");
                    std::thread::sleep(Duration::from_millis(50)); // no hot loop
                    continue;
                }
            }
            let [zap_item, control_item] = items;
            if control_item.is_readable() {
                break;
            }
            if zap_item.is_readable() {
                self.handle_one();
            }
        }
        tracing::debug!("ZAP authenticator stopped");
    }

    fn handle_one(&mut self) {
        let frames = match self.zap.recv_multipart(true) {
            Ok(f) => f,
            Err(e) if e.is_again() => return,
            Err(e) => {
                // REP has consumed a request and must answer before the next one.
                tracing::error!(error = %e, "ZAP: unreadable request");
                self.reply(b"", b"500", "Internal error", "");
                return;
            }
        };
        // RFC 27: version, request_id, domain, address, identity, mechanism, credentials...
        let [version, request_id, domain, address, _identity, mechanism, credentials @ ..] =
            frames.as_slice()
        else {
            tracing::error!(frames = frames.len(), "ZAP: malformed request");
            self.reply(b"", b"500", "Malformed request", "");
            return;
        };
        if version.as_slice() != b"1.0" {
            self.reply(request_id, b"500", "Unsupported ZAP version", "");
            return;
        }
        let req = policy::Request {
            domain,
            address,
            mechanism,
            credentials,
        };
        let decision = self
            .policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .decide(&req);
        let domain = String::from_utf8_lossy(domain);
        let address = String::from_utf8_lossy(address);
        let mechanism = String::from_utf8_lossy(mechanism);
        if decision.allowed {
            self.stats.allowed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%domain, %address, %mechanism, user = %decision.user_id, "ZAP: allowed");
            self.reply(request_id, b"200", "OK", &decision.user_id);
        } else {
            self.stats.denied.fetch_add(1, Ordering::Relaxed);
            if self.log.should_log() {
                // Only public material: the client's public key, never a secret.
                let client = match credentials {
                    [k] if mechanism == "CURVE" => {
                        PublicKey::parse(k).map(|k| k.to_z85()).unwrap_or_default()
                    }
                    _ => String::new(),
                };
                tracing::warn!(%domain, %address, %mechanism, %client, reason = decision.reason,
                    "ZAP: denied");
            }
            self.reply(request_id, b"400", decision.reason, "");
        }
    }

    fn reply(&self, request_id: &[u8], code: &[u8], text: &str, user_id: &str) {
        let frames: [&[u8]; 6] = [
            b"1.0",
            request_id,
            code,
            text.as_bytes(),
            user_id.as_bytes(),
            b"",
        ];
        if let Err(e) = self.zap.send_multipart(frames, false) {
            tracing::error!(error = %e, "ZAP: could not send reply");
        }
    }
}
