//! `compare`: launch fnhost once per pool configuration, with the same
//! generated functions, and play the same schedule against each.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;

use crate::cli::{ClientArgs, CompareArgs};
use crate::launch::{self, function_names, PoolConfig, Workspace};
use crate::memory::{self, MemoryStats, Sampler};
use crate::report::{Comparison, RunContext, RunReport};
use crate::runner::{self, HttpClient, RunOptions, Target};
use crate::workload::{self, Workload};
use fnhost_testkit::Daemon;

/// How often host memory is sampled during a run.
pub const MEMORY_INTERVAL: Duration = Duration::from_millis(100);

pub fn run_options(client: &ClientArgs) -> anyhow::Result<RunOptions> {
    serde_json::from_str::<serde::de::IgnoredAny>(&client.payload)
        .context("--payload is not valid JSON")?;
    Ok(RunOptions {
        max_in_flight: client.max_in_flight,
        request_timeout: Duration::from_millis(client.request_timeout_ms),
        payload: Bytes::from(client.payload.clone()),
    })
}

fn default_fnhost() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate this executable")?;
    Ok(exe
        .parent()
        .map(|d| d.join("fnhost"))
        .unwrap_or_else(|| PathBuf::from("fnhost")))
}

pub async fn run(args: &CompareArgs, stop: Arc<AtomicBool>) -> anyhow::Result<Comparison> {
    if !nix::unistd::geteuid().is_root() {
        bail!("compare launches fnhost, which needs root (namespaces, mounts, cgroups); run it with sudo, or use `run --url` against a running host");
    }
    let fnhost = match &args.fnhost {
        Some(p) => p.clone(),
        None => default_fnhost()?,
    };
    if !fnhost.is_file() {
        bail!("no fnhost binary at {}; build it (cargo build --release --workspace) or pass --fnhost PATH", fnhost.display());
    }
    let configs = PoolConfig::parse_list(&args.pool_configs)?;
    anyhow::ensure!(args.functions >= 1, "--functions must be at least 1");
    let workload = workload::build(&args.workload, args.functions)?;
    let opts = run_options(&args.client)?;
    let names = function_names(workload.schedule.functions);
    let ws = Workspace::create(args.keep_temp)?;
    let client = runner::http_client();
    eprintln!("fnhost-loadtest: {}", workload.description);
    let mut runs = Vec::new();
    for (i, pool) in configs.iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let config = ws.dir().join(format!("config-{i}.toml"));
        std::fs::write(&config, ws.config(&names, pool))
            .with_context(|| format!("cannot write {}", config.display()))?;
        eprintln!(
            "fnhost-loadtest: [{}/{}] {}: starting fnhost",
            i + 1,
            configs.len(),
            pool.label
        );
        let log = ws.dir().join(format!("fnhost-{i}.log"));
        let mut daemon = launch::launch(&fnhost, &config, &log, Duration::from_secs(60))?;
        let measured = measure(
            &client,
            &daemon,
            &ws,
            pool,
            &names,
            &workload,
            &opts,
            args,
            stop.clone(),
        )
        .await;
        let status = daemon.stop();
        let report = measured.with_context(|| {
            format!(
                "run with {} failed; fnhost log tail:\n{}",
                pool.label,
                daemon.log_tail(20)
            )
        })?;
        if let Some(status) = status.filter(|s| !s.success()) {
            eprintln!(
                "fnhost-loadtest: fnhost exited with {status}; log tail:\n{}",
                daemon.log_tail(10)
            );
        }
        eprintln!(
            "fnhost-loadtest: [{}/{}] {}: {} ok, p50 {:.2} ms, p99 {:.2} ms",
            i + 1,
            configs.len(),
            pool.label,
            report.ok,
            report.latency_ms.p50,
            report.latency_ms.p99
        );
        runs.push(report);
    }
    Ok(Comparison {
        command: command_line(),
        workload: workload.description,
        runs,
    })
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    client: &HttpClient,
    daemon: &Daemon,
    ws: &Workspace,
    pool: &PoolConfig,
    names: &[String],
    workload: &Workload,
    opts: &RunOptions,
    args: &CompareArgs,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<RunReport> {
    let warm_timeout = Duration::from_secs(args.warm_timeout_secs);
    if !launch::wait_warm(
        client,
        daemon.url(),
        names.len(),
        pool.expected_warm(),
        warm_timeout,
    )
    .await
    {
        eprintln!("fnhost-loadtest: pools not warm after {warm_timeout:?}; measuring anyway");
    }
    if let Ok(settle) = Duration::try_from_secs_f64(args.settle_secs) {
        tokio::time::sleep(settle).await;
    }
    let usage = memory::usage_file(Path::new("/sys/fs/cgroup"), &ws.cgroup_root);
    let target = Target {
        base_url: daemon.url().to_owned(),
        functions: names.to_vec(),
    };
    let (result, memory) = sampled(
        usage,
        runner::run(client, &workload.schedule, &target, opts, stop),
    )
    .await;
    let result = result?;
    Ok(RunReport::new(
        &result.recorder,
        RunContext {
            label: pool.label.clone(),
            scheduled: workload.schedule.arrivals.len() as u64,
            unsent: result.unsent,
            span: workload.schedule.span,
            wall: result.wall,
            memory,
        },
    ))
}

/// Runs `work` while sampling the usage file (if any); idle memory is read
/// just before.
pub async fn sampled<T>(
    usage: Option<PathBuf>,
    work: impl std::future::Future<Output = T>,
) -> (T, Option<MemoryStats>) {
    let Some(file) = usage else {
        return (work.await, None);
    };
    let idle = memory::read_usage(&file).unwrap_or(0);
    let idle_pss = memory::subtree_pss(&file);
    let sampler = Sampler::start(file, MEMORY_INTERVAL);
    let out = work.await;
    let samples = sampler.finish().await;
    (out, memory::summarize(idle, idle_pss, &samples))
}

/// This process's command line, for reports (so they can be reproduced).
pub fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        if let Some(name) = Path::new(first.as_str()).file_name() {
            *first = name.to_string_lossy().into_owned();
        }
    }
    args.iter()
        .map(|a| {
            if a.contains([' ', ';', '"', '\'']) {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
