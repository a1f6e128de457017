//! The scale suite: N distinct functions (default 10,000) in one config,
//! as an operator meets density. It measures a one-function host's warm
//! latency first, then starts the N-function daemon and reports its
//! start-up time, the time until every function has answered once, a
//! replay of a heavy-tailed trace (`trace.rs`) with latency by how each
//! request was served, the hot function's warm latency against the
//! one-function host, host memory, processes, cgroups and descriptors over
//! time, the `/metrics` size, and whether everything returns to its
//! baseline once the functions are removed (config reload) and the daemon
//! stops.

mod drive;
mod functions;
mod host;
mod report;
mod tail;
mod trace;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use fnhost_testkit::{cgroup_dirs, has_mounts_below, AdminLine, Launch, Scratch, ServerSection};
use nix::sys::signal::Signal;

use crate::http::Endpoint;
use crate::metrics;
use drive::{secs_since, TallySummary};
use host::Sample;

/// What the scale suite is asked to do.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Settings {
    pub functions: usize,
    pub replay_seconds: f64,
    pub rps: f64,
    pub seed: u64,
    pub hibernate_after_ms: u64,
    pub budget_mib: u64,
    /// Concurrent requests of the first touch.
    pub concurrency: usize,
    /// Most replay requests outstanding at once.
    pub max_in_flight: usize,
    /// Sequential requests to the hottest function, on each host.
    pub hot_requests: u64,
    #[serde(skip)]
    pub request_timeout: Duration,
}

/// Whether the host came back to where it was.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Returned {
    /// Seconds from the reload removing every function until no process
    /// was left in fnhost's cgroups and no function cgroup was left.
    pub drain_seconds: Option<f64>,
    pub processes_after_removal: u64,
    pub function_cgroups_after_removal: usize,
    pub daemon_fds_after_start: u64,
    pub daemon_fds_after_removal: u64,
    /// Host memory cgroups before the run and after the daemon stopped.
    pub cgroups_before: u64,
    pub cgroups_after: u64,
    pub cgroup_dirs_left: usize,
    pub mounts_left: bool,
}

/// The scale suite's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scale {
    pub settings: Settings,
    /// From spawning `fnhost serve` until `/healthz` answered 200.
    pub startup_seconds: f64,
    pub metrics_bytes_after_start: usize,
    pub metrics_bytes_at_end: usize,
    pub first_touch_seconds: f64,
    pub first_touch: TallySummary,
    pub replay: TallySummary,
    pub hot_one_function_host: TallySummary,
    pub hot_many_function_host: TallySummary,
    /// Hot warm p50 on the N-function host / on the one-function host.
    pub hot_p50_ratio: Option<f64>,
    pub samples: Vec<Sample>,
    pub returned: Returned,
}

impl Scale {
    /// Failed requests of every phase.
    pub fn errors(&self) -> u64 {
        self.first_touch.errors
            + self.replay.errors
            + self.hot_one_function_host.errors
            + self.hot_many_function_host.errors
    }
}

/// The config of `n` functions in `dir`, and its cgroup root.
fn write_config(
    dir: &Scratch,
    n: usize,
    settings: &Settings,
    root: &str,
) -> Result<std::path::PathBuf> {
    let server = ServerSection {
        admin_listen: Some("off".to_owned()),
        ..ServerSection::new(&dir.subdir("state")?, root)
    };
    let keys = functions::PoolKeys {
        hibernate_after_ms: settings.hibernate_after_ms,
        memory_budget_mb: settings.budget_mib,
    };
    let text = functions::write(n, &dir.subdir("code")?, &server, keys)?;
    dir.write("fnhost.toml", &text)
}

/// Starts `fnhost serve` on `config`; returns it and the seconds it took
/// to answer `/healthz`.
async fn start(fnhost: &Path, config: &Path, n: usize) -> Result<(fnhost_testkit::Daemon, f64)> {
    let launch = Launch::new(fnhost, config)
        .name("fnhost-bench-scale")
        .admin(AdminLine::Ignore)
        .startup_timeout(Duration::from_secs(60) + Duration::from_millis(20) * n as u32)
        .wait_healthy();
    let started = Instant::now();
    let daemon = tokio::task::spawn_blocking(move || launch.start())
        .await
        .context("the daemon launcher panicked")??;
    Ok((daemon, secs_since(started)))
}

/// The hottest function's warm latency on a host serving only it.
async fn one_function_host(fnhost: &Path, settings: &Settings) -> Result<TallySummary> {
    let dir = Scratch::create("fnhost-bench-scale1-")?;
    let root = format!("fnhost-bench-scale1-{}", std::process::id());
    let config = write_config(&dir, 1, settings, &root)?;
    let (mut daemon, _) = start(fnhost, &config, 1).await?;
    let endpoint = Endpoint::parse(daemon.url())?;
    let tally = drive::sequential(
        &endpoint,
        0,
        20,
        settings.hot_requests,
        settings.request_timeout,
    )
    .await;
    daemon.stop();
    Ok(tally.summary())
}

