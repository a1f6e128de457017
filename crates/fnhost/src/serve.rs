//! `fnhost serve` and `fnhost check-config`: load config, start the host
//! and the HTTP server, drain on SIGTERM/SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fnhost_config::{AdminListen, Config};
use fnhost_dispatch::{
    Admin, AdminAuth, App, ConfigSource, ConnectionLimits, Control, LambdaControl, Listener,
};
use fnhost_pool::{Host, HostOptions};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{ConfigArgs, ServeArgs};
use crate::telemetry;

/// The config, its text, and where it came from (for reloads).
pub(crate) fn load_config(args: &ConfigArgs) -> anyhow::Result<(Config, String, ConfigSource)> {
    match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| {
                fnhost_config::ConfigError::Read {
                    path: path.clone(),
                    source,
                }
            })?;
            let base_dir = std::path::absolute(path)
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("."));
            let config = Config::parse(&text, &path.display().to_string(), &base_dir)?;
            Ok((
                config,
                text,
                ConfigSource {
                    path: Some(path.clone()),
                    base_dir,
                },
            ))
        }
        None => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            let base_dir = cwd.join("config");
            let config = Config::embedded_default(&base_dir)?;
            Ok((
                config,
                fnhost_config::DEFAULT_CONFIG.to_string(),
                ConfigSource {
                    path: None,
                    base_dir,
                },
            ))
        }
    }
}

pub fn check_config(args: ConfigArgs) -> anyhow::Result<()> {
    let (config, _, _) = load_config(&args)?;
    println!("{}: ok", config.origin);
    println!(
        "listen {}  state_dir {}  cgroup_root {}",
        config.server.listen,
        config.server.state_dir.display(),
        config.server.cgroup_root
    );
    for f in &config.functions {
        println!(
            "function {}: {} {} from {} | memory {} MiB, cpu {}, pids {}, timeout {} ms, writable {} MiB | zygotes {}, ready clones {}, max concurrency {}",
            f.name, f.runtime.as_str(), if f.handler.is_empty() { f.command.join(" ") } else { f.handler.clone() }, f.code.display(), f.limits.memory_mb, f.limits.cpu, f.limits.pids,
            f.limits.timeout_ms, f.limits.writable_layer_mb, f.pool.zygotes, f.pool.ready_clones, f.pool.max_concurrency
        );
    }
    Ok(())
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (mut config, text, source) = load_config(&args.config)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(state_dir) = args.state_dir {
        config.server.state_dir = std::path::absolute(Path::new(&state_dir))
            .with_context(|| format!("invalid --state-dir {}", state_dir.display()))?;
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "fnhost serve needs root: it creates namespaces, mounts and cgroups (run it with sudo)"
        );
    }
    telemetry::init_logging();
    // Every function may hold at least one zygote once invoked.
    let zygotes: u64 = config
        .functions
        .iter()
        .map(|f| u64::from(f.pool.zygotes.max(1)))
        .sum();
    let nofile = crate::descriptors::prepare(zygotes, config.server.http.max_connections as u64);
    let metrics = telemetry::init_metrics()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fnhost")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, text, source, metrics, nofile))
}

/// The functions created through the Lambda API, from the store under
/// `state_dir`, as records and as config entries; unused code is removed.
fn api_functions(
    config: &Config,
    store: &fnhost_control::Store,
    runtimes: &fnhost_control::runtime::Runtimes,
) -> anyhow::Result<(
    Vec<fnhost_control::FunctionRecord>,
    std::collections::BTreeMap<String, serde_json::Value>,
)> {
    let records = store.load()?;
    store.collect(&records);
    let mut entries = std::collections::BTreeMap::new();
    for r in &records {
        if config.functions.iter().any(|f| f.name == r.name) {
            tracing::warn!(function = %r.name, "the config file defines a function of this name: it shadows the one created through the Lambda API (kept in the store)");
            continue;
        }
        match runtimes.resolve(&r.runtime) {
            Ok(runtime) => {
                entries.insert(
                    r.name.clone(),
                    r.config_entry(runtime, &store.code_dir(&r.code_sha256)),
                );
            }
            Err(e) => {
                tracing::error!(function = %r.name, error = %e.message, "stored function not served")
            }
        }
    }
    Ok((records, entries))
}

