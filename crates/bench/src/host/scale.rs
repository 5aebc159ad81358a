//! Scale: N built-in kernels started through the API; time to idle, idle CPU and memory.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::serve::Host;
use super::Args;
use crate::procs::{children, clk_tck, cpu_ticks, rss_mib};

pub(super) struct Scale {
    pub(super) ready_ms: f64,
    pub(super) host_cpu_pct: f64,
    pub(super) kernels_cpu_pct: f64,
    pub(super) host_rss_mib: f64,
    pub(super) per_kernel_rss_mib: f64,
    pub(super) delete_ms: f64,
}

/// Requests in flight at once when starting or deleting many kernels.
const CONCURRENCY: usize = 32;

pub(super) async fn scale(host: &Host, n: usize, args: &Args) -> Result<Scale> {
    let pid = host.proc.pid();
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let k = left.min(CONCURRENCY);
        let batch = futures_util::future::join_all((0..k).map(|_| host.start_kernel())).await;
        for r in batch {
            ids.push(r?);
        }
        left -= k;
    }
    // Poll until every one of ours is idle.
    loop {
        let (st, v) = host.http("GET", "/api/kernels", None).await?;
        if st != 200 {
            bail!("GET /api/kernels: {st} {v}");
        }
        let list = v.as_array().cloned().unwrap_or_default();
        let idle = list
            .iter()
            .filter(|k| ids.iter().any(|i| k["id"] == i.as_str()) && k["execution_state"] == "idle")
            .count();
        if idle == n {
            break;
        }
        if let Some(dead) = list.iter().find(|k| k["execution_state"] == "dead") {
            bail!("a kernel died while starting: {dead}");
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("only {idle} of {n} kernels idle after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_ms = t0.elapsed().as_secs_f64() * 1e3;

    // Let start-up work settle, then measure CPU over the idle window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kids = children(pid);
    let hz = clk_tck();
    let (h0, k0) = (
        cpu_ticks(pid),
        kids.iter().map(|k| cpu_ticks(*k)).sum::<u64>(),
    );
    let w0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
    let wall = w0.elapsed().as_secs_f64();
    let (h1, k1) = (
        cpu_ticks(pid),
        kids.iter().map(|k| cpu_ticks(*k)).sum::<u64>(),
    );
    let host_cpu_pct = (h1.saturating_sub(h0)) as f64 / hz / wall * 100.0;
    let kernels_cpu_pct = (k1.saturating_sub(k0)) as f64 / hz / wall * 100.0;
    let host_rss_mib = rss_mib(pid);
    let kids = children(pid);
    let per_kernel_rss_mib = if kids.is_empty() {
        f64::NAN
    } else {
        kids.iter().map(|k| rss_mib(*k)).sum::<f64>() / kids.len() as f64
    };
    if kids.len() != n {
        eprintln!(
            "kernelgate-bench: note: {} kernel processes under the host for N={n}",
            kids.len()
        );
    }

    let t1 = Instant::now();
    for chunk in ids.chunks(CONCURRENCY) {
        let rs = futures_util::future::join_all(chunk.iter().map(|id| async move {
            host.http("DELETE", &format!("/api/kernels/{id}"), None)
                .await
        }))
        .await;
        for r in rs {
            let (st, v) = r?;
            if st / 100 != 2 {
                bail!("DELETE kernel: {st} {v}");
            }
        }
    }
    // Until the kernel processes are gone.
    while !children(pid).is_empty() && t1.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delete_ms = t1.elapsed().as_secs_f64() * 1e3;
    Ok(Scale {
        ready_ms,
        host_cpu_pct,
        kernels_cpu_pct,
        host_rss_mib,
        per_kernel_rss_mib,
        delete_ms,
    })
}
