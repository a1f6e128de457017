//! Command-line interface of `fnhost-bench`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::daemon::{COLD_FN, HEAVY_COLD_FN, HEAVY_FN, HEAVY_ONDEMAND_FN, ONDEMAND_FN, WARM_FN};
use crate::scenario::Scenario;

/// Measures fnhost against its baselines: invocation latency (warm ready
/// clone, on-demand clone, cold start) next to the start-to-exit time of
/// `crun run`, `runc run`, `bwrap --unshare-all` and plain host exec of the
/// same Python work; phase breakdown and teardown from /metrics; sandbox
/// churn; closed-loop throughput; memory density; hibernation of idle
/// zygotes (memory saved, wake-up latency); the floor (a bare
/// fork-per-request server of the same handler) and the kernel primitives
/// that bound an isolated invocation; Node.js functions beside `node` started
/// on the host and under the same runtimes.
///
/// By default it starts `fnhost serve` with a generated config (no-op Python
/// functions, and an import-heavy one beside them), runs every suite, prints Markdown, writes SVG charts and a
/// JSON report into --out, and stops the daemon. With --url it measures an
/// already-running daemon (latency, churn and throughput only).
#[derive(Debug, Parser)]
#[command(name = "fnhost-bench", version)]
pub struct Args {
    /// What to run (several may be given).
    #[arg(value_enum, default_values_t = [Suite::All])]
    pub suites: Vec<Suite>,

    /// The fnhost binary to start [default: `fnhost` next to this executable].
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    pub fnhost: Option<PathBuf>,

    /// Timed warm invocations (served by pre-forked ready clones); 0 skips.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub warm: u64,

    /// Timed invocations cloned on request from a warm zygote; 0 skips.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub ondemand: u64,

    /// Timed cold starts (no zygote: every request starts one); 0 skips.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub cold: u64,

    /// MiB of Python objects the import-heavy function builds at import
    /// (measured warm, on-demand, cold and for throughput beside the no-op,
    /// as ratios to it); 0 skips it. Not with --url.
    #[arg(long, value_name = "MIB", default_value_t = crate::heavy::DEFAULT_MIB)]
    pub heavy_mib: u64,

    /// Untimed requests sent before each scenario.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub warmup: u64,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Directory for the SVG charts and report.json (created if missing).
    #[arg(long, value_name = "DIR", default_value = "bench-results")]
    pub out: PathBuf,

    /// Timed start-to-exit runs of each baseline (crun, runc, bwrap, host).
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub baseline_runs: u64,

    /// Seconds each churn and throughput level runs.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub duration: f64,

    /// Concurrent clients of the churn loop (on-demand clone + teardown per
    /// request), comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = [1, 2, 4])]
    pub churn_clients: Vec<u32>,

    /// Concurrent connections of the closed-loop throughput test,
    /// comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = [1, 2, 4, 8, 16])]
    pub concurrency: Vec<u32>,

    /// Live idle ready clones to start for the density measurement.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub density_clones: u32,

    /// Timed wake-ups per hibernating function (hibernation suite): each
    /// waits until the function's zygote hibernates (admin API
    /// status.hibernated == 1), then invokes it once; 0 skips the suite.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub hibernate_cycles: u32,

    /// Idle time after which the hibernation suite's zygotes hibernate
    /// (their `hibernate_after_ms`); the pool checks about once a second.
    #[arg(long, value_name = "MS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub hibernate_after_ms: u64,

    /// Copies of the no-op function the hibernation suite puts to sleep
    /// in a daemon of their own to compare their snapshots page by page
    /// (sharing across identical code); 0 skips it.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub share_copies: u32,

    /// Memory budget for the hibernation suite's "functions per budget"
    /// estimate: how many functions fit in it warm vs hibernated.
    #[arg(long, value_name = "MIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub budget_mib: u64,

    /// Timed runs of each kernel primitive of the floor suite (fork + exit,
    /// clone3 with fnhost's namespaces, overlay mount, cgroup attach); 0
    /// skips them.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub primitive_runs: u64,

    /// Measures the floor's kernel primitives with this cgroup root
    /// (internal: the harness re-executes itself with it).
    #[arg(long, value_name = "CGROUP_ROOT", hide = true)]
    pub floor_worker: Option<String>,

    /// The fork probe's heap in KiB (internal, with --floor-worker).
    #[arg(long, value_name = "KIB", hide = true, default_value_t = crate::floor::DEFAULT_HEAP_KIB)]
    pub floor_heap_kib: u64,

    /// Runs the baselines inside this process's private mount namespace
    /// (internal: the harness re-executes itself with it).
    #[arg(long, value_name = "DIR", hide = true)]
    pub baseline_worker: Option<PathBuf>,

