//! The kernel table: id -> managed kernel; starting, finding, removing; re-adoption after a
//! crash; the debounced state-file writer; the culling loop.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kernelgate_wire::Channel;
use serde_json::json;
use tokio::sync::oneshot;

use crate::kernel::{Adopted, Control, ManagedKernel};
use crate::lifecycle::{should_cull, KernelState};
use crate::state::{HostState, KernelRecord};
use crate::{provision, zmqio, HostShared};

/// Why a kernel could not be started.
#[derive(Debug)]
pub enum StartError {
    /// No such kernelspec.
    NoSuchSpec(String),
}

/// All kernels of this host.
#[derive(Debug, Default)]
pub struct Registry {
    kernels: RwLock<HashMap<String, Arc<ManagedKernel>>>,
}

impl Registry {
    /// The kernel with `id`.
    pub fn get(&self, id: &str) -> Option<Arc<ManagedKernel>> {
        self.kernels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Every kernel.
    pub fn list(&self) -> Vec<Arc<ManagedKernel>> {
        let mut v: Vec<_> = self
            .kernels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Number of kernels.
    pub fn len(&self) -> usize {
        self.kernels.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, k: Arc<ManagedKernel>) {
        self.kernels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k.id.clone(), k);
    }

    fn remove(&self, id: &str) -> Option<Arc<ManagedKernel>> {
        self.kernels
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }
}

/// Starts a kernel of kernelspec `name` (default when `None`).
pub fn start_kernel(
    host: &Arc<HostShared>,
    name: Option<&str>,
) -> Result<Arc<ManagedKernel>, StartError> {
    let name = name.unwrap_or(&host.config.default_kernel);
    let spec = host
        .config
        .specs
        .get(name)
        .cloned()
        .ok_or_else(|| StartError::NoSuchSpec(name.to_owned()))?;
    let id = uuid::Uuid::new_v4().to_string();
    let k = ManagedKernel::spawn(host.clone(), id, spec, None);
    host.registry.insert(k.clone());
    tracing::info!(kernel = %k.id, name = %k.name, "starting kernel");
    Ok(k)
}

/// Shuts kernel `id` down and removes it. `false` when there was no such kernel.
pub async fn shutdown_kernel(host: &Arc<HostShared>, id: &str) -> bool {
    let Some(k) = host.registry.get(id) else {
        return false;
    };
    // The supervisor escalates to SIGKILL within its waits; a supervisor still launching reads
    // the command afterwards. Past this bound the kernel is removed anyway (its supervisor
    // still shuts it down when it gets to the command).
    let waits = &host.config.shutdown;
    let bound = host.config.post_wait + waits.request_wait + waits.term_wait;
    let shut = tokio::time::timeout(bound, async {
        let (tx, rx) = oneshot::channel();
        if k.control(Control::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    })
    .await;
    if shut.is_err() {
        tracing::warn!(kernel = %id, "kernel shutdown not confirmed in time; removed anyway");
    }
    host.registry.remove(id);
    host.state_changed();
    if let Some(hook) = &host.config.provision.hook {
        hook.finished(id);
    }
    tracing::info!(kernel = %id, "kernel shut down");
    true
}

/// Shuts every kernel down, in parallel.
pub async fn shutdown_all(host: &Arc<HostShared>) {
    let ids: Vec<String> = host.registry.list().iter().map(|k| k.id.clone()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids {
        let host = host.clone();
        tasks.spawn(async move { shutdown_kernel(&host, &id).await });
    }
    while tasks.join_next().await.is_some() {}
}

/// Re-adopts the kernels of a previous run's state file: each live process whose connection
/// file still answers kernel_info with its key comes back under the same id; the rest are
/// cleaned up (process group killed, connection file removed). Returns (adopted, cleaned).
pub async fn adopt_previous(host: &Arc<HostShared>, state: HostState) -> (usize, usize) {
    let mut adopted = 0;
    let mut cleaned = 0;
    let ctx = match host.pool.get() {
        Ok(c) => c,
        Err(_) => return (0, 0),
    };
    for rec in state.kernels {
        match check_alive(&ctx, &rec).await {
            Ok(info) => {
                let Some(spec) = host.config.specs.get(&rec.name).cloned() else {
                    tracing::warn!(kernel = %rec.id, name = %rec.name, "no kernelspec for a surviving kernel; stopping it");
                    cleanup(&rec);
                    cleaned += 1;
                    continue;
                };
                let a = Adopted {
                    pid: rec.pid,
                    start_time: rec.start_time,
                    connection_file: rec.connection_file.clone(),
                    info,
                    sandbox: rec.sandbox.clone(),
                };
                let k = ManagedKernel::spawn(host.clone(), rec.id.clone(), spec, Some(a));
                host.registry.insert(k);
                tracing::info!(kernel = %rec.id, pid = rec.pid, "re-adopted kernel");
                adopted += 1;
            }
            Err(why) => {
                tracing::info!(kernel = %rec.id, pid = rec.pid, "not re-adopting: {why}");
                cleanup(&rec);
                cleaned += 1;
            }
        }
    }
    host.state_changed();
    (adopted, cleaned)
}

async fn check_alive(
    ctx: &kernelgate_zmq::Context,
    rec: &KernelRecord,
) -> Result<kernelgate_wire::ConnectionInfo, String> {
    if !provision::process_alive(rec.pid) {
        return Err("process is gone".into());
    }
    if !provision::is_same_process(rec.pid, rec.start_time) {
        return Err("pid belongs to another process now".into());
    }
    let bytes = provision::read_connection_file(&rec.connection_file)
        .map_err(|e| format!("connection file: {e}"))?;
    let info = kernelgate_wire::ConnectionInfo::from_json(&bytes).map_err(|e| e.to_string())?;
    zmqio::request(
        ctx,
        &info,
        Channel::Shell,
        "kernel_info_request",
        json!({}),
        Duration::from_secs(3),
    )
    .await?;
    Ok(info)
}

/// Kills a kernel left by a previous run that cannot be adopted, but only when its pid still
/// names the process that was launched (same start time): a pid the system has since given to
/// another process, or one recorded without a start time, is left alone.
fn cleanup(rec: &KernelRecord) {
    if provision::is_same_process(rec.pid, rec.start_time) {
        let _ = provision::signal_group(rec.pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(&rec.connection_file);
}

/// The current table as a state file.
pub fn snapshot(host: &HostShared) -> HostState {
    HostState {
        version: 1,
        host_pid: std::process::id(),
        kernels: host
            .registry
            .list()
            .iter()
            .filter_map(|k| k.record())
            .collect(),
    }
}

/// Writes the state file whenever the table changed, at most every 200 ms.
pub async fn state_writer(host: Arc<HostShared>) {
    let Some(path) = host.config.state_file.clone() else {
        return;
    };
    loop {
        host.state_dirty.notified().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let bytes = snapshot(&host).to_json();
        if let Err(e) = kernelgate_zmq::files::write_private_file_atomic(&path, &bytes) {
            tracing::warn!("writing state file {}: {e}", path.display());
        }
    }
}

/// Culls idle kernels per the policy (returns at once when culling is off).
pub async fn cull_loop(host: Arc<HostShared>) {
    let policy = host.config.cull;
    if policy.idle_timeout.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(policy.interval.max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        let now = chrono::Utc::now();
        for k in host.registry.list() {
            let inactive = (now - k.last_activity()).to_std().unwrap_or_default();
            if should_cull(&policy, k.state(), inactive, k.connections()) {
                tracing::info!(kernel = %k.id, inactive_s = inactive.as_secs(), "culling idle kernel");
                let host = host.clone();
                tokio::spawn(async move { shutdown_kernel(&host, &k.id).await });
            }
        }
    }
}

/// While kernels are starting, a progress line once a second ("12/100 kernels ready, 88
/// starting"), and a last one when they all are; silent otherwise.
pub async fn progress_loop(host: Arc<HostShared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (0usize, 0usize);
    loop {
        tick.tick().await;
        let kernels = host.registry.list();
        let starting = kernels
            .iter()
            .filter(|k| matches!(k.state(), KernelState::Starting | KernelState::Restarting))
            .count();
        let now = (kernels.len(), starting);
        if now != last && (starting > 0 || last.1 > 0) {
            let ready = kernels
                .iter()
                .filter(|k| matches!(k.state(), KernelState::Idle | KernelState::Busy))
                .count();
            tracing::info!(
                "{ready}/{} kernels ready, {starting} starting",
                kernels.len()
            );
        }
        last = now;
    }
}
