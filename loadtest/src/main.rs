//! fnhost-loadtest: an open-loop load generator for fnhost. Constant-rate
//! or Poisson arrivals over many functions with Zipf popularity, or replay
//! of an Azure Functions trace; HDR latency from intended send times;
//! compares pool configurations by launching fnhost once per configuration.
#![forbid(unsafe_code)]

mod cli;
mod compare;
mod launch;
mod memory;
mod record;
mod remote;
mod report;
mod rng;
mod runner;
mod schedule;
mod trace;
mod workload;
mod zipf;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{Cli, ClientArgs, Command, GenTraceArgs};
use crate::report::Comparison;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fnhost-loadtest: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = match &cli.command {
        Command::GenTrace(args) => return gen_trace(args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => args.client.clone(),
        Command::Compare(args) => args.client.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client.client_threads.max(1))
        .thread_name("loadtest")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The session runs on this thread (block_on), which also spawns fnhost:
    // its parent-death signal is tied to this thread.
    runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        spawn_signal_handler(stop.clone())?;
        let comparison = match &cli.command {
            Command::Run(args) => remote::run(args, stop.clone()).await?,
            Command::Compare(args) => compare::run(args, stop.clone()).await?,
            Command::GenTrace(_) => unreachable!("handled above"),
        };
        print(&comparison, &client);
        Ok(if stop.load(Ordering::Relaxed) {
            ExitCode::from(130)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// SIGINT/SIGTERM stop pacing; the session then stops fnhost and prints
/// what it measured.
fn spawn_signal_handler(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
        eprintln!("fnhost-loadtest: interrupted; finishing in-flight requests and stopping");
        stop.store(true, Ordering::Relaxed);
    });
    Ok(())
}

fn print(comparison: &Comparison, client: &ClientArgs) {
    if client.json {
        eprintln!("{}", comparison.markdown());
        println!("{}", comparison.json());
    } else {
        println!("{}", comparison.markdown());
    }
}

fn gen_trace(args: &GenTraceArgs) -> anyhow::Result<()> {
    let opts = trace::GenOptions {
        functions: args.functions,
        minutes: args.minutes,
        seed: args.seed,
        peak_per_minute: args.peak_per_minute,
        zipf_s: args.zipf_s,
    };
    let t = trace::generate(&opts)?;
    let csv = t.to_csv();
    if args.out.as_os_str() == "-" {
        print!("{csv}");
    } else {
        std::fs::write(&args.out, &csv)
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        eprintln!(
            "fnhost-loadtest: wrote {} ({} functions, {} minutes, {} invocations)",
            args.out.display(),
            t.functions.len(),
            t.minutes,
            t.total()
        );
    }
    Ok(())
}
