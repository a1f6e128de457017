//! `fnhost-bench`: measures fnhost side by side with its baselines in one
//! run: latency of warm, on-demand-clone and cold-start invocations; the
//! start-to-exit of `crun run`, `runc run`, `bwrap` and host exec of the
//! same work; an import-heavy function beside the no-op (latency,
//! throughput, zygote RSS); the daemon's phase histograms; churn;
//! throughput; density;
//! hibernation of idle zygotes; the floor (a bare fork-per-request server)
//! and the kernel primitives that bound an isolated invocation; Node.js
//! functions beside `node` on the host and under the same runtimes.
//! Prints Markdown, writes JSON and SVG charts. The logic lives in the
//! modules; this file only wires them together.

mod baseline;
mod cli;
mod daemon;
mod density;
mod floor;
mod heavy;
mod hibernation;
mod http;
mod load;
mod memory;
mod metrics;
mod node;
mod report;
mod scale;
mod scenario;
mod stats;
mod svg;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::cli::{Args, Suite};
use crate::daemon::Daemon;
use crate::http::Endpoint;
use crate::report::{Machine, Report};

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.baseline_worker {
        let work = baseline::Work::from_cli(args.baseline_work, args.baseline_code.as_deref())?;
        return baseline::worker_main(dir, args.baseline_runs, &work);
    }
    if let Some(root) = &args.floor_worker {
        return floor::worker_main(root, args.primitive_runs, args.floor_heap_kib);
    }
    // One thread: the client shares the machine's two cores with the
    // daemon, and a single thread keeps scheduler noise out of the
    // measurement (it still drives many connections concurrently).
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
    // Names this run's cgroups (`fnhost-bench-<pid>`, `fnhost-bench-baseline-<pid>`).
    eprintln!("fnhost-bench: harness pid {}", std::process::id());
    let mut report = Report::new(report::command_line(), Machine::detect(), "-".to_owned());
    let fnhost = match &args.fnhost {
        Some(path) => path.clone(),
        None => daemon::default_fnhost_path()?,
    };

    // Scale first: it needs the machine to itself (no other daemon).
    if args.wants(Suite::Scale) {
        daemon::check_fnhost_binary(&fnhost)?;
        let scale = scale::run(&fnhost, args.scale()).await?;
        print!("{}", scale.to_markdown());
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        let path = args.out.join("scale.json");
        let json = serde_json::to_string_pretty(&scale).context("serialising the scale result")?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("fnhost-bench: wrote {}", path.display());
        if scale.errors() > 0 {
            bail!("scale: {} requests failed; see the report", scale.errors());
        }
        if args.suites == [Suite::Scale] {
            return Ok(());
        }
    }

    // Baselines first, on a machine with no daemon running.
    if args.wants(Suite::Baselines) && args.baseline_runs > 0 {
        let exe = std::env::current_exe().context("locating the fnhost-bench executable")?;
        let runs = args.baseline_runs;
        let baselines =
            tokio::task::spawn_blocking(move || baseline::run(&exe, runs, &baseline::Work::Python))
                .await??;
        report.baselines = Some(baselines);
    }

    // The floor's fork probe copies a heap of the warm zygote's size.
    let mut zygote_rss_kib = None;
    let daemon_suites = [Suite::Latency, Suite::Churn, Suite::Throughput];
    if daemon_suites.iter().any(|s| args.wants(*s)) {
        // Keeps the daemon alive until the end of these suites.
        let mut daemon = None;
        let url = match &args.url {
            Some(url) => url.clone(),
            None => {
                daemon::check_fnhost_binary(&fnhost)?;
                let functions = daemon::bench_functions(args.heavy().unwrap_or(0));
                let started = daemon.insert(Daemon::start(&fnhost, &functions).await?);
                started.url().to_owned()
            }
        };
        let endpoint = Endpoint::parse(&url)?;
        eprintln!("fnhost-bench: measuring {endpoint}");
        report.target = endpoint.to_string();
        let timeout = args.request_timeout();
        let duration = Duration::from_secs_f64(args.duration.max(0.1));

        if args.wants(Suite::Latency) {
            report.scenarios = scenario::run_all(&endpoint, &args.scenarios(), timeout).await?;
        }
        if args.wants(Suite::Churn) && !args.churn_clients.is_empty() {
            let function = match args.url {
                Some(_) => args.ondemand_fn.as_str(),
                None => daemon::CHURN_FN,
            };
            report.churn = Some(
                load::run_levels(
                    "churn",
                    &endpoint,
                    function,
                    &args.churn_clients,
                    duration,
                    timeout,
                )
                .await?,
            );
        }
        if args.wants(Suite::Throughput) && !args.concurrency.is_empty() {
            let function = match args.url {
                Some(_) => args.warm_fn.as_str(),
                None => daemon::TPUT_FN,
            };
            report.throughput = Some(
                load::run_levels(
                    "throughput",
                    &endpoint,
                    function,
                    &args.concurrency,
                    duration,
                    timeout,
                )
                .await?,
            );
        }
        let mut heavy = args.heavy().map(|heap_mib| heavy::Heavy {
            heap_mib,
            ..heavy::Heavy::default()
        });
        if let Some(heavy) = heavy.as_mut() {
            if args.wants(Suite::Throughput) && !args.concurrency.is_empty() {
                heavy.throughput = Some(
                    load::run_levels(
                        "throughput (heavy)",
                        &endpoint,
                        daemon::HEAVY_TPUT_FN,
                        &args.concurrency,
                        duration,
                        timeout,
                    )
                    .await?,
                );
            }
        }
        match metrics::scrape(&endpoint).await {
            Ok(text) => report.phase_metrics = Some(metrics::parse(&text)),
            Err(err) => eprintln!("fnhost-bench: cannot read /metrics: {err:#}"),
        }
        if let Some(mut daemon) = daemon.take() {
            zygote_rss_kib = floor::zygote_rss_kib(daemon.pid(), daemon::WARM_FN);
            if let Some(heavy) = heavy.as_mut() {
                heavy.noop_zygote_rss_kib = zygote_rss_kib;
                heavy.heavy_zygote_rss_kib = floor::zygote_rss_kib(daemon.pid(), daemon::HEAVY_FN);
            }
            daemon.stop();
        }
        if let Some(mut heavy) = heavy {
            heavy.compute_ratios(&report.scenarios, report.throughput.as_deref());
            report.heavy = Some(heavy);
        }
    }

    // After the daemon has stopped: the floor has the machine to itself.
    if args.wants(Suite::Floor) {
        let settings = floor::Settings {
            requests: args.warm,
            warmup: args.warmup,
            concurrency: args.concurrency.clone(),
            duration: Duration::from_secs_f64(args.duration.max(0.1)),
            timeout: args.request_timeout(),
            primitive_runs: args.primitive_runs,
            heap_kib: zygote_rss_kib.unwrap_or(floor::DEFAULT_HEAP_KIB),
            heap_source: if zygote_rss_kib.is_some() {
                "the warm zygote's RSS"
            } else {
                "default: no zygote measured in this run"
            },
        };
        let exe = std::env::current_exe().context("locating the fnhost-bench executable")?;
        let mut result = floor::run(&exe, &settings).await?;
        result.ratios = floor::ratios(&result, &report.scenarios, report.throughput.as_deref());
        report.floor = Some(result);
    }

    // Its own daemon with node functions, after its baselines. `all` skips
    // it on a host without node; asked for by name, it fails there.
    if args.wants(Suite::Node) && args.url.is_some() {
        eprintln!("fnhost-bench: node needs its own daemon; skipped with --url");
    } else if args.wants(Suite::Node) && !args.suites.contains(&Suite::Node) && !node::available() {
        eprintln!(
            "fnhost-bench: node suite skipped: {} is missing (install Debian's nodejs; \
             scripts/install-deps.sh does)",
            node::NODE
        );
    } else if args.wants(Suite::Node) {
        daemon::check_fnhost_binary(&fnhost)?;
        let settings = node::Settings {
            requests: args.warm,
            baseline_runs: args.baseline_runs,
            clients: args.concurrency.iter().copied().max().unwrap_or(4),
            duration: Duration::from_secs_f64(args.duration.max(0.1)),
            timeout: args.request_timeout(),
        };
        let exe = std::env::current_exe().context("locating the fnhost-bench executable")?;
        report.node = Some(node::run(&fnhost, &exe, &settings).await?);
    }

    if args.wants(Suite::Density) && args.density_clones > 0 {
        if args.url.is_some() {
            eprintln!("fnhost-bench: density needs its own daemon; skipped with --url");
        } else {
            daemon::check_fnhost_binary(&fnhost)?;
            report.density = Some(density::run(&fnhost, args.density_clones, false).await?);
            if daemon::native_binary(&fnhost).exists() {
                report.density_native =
                    Some(density::run(&fnhost, args.density_clones, true).await?);
            } else {
                eprintln!(
                    "fnhost-bench: density: no {} (cargo build --release --workspace builds it); native density skipped",
                    daemon::native_binary(&fnhost).display()
                );
            }
        }
    }

    if args.wants(Suite::Hibernation) && args.hibernate_cycles > 0 {
        if args.url.is_some() {
            eprintln!("fnhost-bench: hibernation needs its own daemon; skipped with --url");
        } else {
            daemon::check_fnhost_binary(&fnhost)?;
            let settings = hibernation::Settings {
                cycles: args.hibernate_cycles,
                after_ms: args.hibernate_after_ms,
                budget_mib: args.budget_mib,
                request_timeout: args.request_timeout(),
                heavy_mib: args.heavy().unwrap_or(0),
                share_copies: args.share_copies,
            };
            // A failure is reported (and fails the run) after the other
            // suites' results are written.
            report.hibernation = Some(match hibernation::run(&fnhost, settings).await {
                Ok(result) => result,
                Err(err) => {
                    eprintln!("fnhost-bench: hibernation failed: {err:#}");
                    hibernation::Hibernation::failed(&settings, &err)
                }
            });
        }
    }

    print!("{}", report.to_markdown());
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    report.write_json(&args.out.join("report.json"))?;
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    let charts = svg::write_all(&report, &args.out)?;
    eprintln!(
        "fnhost-bench: wrote report.json and {} chart(s) to {}",
        charts.len(),
        args.out.display()
    );
    let errors = report.error_count();
    if errors > 0 {
        bail!("{errors} requests or hibernation cycles failed; see the notes in the report");
    }
    Ok(())
}
