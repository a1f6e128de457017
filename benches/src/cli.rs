//! Command-line interface of `fnhost-bench`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::daemon::{COLD_FN, ONDEMAND_FN, WARM_FN};
use crate::scenario::Scenario;

/// Measures fnhost invocation latency: warm (pre-forked ready clone),
/// on-demand clone and cold start, each with its Server-Timing phase
/// breakdown.
///
/// By default it starts `fnhost serve` with a generated config (three no-op
/// Python functions), runs every scenario sequentially over one keep-alive
/// HTTP/1 connection, prints Markdown tables and stops the daemon. With
/// --url it measures an already-running daemon instead.
#[derive(Debug, Parser)]
#[command(name = "fnhost-bench", version)]
pub struct Args {
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

    /// Untimed requests sent before each scenario.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub warmup: u64,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

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

    /// Per-request deadline in milliseconds; a request past it counts as an
    /// error and the connection is re-established.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
}

impl Args {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The scenarios in run order.
    pub fn scenarios(&self) -> Vec<Scenario> {
        vec![
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
        ]
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
        assert_eq!(fns, ["noop", "noop-ondemand", "noop-cold"]);
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
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
