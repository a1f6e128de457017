//! Turning workload options into a schedule and a one-line description.

use std::time::Duration;

use anyhow::Context;

use crate::cli::WorkloadArgs;
use crate::schedule::{self, Bounds, Process, Replay, Schedule};
use crate::trace::Trace;
use crate::zipf::Zipf;

pub struct Workload {
    pub schedule: Schedule,
    pub description: String,
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{what} must be a positive number of seconds, got {s}"))
}

/// The schedule of `args`. A Zipf workload spreads over `functions`
/// functions; a trace brings its own (after the `max_functions` cap).
pub fn build(args: &WorkloadArgs, functions: usize) -> anyhow::Result<Workload> {
    let bounds = Bounds {
        duration: secs(args.duration, "--duration")?,
        max_requests: args.requests,
    };
    let (schedule, what) = match &args.trace {
        Some(path) => {
            let full = Trace::load(path)?;
            let trace = full.busiest(args.max_functions.unwrap_or(usize::MAX));
            anyhow::ensure!(
                !trace.functions.is_empty(),
                "trace {} has no functions",
                path.display()
            );
            let replay = Replay {
                minute: secs(args.minute_secs, "--minute-secs")?,
                start_minute: args.trace_start_minute,
                scale: args.trace_scale,
            };
            let s = schedule::replay(&trace, replay, bounds, args.seed)?;
            let minutes = (s.span.as_secs_f64() / args.minute_secs).ceil() as usize;
            let what = format!(
                "trace {} ({} busiest of {} functions), minutes {}..{}, 1 trace minute = {} s, scale {}",
                path.display(),
                trace.functions.len(),
                full.functions.len(),
                args.trace_start_minute,
                args.trace_start_minute + minutes,
                args.minute_secs,
                args.trace_scale
            );
            (s, what)
        }
        None => {
            let popularity = Zipf::new(functions, args.zipf_s)?;
            let s = schedule::synthetic(args.arrivals, args.rate, &popularity, bounds, args.seed)?;
            let process = match args.arrivals {
                Process::Constant => "constant",
                Process::Poisson => "poisson",
            };
            let what = format!(
                "{process} arrivals at {} req/s over {functions} functions (zipf s={})",
                args.rate, args.zipf_s
            );
            (s, what)
        }
    };
    let per = schedule.per_function();
    let busiest = per.iter().max().copied().unwrap_or(0);
    let idle = per.iter().filter(|&&n| n == 0).count();
    let description = format!(
        "{what}; {} requests in {:.1} s (offered {:.1} req/s, busiest function {:.0}%, {idle} never invoked), seed {}",
        schedule.arrivals.len(),
        schedule.span.as_secs_f64(),
        schedule.offered_rate(),
        100.0 * busiest as f64 / schedule.arrivals.len().max(1) as f64,
        args.seed
    );
    Ok(Workload {
        schedule,
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct W {
        #[command(flatten)]
        w: WorkloadArgs,
    }

    #[test]
    fn zipf_workload_from_defaults() {
        let args = W::parse_from([
            "x",
            "--rate",
            "20",
            "--duration",
            "2",
            "--arrivals",
            "constant",
        ])
        .w;
        let w = build(&args, 5).unwrap();
        assert_eq!(w.schedule.arrivals.len(), 40);
        assert_eq!(w.schedule.functions, 5);
        assert!(
            w.description
                .starts_with("constant arrivals at 20 req/s over 5 functions"),
            "{}",
            w.description
        );
        let bad = W::parse_from(["x", "--duration", "0"]).w;
        assert!(build(&bad, 5).is_err());
    }

    #[test]
    fn trace_workload_caps_functions() {
        let path =
            std::env::temp_dir().join(format!("fnhost-loadtest-wl-{}.csv", std::process::id()));
        std::fs::write(&path, "HashOwner,HashApp,HashFunction,Trigger,1,2\no,a,f1,http,1,2\no,a,f2,http,5,5\no,a,f3,timer,1,0\n").unwrap();
        let args = W::parse_from([
            "x",
            "--trace",
            path.to_str().unwrap(),
            "--max-functions",
            "2",
            "--minute-secs",
            "0.5",
        ])
        .w;
        let w = build(&args, 99).unwrap();
        assert_eq!(w.schedule.functions, 2);
        // f2 (10 invocations) is the busiest, then f1 (3).
        assert_eq!(w.schedule.per_function(), vec![10, 3]);
        assert!(
            w.description.contains("2 busiest of 3 functions"),
            "{}",
            w.description
        );
        let _ = std::fs::remove_file(path);
    }
}
