//! The floor: what an invocation costs with no isolation at all. A bare
//! fork-per-request Python server (same interpreter, same no-op handler
//! imported once, `fork()` per request; no namespaces, cgroups or mounts),
//! measured with the bench's own client like fnhost: sequential latency and
//! closed-loop throughput with 1 and 2 workers. Beside it, the kernel
//! primitives that bound an isolated invocation ([`primitives`]). The
//! report reads fnhost's numbers of the same run as ratios to the floor.

mod primitives;
mod report;
mod server;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::http::Endpoint;
use crate::load::{self, LoadLevel};
use crate::memory;
use crate::scenario::{self, Scenario};
use crate::stats::{Percentiles, NO_START_HEADER};

pub use primitives::{worker_main, Primitives, DEFAULT_HEAP_KIB};
pub use report::{markdown, ratios, FloorRatios};

use server::FloorServer;

/// The worker counts measured, in order.
pub const WORKERS: [u32; 2] = [1, 2];

/// The floor server's "function" (it serves any path; the name shows in
/// the progress lines only).
const FLOOR_FN: &str = "floor";

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sequential timed requests per worker count (the --warm count).
    pub requests: u64,
    pub warmup: u64,
    /// Closed-loop client counts (the throughput suite's list).
    pub concurrency: Vec<u32>,
    pub duration: Duration,
    pub timeout: Duration,
    /// Timed runs of each kernel primitive; 0 skips them.
    pub primitive_runs: u64,
    /// The fork probe's heap and where its size came from.
    pub heap_kib: u64,
    pub heap_source: &'static str,
}

/// The floor server with one worker count.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FloorServerResult {
    pub workers: u32,
    /// Sequential requests over the bench's client (request sent → body
    /// read; the connection set-up before each request is not timed).
    pub sequential: Percentiles,
    pub sequential_errors: u64,
    pub throughput: Vec<LoadLevel>,
    /// Latency at quantiles 0.00 … 1.00 (for the CDF chart).
    #[serde(skip)]
    pub cdf_ms: Vec<f64>,
}

/// The floor suite's result (the report's `floor` object).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Floor {
    pub interpreter: &'static str,
    /// Whether the floor keeps connections open between requests (it does
    /// not: one connection per request, `Connection: close`).
    pub keep_alive: bool,
    pub servers: Vec<FloorServerResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primitives: Option<Primitives>,
    /// fnhost's numbers of the same run over the floor's, when the latency
    /// or throughput suite ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratios: Option<FloorRatios>,
}

impl Floor {
    /// The server result with `workers` workers.
    pub fn server(&self, workers: u32) -> Option<&FloorServerResult> {
        self.servers.iter().find(|s| s.workers == workers)
    }

    /// Failed sequential requests (throughput errors are only reported,
    /// as for fnhost).
    pub fn error_count(&self) -> u64 {
        self.servers.iter().map(|s| s.sequential_errors).sum()
    }
}

/// RSS of `function`'s zygote runtime, KiB: the largest process in its
/// zygote cgroup among the daemon's descendants (the cgroup also holds the
/// zygote's init, and every zygote of the function after a scale-out).
pub fn zygote_rss_kib(daemon_pid: u32, function: &str) -> Option<u64> {
    memory::processes(daemon_pid)
        .into_iter()
        .filter(|(_, cgroup, _)| memory::is_zygote_cgroup_of(cgroup, function))
        .map(|(_, _, mem)| mem.rss_kib)
        .max()
        .filter(|&kib| kib > 0)
}

/// Runs the floor suite; `exe` is this program (the primitives worker).
pub async fn run(exe: &Path, settings: &Settings) -> Result<Floor> {
    let mut servers = Vec::new();
    for workers in WORKERS {
        servers.push(measure_server(workers, settings).await?);
    }
    let primitives = if settings.primitive_runs > 0 {
        let (exe, runs, kib, source) = (
            exe.to_path_buf(),
            settings.primitive_runs,
            settings.heap_kib,
            settings.heap_source,
        );
        Some(tokio::task::spawn_blocking(move || primitives::run(&exe, runs, kib, source)).await??)
    } else {
        None
    };
    Ok(Floor {
        interpreter: crate::baseline::PYTHON,
        keep_alive: false,
        servers,
        primitives,
        ratios: None,
    })
}

async fn measure_server(workers: u32, settings: &Settings) -> Result<FloorServerResult> {
    let server = tokio::task::spawn_blocking(move || FloorServer::start(workers))
        .await
        .context("the floor server launcher panicked")??;
    let endpoint = Endpoint::parse(server.url())?;
    let label = format!("floor {workers}w");
    eprintln!("fnhost-bench: {label}: fork-per-request server at {endpoint}");
    let scenario = Scenario {
        label: if workers == 1 { "floor 1w" } else { "floor 2w" },
        function: FLOOR_FN.to_owned(),
        expected_start: NO_START_HEADER,
        warmup: settings.warmup,
        n: settings.requests,
    };
    let (sequential, sequential_errors, cdf_ms) = if settings.requests > 0 {
        let stats = scenario::run(&endpoint, &scenario, settings.timeout).await?;
        let summary = stats.summarize(NO_START_HEADER);
        (summary.latency, summary.error_count(), summary.cdf_ms)
    } else {
        (
            crate::stats::LatencyHistogram::default().summary(),
            0,
            Vec::new(),
        )
    };
    let throughput = load::run_levels(
        &label,
        &endpoint,
        FLOOR_FN,
        &settings.concurrency,
        settings.duration,
        settings.timeout,
    )
    .await?;
    drop(server);
    Ok(FloorServerResult {
        workers,
        sequential,
        sequential_errors,
        throughput,
        cdf_ms,
    })
}
