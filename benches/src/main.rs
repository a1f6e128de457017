//! `fnhost-bench`: starts `fnhost serve` (or uses a running daemon), measures
//! warm, on-demand-clone and cold-start invocations, and prints the results
//! as Markdown (and optionally JSON). The logic lives in the modules; this
//! file only wires them together.

mod cli;
mod daemon;
mod http;
mod report;
mod scenario;
mod stats;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::cli::Args;
use crate::daemon::Daemon;
use crate::http::Endpoint;
use crate::report::{Machine, Report};

fn main() -> Result<()> {
    let args = Args::parse();
    // One thread: the client sends one request at a time, and a single
    // thread keeps scheduler noise out of the measurement.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = run(&args) => result,
            // Returning drops `run`'s future, and with it the daemon guard,
            // which stops the daemon.
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    })
}

async fn run(args: &Args) -> Result<()> {
    // Keeps the daemon alive until the end of the run; dropping it stops it.
    let mut daemon = None;
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            let fnhost = match &args.fnhost {
                Some(path) => path.clone(),
                None => daemon::default_fnhost_path()?,
            };
            daemon::check_fnhost_binary(&fnhost)?;
            let started = daemon.insert(Daemon::start(&fnhost).await?);
            started.url().to_owned()
        }
    };
    let endpoint = Endpoint::parse(&url)?;
    eprintln!("fnhost-bench: measuring {endpoint}");

    let scenarios = scenario::run_all(&endpoint, &args.scenarios(), args.request_timeout()).await?;
    if let Some(mut daemon) = daemon.take() {
        daemon.stop();
    }

    let report = Report {
        command: report::command_line(),
        machine: Machine::detect(),
        target: endpoint.to_string(),
        scenarios,
    };
    print!("{}", report.to_markdown());
    if let Some(path) = &args.json {
        report.write_json(path)?;
        eprintln!("fnhost-bench: wrote {}", path.display());
    }
    let errors = report.error_count();
    if errors > 0 {
        bail!("{errors} requests failed; see the notes in the report");
    }
    Ok(())
}