/// Runs the suite against the `fnhost` binary.
pub async fn run(fnhost: &Path, settings: Settings) -> Result<Scale> {
    let n = settings.functions;
    let cgroups_before = host::cgroup_count();
    eprintln!("fnhost-bench: scale: one-function host first (hot-function baseline)");
    let hot_one = one_function_host(fnhost, &settings).await?;

    let dir = Scratch::create("fnhost-bench-scale-")?;
    let root = format!("fnhost-bench-scale-{}", std::process::id());
    eprintln!("fnhost-bench: scale: writing {n} functions");
    let config = write_config(&dir, n, &settings, &root)?;
    eprintln!("fnhost-bench: scale: starting the {n}-function daemon");
    let (mut daemon, startup_seconds) = start(fnhost, &config, n).await?;
    let started = Instant::now() - Duration::from_secs_f64(startup_seconds);
    let pid = daemon.pid();
    let endpoint = Endpoint::parse(daemon.url())?;
    let samples = Rc::new(RefCell::new(vec![host::sample(
        secs_since(started),
        pid,
        &root,
    )]));
    let metrics_bytes_after_start = metrics::scrape(&endpoint).await?.len();
    let daemon_fds_after_start = host::sample(0.0, pid, &root).daemon_fds;

    let sampler = {
        let (samples, root) = (samples.clone(), root.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                samples
                    .borrow_mut()
                    .push(host::sample(secs_since(started), pid, &root));
            }
        }
    };
    let work = async {
        eprintln!(
            "fnhost-bench: scale: first touch of {n} functions, {} at a time",
            settings.concurrency
        );
        let touch_started = Instant::now();
        let first =
            drive::first_touch(&endpoint, n, settings.concurrency, settings.request_timeout).await;
        let first_touch_seconds = secs_since(touch_started);
        let arrivals = trace::arrivals(n, settings.rps, settings.replay_seconds, settings.seed);
        eprintln!(
            "fnhost-bench: scale: replaying {} requests over {} s",
            arrivals.len(),
            settings.replay_seconds
        );
        let replay = drive::replay(
            &endpoint,
            &arrivals,
            settings.max_in_flight,
            settings.request_timeout,
        )
        .await;
        let hot = drive::sequential(
            &endpoint,
            0,
            20,
            settings.hot_requests,
            settings.request_timeout,
        )
        .await;
        (first, first_touch_seconds, replay, hot)
    };
    let (first, first_touch_seconds, replay, hot) = tokio::select! {
        out = work => out,
        _ = sampler => unreachable!("the sampler never ends"),
    };
    samples
        .borrow_mut()
        .push(host::sample(secs_since(started), pid, &root));
    let metrics_bytes_at_end = metrics::scrape(&endpoint).await?.len();

    eprintln!("fnhost-bench: scale: removing every function (reload)");
    let removal = remove_all(&dir, &settings, &root, &daemon, daemon_fds_after_start).await?;
    daemon.stop();
    let returned = Returned {
        daemon_fds_after_start,
        cgroups_before,
        cgroups_after: host::cgroup_count(),
        cgroup_dirs_left: cgroup_dirs(&root).len(),
        mounts_left: has_mounts_below(dir.path()),
        ..removal
    };
    let hot_many = hot.summary();
    let hot_p50_ratio = match (&hot_many.all, &hot_one.all) {
        (Some(many), Some(one)) if one.p50_ms > 0.0 => Some(many.p50_ms / one.p50_ms),
        _ => None,
    };
    let samples = samples.borrow().clone();
    Ok(Scale {
        settings,
        startup_seconds,
        metrics_bytes_after_start,
        metrics_bytes_at_end,
        first_touch_seconds,
        first_touch: first.summary(),
        replay: replay.summary(),
        hot_one_function_host: hot_one,
        hot_many_function_host: hot_many,
        hot_p50_ratio,
        samples,
        returned,
    })
}

/// Rewrites the config without functions, reloads (SIGHUP) and waits until
/// the daemon holds no process, no function cgroup and no more descriptors
/// than right after its start (closed client connections and retired pools
/// release theirs a moment after the last process is gone).
async fn remove_all(
    dir: &Scratch,
    settings: &Settings,
    root: &str,
    daemon: &fnhost_testkit::Daemon,
    fds_after_start: u64,
) -> Result<Returned> {
    write_config(dir, 0, settings, root)?;
    daemon.signal(Signal::SIGHUP)?;
    let reloaded = Instant::now();
    let limit = Duration::from_secs(120);
    let pid = daemon.pid();
    let mut drain_seconds = None;
    let mut last = host::sample(0.0, pid, root);
    let mut function_cgroups = usize::MAX;
    while reloaded.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = host::sample(0.0, pid, root);
        // Only the root directories (one per hierarchy) may be left.
        function_cgroups = cgroup_dirs(root)
            .iter()
            .filter(|d| d.file_name().is_some_and(|f| f != root))
            .count();
        if last.processes == 0 && function_cgroups == 0 && last.daemon_fds <= fds_after_start {
            drain_seconds = Some(secs_since(reloaded));
            break;
        }
    }
    Ok(Returned {
        drain_seconds,
        processes_after_removal: last.processes,
        function_cgroups_after_removal: function_cgroups,
        daemon_fds_after_start: 0,
        daemon_fds_after_removal: last.daemon_fds,
        cgroups_before: 0,
        cgroups_after: 0,
        cgroup_dirs_left: 0,
        mounts_left: false,
    })
}
