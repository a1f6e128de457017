//! The Node.js suite: a no-op and an import-heavy Node function (warm,
//! on-demand, cold latency, throughput, memory per idle ready sandbox),
//! beside `node -e` start-to-exit of the same work on the host and the
//! Python no-op's throughput and memory, all measured in the same run and
//! reported as ratios (targets: warm p50 <= 0.1x node start-to-exit,
//! throughput >= 0.5x Python's).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fnhost_testkit::{toml_string, AdminLine, Launch, Scratch, ServerSection};

use crate::daemon::NOOP_HANDLER;
use crate::http::Endpoint;
use crate::load::{self, LoadLevel};
use crate::memory;
use crate::scenario::{self, Scenario};
use crate::stats::{LatencyHistogram, Percentiles};

const NODE: &str = "/usr/bin/node";
const NOOP_JS: &str = "exports.handler = async () => ({ ok: true });\n";
/// Modules of the import-heavy function's dependency tree.
const HEAVY_MODULES: usize = 300;

/// What the suite measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeBench {
    pub node_start_to_exit: Percentiles,
    pub node_heavy_start_to_exit: Percentiles,
    pub scenarios: Vec<(String, Percentiles)>,
    pub node_tput: LoadLevel,
    pub node_heavy_tput: LoadLevel,
    pub python_tput: LoadLevel,
    /// Mean PSS / USS of an idle ready sandbox, KiB: (node, python).
    pub ready_pss_kib: (Option<u64>, Option<u64>),
    pub ready_uss_kib: (Option<u64>, Option<u64>),
}

/// The heavy module tree: `index.js` requires `node_modules/dep<i>`, each
/// building a table of closures and strings at load.
fn write_heavy(dir: &Path) -> Result<()> {
    let mut index = String::new();
    for i in 0..HEAVY_MODULES {
        let dep = dir.join(format!("node_modules/dep{i}"));
        std::fs::create_dir_all(&dep)?;
        let mut src = format!("'use strict';\nconst table = {{}};\nfor (let k = 0; k < 200; k++) table['k' + k] = 'dep{i}-' + k;\n");
        for f in 0..40 {
            let _ = writeln!(src, "exports.f{f} = (x) => (x * {f} + {i}) % 7919;");
        }
        src.push_str("exports.table = table;\n");
        std::fs::write(dep.join("index.js"), src)?;
        let _ = writeln!(index, "require('dep{i}');");
    }
    index.push_str(NOOP_JS);
    std::fs::write(dir.join("index.js"), index)?;
    Ok(())
}

/// Start-to-exit of `node -e` loading `dir/index.js` and calling its handler once.
fn node_start_to_exit(dir: &Path, runs: u64) -> Result<Percentiles> {
    let script = format!(
        "require({:?}).handler({{bench: true}}, {{}}).then(() => {{}})",
        dir.join("index.js").display().to_string()
    );
    let mut histogram = LatencyHistogram::default();
    for i in 0..runs + 2 {
        let started = Instant::now();
        let status = Command::new(NODE)
            .args(["-e", &script])
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("running {NODE}"))?;
        if !status.success() {
            bail!("node -e failed: {status}");
        }
        // Two untimed warm-up runs.
        if i >= 2 {
            histogram.record(started.elapsed());
        }
    }
    Ok(histogram.summary())
}

