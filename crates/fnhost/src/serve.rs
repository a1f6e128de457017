//! `fnhost serve` and `fnhost check-config`: load config, start the host
//! and the HTTP server, drain on SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fnhost_config::Config;
use fnhost_dispatch::App;
use fnhost_pool::{Host, HostOptions};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{ConfigArgs, ServeArgs};
use crate::telemetry;

fn load_config(args: &ConfigArgs) -> anyhow::Result<Config> {
    let config = match &args.config {
        Some(path) => Config::load_file(path)?,
        None => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            Config::embedded_default(&cwd.join("config"))?
        }
    };
    Ok(config)
}

pub fn check_config(args: ConfigArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    println!("{}: ok", config.origin);
    println!("listen {}  state_dir {}  cgroup_root {}", config.server.listen, config.server.state_dir.display(), config.server.cgroup_root);
    for f in &config.functions {
        println!(
            "function {}: {} {} from {} | memory {} MiB, cpu {}, pids {}, timeout {} ms, writable {} MiB | zygotes {}, ready clones {}, max concurrency {}",
            f.name, f.runtime.as_str(), f.handler, f.code.display(), f.limits.memory_mb, f.limits.cpu, f.limits.pids,
            f.limits.timeout_ms, f.limits.writable_layer_mb, f.pool.zygotes, f.pool.ready_clones, f.pool.max_concurrency
        );
    }
    Ok(())
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args.config)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(state_dir) = args.state_dir {
        config.server.state_dir = std::path::absolute(Path::new(&state_dir))
            .with_context(|| format!("invalid --state-dir {}", state_dir.display()))?;
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("fnhost serve needs root: it creates namespaces, mounts and cgroups (run it with sudo)");
    }
    telemetry::init_logging();
    let metrics = telemetry::init_metrics()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fnhost")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, metrics))
}

async fn serve(config: Config, metrics: metrics_exporter_prometheus::PrometheusHandle) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tracing::info!(config = %config.origin, "starting");
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let host = Arc::new(Host::start(&config, &HostOptions::locate()).await?);
    let addr = listener.local_addr().context("cannot read the listening address")?;
    println!("fnhost: listening on http://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, "listening");
    let app = Arc::new(App::new(host.clone(), config.server.max_payload_bytes, Some(metrics)));
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let shutdown = async {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: draining"),
            _ = sigint.recv() => tracing::info!("SIGINT: draining"),
        }
    };
    fnhost_dispatch::serve(listener, app, shutdown, grace).await;
    host.shutdown(grace).await;
    tracing::info!("stopped");
    Ok(())
}