    /// The language of the baseline worker's work (internal, with
    /// --baseline-worker).
    #[arg(
        long,
        value_enum,
        value_name = "LANGUAGE",
        hide = true,
        default_value_t
    )]
    pub baseline_work: crate::baseline::Language,

    /// The directory of the node work's code, copied to /var/task
    /// (internal, with --baseline-worker).
    #[arg(long, value_name = "DIR", hide = true)]
    pub baseline_code: Option<PathBuf>,

    /// Benchmark an already-running daemon at this URL (e.g.
    /// http://127.0.0.1:8080) instead of starting one.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Function for the warm scenario (with --url).
    #[arg(long, value_name = "NAME", default_value = WARM_FN, requires = "url")]
    pub warm_fn: String,

    /// Function for the on-demand clone scenario (with --url).
    #[arg(long, value_name = "NAME", default_value = ONDEMAND_FN, requires = "url")]
    pub ondemand_fn: String,

    /// Function for the cold-start scenario (with --url).
    #[arg(long, value_name = "NAME", default_value = COLD_FN, requires = "url")]
    pub cold_fn: String,

    /// Scale suite: distinct functions in the config.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub scale_functions: usize,

    /// Scale suite: seconds of trace replayed.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    pub scale_seconds: f64,

    /// Scale suite: requests per second of the trace, over all functions.
    #[arg(long, value_name = "RPS", default_value_t = 20.0)]
    pub scale_rps: f64,

    /// Scale suite: seed of the trace.
    #[arg(long, value_name = "SEED", default_value_t = 2019)]
    pub scale_seed: u64,

    /// Scale suite: the functions' hibernate_after_ms.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub scale_hibernate_after_ms: u64,

    /// Scale suite: server.memory_budget_mb of the daemon.
    #[arg(long, value_name = "MIB", default_value_t = 12_288)]
    pub scale_budget_mib: u64,

    /// Scale suite: concurrent requests while touching every function once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub scale_concurrency: usize,

    /// Scale suite: sequential requests to the hottest function on a
    /// one-function host and on the N-function host.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub scale_hot_requests: u64,

    /// Per-request deadline in milliseconds; a request past it counts as an
    /// error and the connection is re-established.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// fnhost warm, on-demand and cold latency, with /metrics phases.
    Latency,
    /// crun, runc, bwrap and host exec start-to-exit.
    Baselines,
    /// Sandboxes per second, create + destroy per request.
    Churn,
    /// Closed-loop invocations per second at several concurrencies.
    Throughput,
    /// Memory per zygote and per live idle ready clone.
    Density,
    /// Idle zygotes hibernating (snapshot with and without prefetch,
    /// reclaim): memory warm vs hibernated, wake-up + invoke latency,
    /// functions per memory budget.
    Hibernation,
    /// The floor: a bare fork-per-request Python server (same interpreter
    /// and handler, no isolation) with 1 and 2 workers, sequential latency
    /// and throughput, and the kernel primitives that bound fnhost (fork +
    /// exit, clone3 with its namespaces, overlay mount, cgroup attach);
    /// with latency and throughput, fnhost's numbers as ratios to it.
    Floor,
    /// Node.js functions (no-op and import-heavy): warm, on-demand, cold,
    /// throughput and ready-sandbox memory beside start-to-exit of the same
    /// work under `crun run`, `runc run`, `bwrap --unshare-all` and `node -e`
    /// on the host, and the Python no-op's throughput (skipped by `all`
    /// when /usr/bin/node is missing).
    Node,
    /// Everything above.
    All,
    /// Many distinct functions on one host (not part of `all`): start-up,
    /// every function answering once, a heavy-tailed trace replay, host
    /// memory, processes, cgroups and descriptors, return to baseline.
    Scale,
}

impl Args {
    /// Whether `suite` was asked for (directly or through `all`).
    pub fn wants(&self, suite: Suite) -> bool {
        (self.suites.contains(&Suite::All) && suite != Suite::Scale) || self.suites.contains(&suite)
    }