fn config(dir: &Scratch, cgroup_root: &str) -> Result<String> {
    let noop = dir.subdir("node-noop")?;
    std::fs::write(noop.join("index.js"), NOOP_JS)?;
    let heavy = dir.subdir("node-heavy")?;
    write_heavy(&heavy)?;
    let python = dir.subdir("python-noop")?;
    std::fs::write(python.join("handler.py"), NOOP_HANDLER)?;
    let node = |name: &str, code: &Path, zygotes: u32, ready: u32| {
        format!(
            "\n[[functions]]\nname = \"{name}\"\nruntime = \"nodejs\"\ncode = {}\nhandler = \"index.handler\"\nzygotes = {zygotes}\nready_clones = {ready}\n",
            toml_string(&code.display().to_string())
        )
    };
    let functions = node("node-noop", &noop, 1, 4)
        + &node("node-noop-ondemand", &noop, 1, 0)
        + &node("node-noop-cold", &noop, 0, 0)
        + &node("node-tput", &noop, 1, 16)
        + &node("node-heavy", &heavy, 1, 4)
        + &node("node-heavy-ondemand", &heavy, 1, 0)
        + &node("node-heavy-cold", &heavy, 0, 0)
        + &node("node-heavy-tput", &heavy, 1, 16)
        + &format!(
            "\n[[functions]]\nname = \"py-tput\"\nruntime = \"python3\"\ncode = {}\nhandler = \"handler.handler\"\nzygotes = 1\nready_clones = 16\n",
            toml_string(&python.display().to_string())
        );
    let state = dir.subdir("state")?;
    let mut server = ServerSection::new(&state, cgroup_root);
    server.admin_listen = Some("off".to_owned());
    Ok(format!(
        "# Written by fnhost-bench (node suite).\n{}\n[defaults]\nmemory_mb = 256\ntimeout_ms = 10000\nmax_concurrency = 64\n{functions}",
        server.to_toml()
    ))
}

/// Mean memory of the idle ready sandboxes of `function`, KiB: (PSS, USS).
fn ready_memory(daemon_pid: u32, function: &str) -> (Option<u64>, Option<u64>) {
    let prefix = format!("/{function}/s");
    let clones: Vec<memory::ProcMem> = memory::by_cgroup(daemon_pid)
        .into_iter()
        .filter(|(cgroup, _)| cgroup.contains(&prefix) && memory::is_clone_cgroup(cgroup))
        .map(|(_, mem)| mem)
        .collect();
    if clones.is_empty() {
        return (None, None);
    }
    let n = clones.len() as u64;
    (
        Some(clones.iter().map(|m| m.pss_kib).sum::<u64>() / n),
        Some(clones.iter().map(|m| m.uss_kib).sum::<u64>() / n),
    )
}

/// Runs the suite: `n` latency samples per scenario, throughput with
/// `clients` connections for `duration`.
pub async fn run(
    fnhost: &Path,
    n: u64,
    baseline_runs: u64,
    clients: u32,
    duration: Duration,
    timeout: Duration,
) -> Result<NodeBench> {
    if !Path::new(NODE).is_file() {
        bail!("{NODE} is missing: install Debian's nodejs (scripts/install-deps.sh does)");
    }
    let dir = Scratch::create("fnhost-bench-node-")?;
    let cgroup_root = format!("fnhost-bench-node-{}", std::process::id());
    let config = dir.write("fnhost.toml", &config(&dir, &cgroup_root)?)?;
    // Host baselines first, with no daemon running.
    let noop_dir = dir.path().join("node-noop");
    let heavy_dir = dir.path().join("node-heavy");
    let (node_start_to_exit, node_heavy_start_to_exit) = tokio::task::spawn_blocking(move || {
        Ok::<_, anyhow::Error>((
            node_start_to_exit(&noop_dir, baseline_runs)?,
            node_start_to_exit(&heavy_dir, baseline_runs)?,
        ))
    })
    .await??;

    let launch = Launch::new(fnhost, &config)
        .name("fnhost-bench-node")
        .admin(AdminLine::Ignore)
        .wait_healthy();
    let mut daemon = tokio::task::spawn_blocking(move || launch.start())
        .await
        .context("the daemon launcher panicked")??;
    let endpoint = Endpoint::parse(daemon.url())?;
    let scenario = |label: &'static str, function: &str, expected: &'static str, n: u64| Scenario {
        label,
        function: function.to_owned(),
        expected_start: expected,
        warmup: 3,
        n,
    };
    let scenarios = [
        scenario("node warm", "node-noop", "ready-clone", n),
        scenario("node on-demand", "node-noop-ondemand", "on-demand-clone", n),
        scenario("node cold", "node-noop-cold", "cold-start", (n / 10).max(3)),
        scenario("node heavy warm", "node-heavy", "ready-clone", n),
        scenario(
            "node heavy on-demand",
            "node-heavy-ondemand",
            "on-demand-clone",
            n,
        ),
        scenario(
            "node heavy cold",
            "node-heavy-cold",
            "cold-start",
            (n / 10).max(3),
        ),
    ];
    let summaries = scenario::run_all(&endpoint, &scenarios, timeout).await?;
    let scenarios = summaries
        .0
        .into_iter()
        .map(|(label, s)| (label, s.latency))
        .collect();
    let node_tput = load::run_level(&endpoint, "node-tput", clients, duration, timeout).await?;
    let python_tput = load::run_level(&endpoint, "py-tput", clients, duration, timeout).await?;
    let node_heavy_tput =
        load::run_level(&endpoint, "node-heavy-tput", clients, duration, timeout).await?;
    // Let the pools refill and settle before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let node_mem = ready_memory(daemon.pid(), "node-tput");
    let python_mem = ready_memory(daemon.pid(), "py-tput");
    daemon.stop();
    Ok(NodeBench {
        node_start_to_exit,
        node_heavy_start_to_exit,
        scenarios,
        node_tput,
        node_heavy_tput,
        python_tput,
        ready_pss_kib: (node_mem.0, python_mem.0),
        ready_uss_kib: (node_mem.1, python_mem.1),
    })
}