async fn serve(
    mut config: Config,
    text: String,
    source: ConfigSource,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    nofile: Option<u64>,
) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    tracing::info!(config = %config.origin, "starting");
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
    let admin_listener = bind_admin(&config.server.admin_listen).await?;
    let admin_auth = AdminAuth::for_server(&config.server)?;
    // Functions created through the Lambda API join the config before any
    // pool starts.
    let store = Arc::new(fnhost_control::Store::open(&config.server.state_dir)?);
    let runtimes = fnhost_control::runtime::Runtimes::detect(
        Path::new(fnhost_config::DEFAULT_PYTHON),
        Path::new(fnhost_config::DEFAULT_NODE),
    );
    let (records, api) = api_functions(&config, &store, &runtimes)?;
    if !api.is_empty() {
        let merged = fnhost_dispatch::control::merge(&text, &api)?;
        config = Config::parse(&merged, &config.origin, &source.base_dir)
            .context("the functions stored by the Lambda API do not fit the config")?;
    }
    let mut options = HostOptions::locate();
    if let Some(limit) = nofile {
        let connections = config.server.http.max_connections as u64;
        let for_sandboxes = crate::descriptors::for_sandboxes(limit, connections);
        options.sandbox_descriptors = Some(usize::try_from(for_sandboxes).unwrap_or(usize::MAX));
        tracing::info!(
            open_file_limit = limit,
            for_sandboxes,
            "descriptors for zygotes and clones (past them idle zygotes stop)"
        );
    }
    let host = Arc::new(Host::start(&config, &options).await?);
    if !config.server.listen.ip().is_loopback()
        && config.server.control_plane.invoke_auth == fnhost_config::InvokeAuth::None
    {
        tracing::warn!(listen = %config.server.listen, "invocations are open to anyone who reaches server.listen; set server.invoke_auth = \"sigv4\" (with [[server.aws_credentials]]) unless a proxy authenticates them");
    }
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    println!("fnhost: listening on http://{addr}");
    match &admin_listener {
        Some(Listener::Tcp(l)) => println!(
            "fnhost: admin API on http://{}{}",
            l.local_addr().context("admin address")?,
            admin_auth
                .token_file()
                .map(|f| format!(" (bearer token in {})", f.display()))
                .unwrap_or_default()
        ),
        Some(Listener::Unix(_)) => println!(
            "fnhost: admin API on {}",
            admin_description(&config.server.admin_listen)
        ),
        None => println!("fnhost: admin API off"),
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, "listening");
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let control = Arc::new(Control::new(host.clone(), source, text, api, grace));
    let lambda_control = Arc::new(LambdaControl::new(
        control.clone(),
        store,
        records,
        &config.server.control_plane,
        runtimes,
        Duration::from_millis(config.server.http.body_timeout_ms),
    ));
    let app = Arc::new(
        App::new(host.clone(), &config.server, Some(metrics)).with_lambda_control(lambda_control),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin_task = admin_listener.map(|listener| {
        let admin = Arc::new(Admin {
            control: control.clone(),
            auth: admin_auth.clone(),
        });
        let handler = move |req| fnhost_dispatch::admin::handle(admin.clone(), req);
        tokio::spawn(fnhost_dispatch::serve(
            listener,
            handler,
            stopped(stop_rx.clone()),
            grace,
            ConnectionLimits::admin(&config.server.http),
        ))
    });
    let reloads = control.clone();
    let signals = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = sighup.recv() => match reloads.reload().await {
                    Ok(report) => tracing::info!(?report, "SIGHUP: config reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: reload refused; the running config keeps serving"),
                },
                _ = sigterm.recv() => { tracing::info!("SIGTERM: draining"); break; }
                _ = sigint.recv() => { tracing::info!("SIGINT: draining"); break; }
            }
        }
        let _ = stop_tx.send(true);
    });
    let handler = move |req| fnhost_dispatch::routes::handle(app.clone(), req);
    fnhost_dispatch::serve(
        Listener::Tcp(listener),
        handler,
        stopped(stop_rx.clone()),
        grace,
        ConnectionLimits::invoke(&config.server.http),
    )
    .await;
    let _ = signals.await;
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    host.shutdown(grace).await;
    if let fnhost_config::AdminListen::Unix(path) = &config.server.admin_listen {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped");
    Ok(())
}

fn admin_description(listen: &AdminListen) -> String {
    match listen {
        AdminListen::Tcp(addr) => format!("http://{addr}"),
        AdminListen::Unix(path) => format!("unix:{}", path.display()),
        AdminListen::Off => "off".to_string(),
    }
}

async fn bind_admin(listen: &AdminListen) -> anyhow::Result<Option<Listener>> {
    Ok(match listen {
        AdminListen::Off => None,
        AdminListen::Tcp(addr) => Some(Listener::Tcp(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (server.admin_listen)"))?,
        )),
        AdminListen::Unix(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            // A socket left by a previous run.
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path).with_context(|| {
                format!(
                    "cannot listen on unix:{} (server.admin_listen)",
                    path.display()
                )
            })?;
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .with_context(|| format!("cannot restrict {}", path.display()))?;
            Some(Listener::Unix(listener))
        }
    })
}