    /// The scale suite's settings.
    pub fn scale(&self) -> crate::scale::Settings {
        crate::scale::Settings {
            functions: self.scale_functions,
            replay_seconds: self.scale_seconds,
            rps: self.scale_rps,
            seed: self.scale_seed,
            hibernate_after_ms: self.scale_hibernate_after_ms,
            budget_mib: self.scale_budget_mib,
            concurrency: self.scale_concurrency,
            max_in_flight: 64,
            hot_requests: self.scale_hot_requests,
            request_timeout: self.request_timeout(),
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The import-heavy function's heap when it runs in this invocation
    /// (not with --url: a running daemon does not serve it).
    pub fn heavy(&self) -> Option<u64> {
        (self.heavy_mib > 0 && self.url.is_none()).then_some(self.heavy_mib)
    }

    /// The scenarios in run order: the no-op's, then the heavy function's.
    pub fn scenarios(&self) -> Vec<Scenario> {
        let mut out = vec![
            Scenario {
                label: "warm",
                function: self.warm_fn.clone(),
                expected_start: "ready-clone",
                warmup: self.warmup,
                n: self.warm,
            },
            Scenario {
                label: "ondemand",
                function: self.ondemand_fn.clone(),
                expected_start: "on-demand-clone",
                warmup: self.warmup,
                n: self.ondemand,
            },
            Scenario {
                label: "cold",
                function: self.cold_fn.clone(),
                expected_start: "cold-start",
                warmup: self.warmup,
                n: self.cold,
            },
        ];
        if self.heavy().is_some() {
            let names = [HEAVY_FN, HEAVY_ONDEMAND_FN, HEAVY_COLD_FN];
            let heavy: Vec<Scenario> = out
                .iter()
                .zip(crate::heavy::LABELS)
                .zip(names)
                .map(|((noop, (label, _)), function)| Scenario {
                    label,
                    function: function.to_owned(),
                    ..noop.clone()
                })
                .collect();
            out.extend(heavy);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let args = Args::try_parse_from(["fnhost-bench"]).expect("defaults parse");
        assert_eq!(
            (args.warm, args.ondemand, args.cold, args.warmup),
            (2000, 300, 30, 50)
        );
        let fns: Vec<String> = args.scenarios().into_iter().map(|s| s.function).collect();
        assert_eq!(
            fns,
            [
                "noop",
                "noop-ondemand",
                "noop-cold",
                "heavy",
                "heavy-ondemand",
                "heavy-cold"
            ]
        );
        assert_eq!(args.heavy(), Some(50));
        let labels: Vec<&str> = args.scenarios().iter().map(|s| s.label).collect();
        assert_eq!(labels[3..], ["heavy-warm", "heavy-ondemand", "heavy-cold"]);
        assert!(args.wants(Suite::Density) && args.wants(Suite::Baselines));
        assert_eq!(args.concurrency, [1, 2, 4, 8, 16]);
        assert!(args.wants(Suite::Hibernation) && args.wants(Suite::Floor));
        assert!(args.wants(Suite::Node) && !args.wants(Suite::Scale));
        assert_eq!(args.primitive_runs, 100);
        assert_eq!(
            (
                args.hibernate_cycles,
                args.hibernate_after_ms,
                args.budget_mib
            ),
            (20, 300, 1024)
        );
    }

    #[test]
    fn hibernation_flags_parse_and_reject_zero() {
        let args = Args::try_parse_from([
            "fnhost-bench",
            "hibernation",
            "--hibernate-cycles",
            "2",
            "--budget-mib",
            "512",
        ])
        .expect("valid");
        assert!(args.wants(Suite::Hibernation) && !args.wants(Suite::Density));
        assert_eq!((args.hibernate_cycles, args.budget_mib), (2, 512));
        assert!(Args::try_parse_from(["fnhost-bench", "--budget-mib", "0"]).is_err());
        assert!(Args::try_parse_from(["fnhost-bench", "--hibernate-after-ms", "0"]).is_err());
    }

    #[test]
    fn suites_and_lists_parse() {
        let args = Args::try_parse_from([
            "fnhost-bench",
            "baselines",
            "churn",
            "--churn-clients",
            "1,3",
        ])
        .expect("valid");
        assert!(args.wants(Suite::Churn) && !args.wants(Suite::Latency));
        assert!(!args.wants(Suite::Node));
        assert_eq!(args.churn_clients, [1, 3]);
    }

    #[test]
    fn baseline_worker_args_name_the_work() {
        use crate::baseline::{Language, Work};
        let args =
            Args::try_parse_from(["fnhost-bench", "--baseline-worker", "/d"]).expect("valid");
        assert_eq!(args.baseline_work, Language::Python);
        let work = Work::Node {
            code: PathBuf::from("/c"),
        };
        let mut argv = vec![
            "fnhost-bench".into(),
            "--baseline-worker".into(),
            "/d".into(),
        ];
        argv.extend(work.cli_args());
        let args = Args::try_parse_from(argv).expect("valid");
        assert_eq!(
            Work::from_cli(args.baseline_work, args.baseline_code.as_deref()).expect("valid"),
            work
        );
    }

    #[test]
    fn function_names_need_url_and_url_excludes_fnhost() {
        assert!(Args::try_parse_from(["fnhost-bench", "--warm-fn", "x"]).is_err());
        assert!(
            Args::try_parse_from(["fnhost-bench", "--url", "http://h:1", "--fnhost", "/f"])
                .is_err()
        );
        let args = Args::try_parse_from(["fnhost-bench", "--url", "http://h:1", "--cold-fn", "c"])
            .expect("valid");
        assert_eq!(args.scenarios()[2].function, "c");
        // A running daemon does not serve the heavy function.
        assert_eq!((args.heavy(), args.scenarios().len()), (None, 3));
        let none = Args::try_parse_from(["fnhost-bench", "--heavy-mib", "0"]).expect("valid");
        assert_eq!((none.heavy(), none.scenarios().len()), (None, 3));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