fn kib(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// The suite's Markdown section.
pub fn markdown(b: &NodeBench) -> String {
    let mut out = String::from("## Node.js\n\n| | p50 ms | p99 ms | n |\n|---|---|---|---|\n");
    let row = |out: &mut String, label: &str, p: &Percentiles| {
        let _ = writeln!(
            out,
            "| {label} | {:.3} | {:.3} | {} |",
            p.p50_ms, p.p99_ms, p.n
        );
    };
    row(
        &mut out,
        "`node -e` start-to-exit (no-op)",
        &b.node_start_to_exit,
    );
    row(
        &mut out,
        "`node -e` start-to-exit (heavy)",
        &b.node_heavy_start_to_exit,
    );
    for (label, p) in &b.scenarios {
        row(&mut out, label, p);
    }
    let warm = |label: &str| {
        b.scenarios
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, p)| p.p50_ms)
    };
    let _ = writeln!(out, "\n| ratio | value | target |\n|---|---|---|");
    if let Some(w) = warm("node warm") {
        let _ = writeln!(
            out,
            "| node warm p50 / `node -e` p50 | {:.4} | <= 0.1 |",
            w / b.node_start_to_exit.p50_ms
        );
    }
    if let Some(w) = warm("node heavy warm") {
        let _ = writeln!(
            out,
            "| heavy warm p50 / heavy `node -e` p50 | {:.4} | |",
            w / b.node_heavy_start_to_exit.p50_ms
        );
    }
    let _ = writeln!(
        out,
        "| node no-op inv/s / python no-op inv/s ({} clients) | {:.0} / {:.0} = {:.2} | >= 0.5 |",
        b.node_tput.clients,
        b.node_tput.rps,
        b.python_tput.rps,
        b.node_tput.rps / b.python_tput.rps.max(f64::MIN_POSITIVE)
    );
    let _ = writeln!(
        out,
        "| node heavy inv/s | {:.0} ({} errors) | |",
        b.node_heavy_tput.rps, b.node_heavy_tput.errors
    );
    let _ = writeln!(
        out,
        "| idle ready sandbox PSS / USS, node | {} / {} | |\n| idle ready sandbox PSS / USS, python | {} / {} | |",
        kib(b.ready_pss_kib.0),
        kib(b.ready_uss_kib.0),
        kib(b.ready_pss_kib.1),
        kib(b.ready_uss_kib.1)
    );
    out
}
