//! Density: a daemon with one zygote and N idle ready clones; memory per
//! zygote and per clone as PSS and USS (from `/proc/<pid>/smaps_rollup` of
//! the daemon's descendants, grouped by their memory cgroup: `.../zygote`
//! or `.../s<n>`), as memory-cgroup accounting, and as the drop of the
//! host's `MemAvailable`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::daemon::{self, Daemon, DENSITY_FN};
use crate::http::Endpoint;
use crate::memory::{self, cgroup_usage_kib, mem_available_kib, ProcMem};
use crate::metrics;

/// How long the pool may take to fill, per clone (plus a fixed minute).
const FILL_TIME_PER_CLONE: Duration = Duration::from_millis(100);

/// The density result (KiB unless named otherwise).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Density {
    pub clones_requested: u32,
    /// Sandboxes (clone cgroups with a live process) found.
    pub clones_live: u32,
    pub zygotes: u32,
    pub zygote_pss_kib: u64,
    pub zygote_uss_kib: u64,
    pub zygote_cgroup_kib: Option<u64>,
    pub clone_pss_kib_mean: f64,
    pub clone_uss_kib_mean: f64,
    pub clone_cgroup_kib_mean: Option<f64>,
    pub daemon_pss_kib: u64,
    pub mem_available_before_kib: u64,
    pub mem_available_after_kib: u64,
    /// (before - after) / clones: everything, daemon and zygote amortised.
    pub host_kib_per_clone: f64,
    /// MemAvailable before / host_kib_per_clone.
    pub estimated_capacity: u64,
    pub fill_seconds: f64,
}

/// Starts a density daemon, waits for its clones, measures, stops it.
pub async fn run(fnhost: &Path, clones: u32, native: bool) -> Result<Density> {
    let before = mem_available_kib()?;
    let kind = if native { "native Rust" } else { "Python" };
    eprintln!(
        "fnhost-bench: density: starting a daemon with {clones} ready clones of a {kind} function"
    );
    let daemon = Daemon::start(fnhost, &daemon::density_functions(clones, native)).await?;
    let endpoint = Endpoint::parse(daemon.url())?;
    let started = Instant::now();
    let limit = Duration::from_secs(60) + FILL_TIME_PER_CLONE * clones;
    loop {
        let ready = ready_clones(&endpoint).await.unwrap_or(0);
        if ready >= u64::from(clones) {
            break;
        }
        if started.elapsed() > limit {
            bail!(
                "density: only {ready} of {clones} ready clones after {} s",
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    // Let the refill settle and lazily freed memory return.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = mem_available_kib()?;
    let result = measure(&daemon, clones, before, after, fill_seconds);
    drop(daemon);
    result
}

async fn ready_clones(endpoint: &Endpoint) -> Option<u64> {
    let text = metrics::scrape(endpoint).await.ok()?;
    let prefix = format!("fnhost_pool_ready_clones{{function=\"{DENSITY_FN}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

fn measure(
    daemon: &Daemon,
    clones: u32,
    before: u64,
    after: u64,
    fill_seconds: f64,
) -> Result<Density> {
    let root = daemon.pid();
    let groups = memory::by_cgroup(root);
    let daemon_pss_kib = memory::proc_mem(root).map_or(0, |m| m.pss_kib);
    let zygotes: Vec<(&String, &ProcMem)> = groups
        .iter()
        .filter(|(cg, _)| memory::is_zygote_cgroup(cg))
        .collect();
    let sandboxes: Vec<(&String, &ProcMem)> = groups
        .iter()
        .filter(|(cg, _)| memory::is_clone_cgroup(cg))
        .collect();
    if sandboxes.is_empty() {
        bail!(
            "density: found no clone processes under the daemon (pid {root}); cgroups seen: {:?}",
            groups.keys().collect::<Vec<_>>()
        );
    }
    let n = sandboxes.len() as f64;
    let clone_cgroups: Vec<u64> = sandboxes
        .iter()
        .filter_map(|(cg, _)| cgroup_usage_kib(cg))
        .collect();
    let zygote_cgroup_kib = zygotes.first().and_then(|(cg, _)| cgroup_usage_kib(cg));
    let host_kib_per_clone = before.saturating_sub(after) as f64 / f64::from(clones.max(1));
    Ok(Density {
        clones_requested: clones,
        clones_live: sandboxes.len() as u32,
        zygotes: zygotes.len() as u32,
        zygote_pss_kib: zygotes.iter().map(|(_, m)| m.pss_kib).sum(),
        zygote_uss_kib: zygotes.iter().map(|(_, m)| m.uss_kib).sum(),
        zygote_cgroup_kib,
        clone_pss_kib_mean: sandboxes.iter().map(|(_, m)| m.pss_kib).sum::<u64>() as f64 / n,
        clone_uss_kib_mean: sandboxes.iter().map(|(_, m)| m.uss_kib).sum::<u64>() as f64 / n,
        clone_cgroup_kib_mean: (!clone_cgroups.is_empty())
            .then(|| clone_cgroups.iter().sum::<u64>() as f64 / clone_cgroups.len() as f64),
        daemon_pss_kib,
        mem_available_before_kib: before,
        mem_available_after_kib: after,
        host_kib_per_clone,
        // MemAvailable moves by more than a small clone costs (page cache,
        // other tenants): never estimate from less than the clone's PSS.
        estimated_capacity: {
            let per_clone = host_kib_per_clone.max(clone_pss_kib_mean(&sandboxes));
            if per_clone > 0.0 {
                (before as f64 / per_clone) as u64
            } else {
                0
            }
        },
        fill_seconds,
    })
}

fn clone_pss_kib_mean(sandboxes: &[(&String, &ProcMem)]) -> f64 {
    sandboxes.iter().map(|(_, m)| m.pss_kib).sum::<u64>() as f64 / sandboxes.len().max(1) as f64
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

/// Markdown table of the density result.
pub fn markdown(d: &Density) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.2}", mib(v)));
    format!(
        "| what | MiB |\n|---|--:|\n\
         | per idle ready clone, PSS | {:.2} |\n\
         | per idle ready clone, USS (private) | {:.2} |\n\
         | per idle ready clone, memory cgroup | {} |\n\
         | per idle ready clone, host MemAvailable drop (daemon + zygote amortised) | {:.2} |\n\
         | zygote, PSS | {:.2} |\n\
         | zygote, USS | {:.2} |\n\
         | zygote, memory cgroup | {} |\n\
         | daemon, PSS | {:.2} |\n\
         | host MemAvailable before → after | {:.0} → {:.0} |\n\n\
         {} of {} clones live ({} zygote(s)), pool full {:.1} s after the daemon answered /healthz; at the larger of the \
         MemAvailable drop and the PSS per clone, this host fits about **{}** idle sandboxes.\n",
        mib(d.clone_pss_kib_mean),
        mib(d.clone_uss_kib_mean),
        opt(d.clone_cgroup_kib_mean),
        mib(d.host_kib_per_clone),
        mib(d.zygote_pss_kib as f64),
        mib(d.zygote_uss_kib as f64),
        opt(d.zygote_cgroup_kib.map(|v| v as f64)),
        mib(d.daemon_pss_kib as f64),
        mib(d.mem_available_before_kib as f64),
        mib(d.mem_available_after_kib as f64),
        d.clones_live,
        d.clones_requested,
        d.zygotes,
        d.fill_seconds,
        d.estimated_capacity,
    )
}
