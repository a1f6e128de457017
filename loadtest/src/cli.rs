//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::schedule::Process;

/// fnhost-loadtest: open-loop load generator for fnhost.
///
/// Sends requests at their scheduled times whatever the server does (no
/// coordinated omission), across many functions with Zipf popularity or
/// replaying an Azure Functions trace, and reports latency percentiles,
/// cold-start fraction, pool hit rate, queueing, rejections and memory.
///
///   fnhost-loadtest compare --functions 10 --rate 100 --duration 20 \
///       --pool-configs "zygotes=0,ready_clones=0;zygotes=1,ready_clones=2"
///   fnhost-loadtest run --url http://127.0.0.1:8080 --rate 200 --duration 30
///   fnhost-loadtest gen-trace --out loadtest/traces/sample.csv
#[derive(Debug, Parser)]
#[command(name = "fnhost-loadtest", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive an already-running host.
    Run(RunArgs),
    /// Launch fnhost (as root) once per pool configuration with generated
    /// functions, run the same workload against each, print a comparison.
    Compare(CompareArgs),
    /// Write a synthetic trace in the Azure Functions trace format.
    GenTrace(GenTraceArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Offered load, requests per second (Zipf workloads).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Arrival process (Zipf workloads).
    #[arg(long, value_enum, default_value_t = Process::Poisson)]
    pub arrivals: Process,
    /// Length of the run, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many requests, whichever comes first.
    #[arg(long)]
    pub requests: Option<usize>,
    /// Zipf exponent of function popularity (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,
    /// Seed of arrivals and function choice: same seed, same requests.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Replay this trace (Azure Functions format) instead of Zipf arrivals.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Real seconds one trace minute takes (1 = 60x time compression).
    #[arg(long, default_value_t = 1.0)]
    pub minute_secs: f64,
    /// First trace minute to replay (0-based).
    #[arg(long, default_value_t = 0)]
    pub trace_start_minute: usize,
    /// Multiply every trace count by this (e.g. 0.1 to thin a busy trace).
    #[arg(long, default_value_t = 1.0)]
    pub trace_scale: f64,
    /// Replay only the N busiest functions of the trace.
    #[arg(long)]
    pub max_functions: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Requests in flight at most; arrivals beyond are dropped and counted.
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Per-request timeout, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// JSON body sent to every function.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// Tokio worker threads of the client (the pacer has its own thread).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Print the report as JSON on stdout (the Markdown table goes to stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Base URL of the host.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Functions to invoke (repeat or comma-separate); default: every
    /// function the host lists on /healthz. Popularity rank follows order.
    #[arg(long = "function", value_delimiter = ',')]
    pub functions: Vec<String>,
    /// fnhost's cgroup root (server.cgroup_root) for memory sampling.
    #[arg(long, default_value = "fnhost")]
    pub cgroup_root: String,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The fnhost binary (default: next to this executable).
    #[arg(long)]
    pub fnhost: Option<PathBuf>,
    /// Pool configurations, `;`-separated, each `key=value,…` with keys
    /// zygotes, ready_clones, max_concurrency, queue_timeout_ms, memory_mb,
    /// timeout_ms, pids, writable_layer_mb, cpu.
    #[arg(
        long,
        default_value = "zygotes=0,ready_clones=0;zygotes=1,ready_clones=0;zygotes=1,ready_clones=2"
    )]
    pub pool_configs: String,
    /// Functions to generate (Zipf workloads; a trace brings its own).
    #[arg(long, default_value_t = 10)]
    pub functions: usize,
    /// Seconds to wait for pools to warm before each run.
    #[arg(long, default_value_t = 60)]
    pub warm_timeout_secs: u64,
    /// Seconds to let the host settle after warming, before measuring idle memory.
    #[arg(long, default_value_t = 1.0)]
    pub settle_secs: f64,
    /// Keep the scratch directory (configs, daemon logs).
    #[arg(long)]
    pub keep_temp: bool,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct GenTraceArgs {
    /// Output file (`-` for stdout).
    #[arg(long, default_value = "-")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 40)]
    pub functions: usize,
    /// Minute columns (the Azure files have 1440, one day).
    #[arg(long, default_value_t = 1440)]
    pub minutes: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mean invocations per minute of the busiest function.
    #[arg(long, default_value_t = 60.0)]
    pub peak_per_minute: f64,
    /// Zipf exponent of popularity across functions.
    #[arg(long, default_value_t = 1.1)]
    pub zipf_s: f64,
}
