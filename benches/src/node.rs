//! The Node.js suite: a no-op and an import-heavy Node function (warm,
//! on-demand, cold latency, throughput, memory per idle ready sandbox),
//! beside start-to-exit of the same work under `crun run`, `runc run`,
//! `bwrap --unshare-all` and `node -e` on the host (the baseline module's
//! runners, over the same root) and the Python no-op's throughput and
//! memory, all measured in the same run and reported as ratios (targets:
//! warm p50 <= 0.1x `node -e` start-to-exit, throughput >= 0.5x Python's).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fnhost_testkit::{toml_string, AdminLine, Launch, Scratch, ServerSection};

use crate::baseline::{self, BaselineSummary, Work, CRUN_RUN, HOST_EXEC};
use crate::daemon::NOOP_HANDLER;
use crate::http::Endpoint;
use crate::load::{self, LoadLevel};
use crate::memory;
use crate::report::{baseline_row, div, latency_table, notes};
use crate::scenario::{self, Scenario};
use crate::stats::{Ordered, ScenarioSummary};

pub use crate::baseline::work::NODE;

const NOOP_JS: &str = "exports.handler = async () => ({ ok: true });\n";
/// Modules of the import-heavy function's dependency tree.
const HEAVY_MODULES: usize = 300;
/// Targets of issue 14: warm p50 ÷ `node -e` p50, node ÷ Python inv/s.
const TARGET_WARM_OVER_NODE_E: f64 = 0.1;
const TARGET_TPUT_OVER_PYTHON: f64 = 0.5;

/// What the suite measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeBench {
    /// Start-to-exit of the no-op's work (`node` requiring its index.js
    /// and awaiting the handler once) under each baseline; `host exec` is
    /// `node -e` on the host.
    pub baselines: Vec<BaselineSummary>,
    /// The same for the import-heavy function.
    pub heavy_baselines: Vec<BaselineSummary>,
    /// fnhost's scenarios: `node warm`, `node on-demand`, `node cold`, and
    /// the same for `node heavy`.
    pub scenarios: Ordered<ScenarioSummary>,
    pub node_tput: LoadLevel,
    pub node_heavy_tput: LoadLevel,
    pub python_tput: LoadLevel,
    /// Mean PSS / USS of an idle ready sandbox, KiB: (node, python).
    pub ready_pss_kib: (Option<u64>, Option<u64>),
    pub ready_uss_kib: (Option<u64>, Option<u64>),
    /// The ratios of this run, targets included.
    pub ratios: Ordered<Ratio>,
}

/// One ratio of the run, `None` when a side was not measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ratio {
    pub what: String,
    pub value: Option<f64>,
    /// `<= 0.1`, `>= 0.5`, or none.
    pub target: Option<String>,
    pub met: Option<bool>,
}

impl NodeBench {
    /// Failed requests: the scenarios' and the throughput levels'.
    pub fn error_count(&self) -> u64 {
        self.scenarios
            .0
            .iter()
            .map(|(_, s)| s.error_count())
            .sum::<u64>()
            + self.node_tput.errors
            + self.node_heavy_tput.errors
            + self.python_tput.errors
    }

    /// Latency CDFs for the chart: fnhost's scenarios, then `crun run` and
    /// `node -e` of the no-op and of the heavy function.
    pub fn cdf_series(&self) -> Vec<(String, &[f64])> {
        let mut series: Vec<(String, &[f64])> = self
            .scenarios
            .0
            .iter()
            .filter(|(_, s)| !s.cdf_ms.is_empty() && s.latency.n > 0)
            .map(|(label, s)| (label.clone(), s.cdf_ms.as_slice()))
            .collect();
        for (which, baselines) in [("no-op", &self.baselines), ("heavy", &self.heavy_baselines)] {
            for b in baselines.iter().filter(|b| !b.cdf_ms.is_empty()) {
                let name = match b.name.as_str() {
                    CRUN_RUN => "crun run",
                    HOST_EXEC => "node -e",
                    _ => continue,
                };
                series.push((format!("{name}, {which}"), b.cdf_ms.as_slice()));
            }
        }
        series
    }
}

/// Whether the node interpreter is installed.
pub fn available() -> bool {
    Path::new(NODE).is_file()
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
    let clones: Vec<memory::ProcMem> = memory::by_cgroup(daemon_pid)
        .into_iter()
        .filter(|(cgroup, _)| memory::is_clone_cgroup_of(cgroup, function))
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

/// The suite's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Timed requests of each warm and on-demand scenario (a tenth, at
    /// least 3, of the cold ones).
    pub requests: u64,
    /// Timed start-to-exit runs of each baseline; 0 skips them.
    pub baseline_runs: u64,
    /// Closed-loop connections of the throughput runs.
    pub clients: u32,
    pub duration: Duration,
    pub timeout: Duration,
}

/// Runs the suite; `exe` is this program (re-executed as the baseline
/// worker).
pub async fn run(fnhost: &Path, exe: &Path, settings: &Settings) -> Result<NodeBench> {
    if !available() {
        bail!("{NODE} is missing: install Debian's nodejs (scripts/install-deps.sh does)");
    }
    let dir = Scratch::create("fnhost-bench-node-")?;
    let cgroup_root = format!("fnhost-bench-node-{}", std::process::id());
    let config = dir.write("fnhost.toml", &config(&dir, &cgroup_root)?)?;
    // Baselines first, with no daemon running.
    let (baselines, heavy_baselines) = if settings.baseline_runs > 0 {
        let (exe, runs) = (exe.to_owned(), settings.baseline_runs);
        let work = |code: PathBuf| Work::Node { code };
        let (noop, heavy) = (
            work(dir.path().join("node-noop")),
            work(dir.path().join("node-heavy")),
        );
        tokio::task::spawn_blocking(move || {
            Ok::<_, anyhow::Error>((
                baseline::run(&exe, runs, &noop)?,
                baseline::run(&exe, runs, &heavy)?,
            ))
        })
        .await
        .context("the baseline runner panicked")??
    } else {
        (Vec::new(), Vec::new())
    };

    let launch = Launch::new(fnhost, &config)
        .name("fnhost-bench-node")
        .admin(AdminLine::Ignore)
        .wait_healthy();
    let mut daemon = tokio::task::spawn_blocking(move || launch.start())
        .await
        .context("the daemon launcher panicked")??;
    let endpoint = Endpoint::parse(daemon.url())?;
    let n = settings.requests;
    let scenario = |label: &'static str, function: &str, expected: &'static str, n: u64| Scenario {
        label,
        function: function.to_owned(),
        expected_start: expected,
        warmup: 3,
        n,
    };
    let cold_n = (n / 10).max(3);
    let scenarios = [
        scenario("node warm", "node-noop", "ready-clone", n),
        scenario("node on-demand", "node-noop-ondemand", "on-demand-clone", n),
        scenario("node cold", "node-noop-cold", "cold-start", cold_n),
        scenario("node heavy warm", "node-heavy", "ready-clone", n),
        scenario(
            "node heavy on-demand",
            "node-heavy-ondemand",
            "on-demand-clone",
            n,
        ),
        scenario("node heavy cold", "node-heavy-cold", "cold-start", cold_n),
    ];
    let timeout = settings.timeout;
    let scenarios = scenario::run_all(&endpoint, &scenarios, timeout).await?;
    let (clients, duration) = (settings.clients, settings.duration);
    let node_tput = load::run_level(&endpoint, "node-tput", clients, duration, timeout).await?;
    let python_tput = load::run_level(&endpoint, "py-tput", clients, duration, timeout).await?;
    let node_heavy_tput =
        load::run_level(&endpoint, "node-heavy-tput", clients, duration, timeout).await?;
    // Let the pools refill and settle before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let node_mem = ready_memory(daemon.pid(), "node-tput");
    let python_mem = ready_memory(daemon.pid(), "py-tput");
    daemon.stop();
    let mut bench = NodeBench {
        baselines,
        heavy_baselines,
        scenarios,
        node_tput,
        node_heavy_tput,
        python_tput,
        ready_pss_kib: (node_mem.0, python_mem.0),
        ready_uss_kib: (node_mem.1, python_mem.1),
        ratios: Ordered::default(),
    };
    bench.ratios = ratios(&bench);
    Ok(bench)
}

/// p50 of a scenario that served requests.
fn scenario_p50(b: &NodeBench, label: &str) -> Option<f64> {
    b.scenarios
        .get(label)
        .filter(|s| s.latency.n > 0)
        .map(|s| s.latency.p50_ms)
}

/// p50 of a scenario's requests served the way it intends (a warm
/// scenario's ready-clone hits), with the share of such requests.
fn expected_p50(b: &NodeBench, label: &str) -> Option<(f64, f64)> {
    let s = b.scenarios.get(label)?;
    let hits = s.expected_latency()?;
    Some((hits.p50_ms, hits.n as f64 / s.latency.n.max(1) as f64))
}

/// p50 of a baseline that ran.
fn baseline_p50(baselines: &[BaselineSummary], name: &str) -> Option<f64> {
    baselines
        .iter()
        .find(|b| b.name == name)
        .and_then(|b| b.latency)
        .map(|l| l.p50_ms)
}

/// The ratios of the run: fnhost's p50 over `node -e`'s and `crun run`'s
/// of the same work, `crun run` over `node -e`, node over Python inv/s.
fn ratios(b: &NodeBench) -> Ordered<Ratio> {
    let ratio = |what: String, value: Option<f64>, target: Option<(&str, f64)>| {
        let met = target.zip(value).map(|((op, t), v)| match op {
            "<=" => v <= t,
            _ => v >= t,
        });
        Ratio {
            what,
            value,
            target: target.map(|(op, t)| format!("{op} {t}")),
            met,
        }
    };
    let mut out = Ordered::default();
    for (key, label, baselines, node_e_name, crun_name) in [
        ("", "node", &b.baselines, "`node -e`", "`crun run` node"),
        (
            "heavy_",
            "node heavy",
            &b.heavy_baselines,
            "heavy `node -e`",
            "`crun run` heavy node",
        ),
    ] {
        let node_e = baseline_p50(baselines, HOST_EXEC);
        let crun = baseline_p50(baselines, CRUN_RUN);
        let warm = scenario_p50(b, &format!("{label} warm"));
        let target = (key.is_empty()).then_some(("<=", TARGET_WARM_OVER_NODE_E));
        // The target is for a warm invocation: one served by a ready
        // clone. A sequential client outruns the refill, so the scenario
        // mixes in on-demand clones; its p50 over all requests is listed
        // too, with the share of ready-clone hits.
        let hits = expected_p50(b, &format!("{label} warm"));
        let share = hits.map_or(String::new(), |(_, s)| {
            format!(" ({:.0}% of the requests)", s * 100.0)
        });
        out.0.push((
            format!("{key}warm_ready_p50_over_node_e_p50"),
            ratio(
                format!("{label} warm p50, ready-clone hits{share} / {node_e_name} p50"),
                hits.zip(node_e).and_then(|((w, _), e)| div(w, e)),
                target,
            ),
        ));
        out.0.push((
            format!("{key}warm_p50_over_node_e_p50"),
            ratio(
                format!("{label} warm p50, all requests / {node_e_name} p50"),
                warm.zip(node_e).and_then(|(w, e)| div(w, e)),
                None,
            ),
        ));
        for scenario in ["warm", "on-demand", "cold"] {
            let p50 = scenario_p50(b, &format!("{label} {scenario}"));
            out.0.push((
                format!("{key}{}_p50_over_crun_p50", scenario.replace('-', "")),
                ratio(
                    format!("{label} {scenario} p50 / {crun_name} p50"),
                    p50.zip(crun).and_then(|(f, c)| div(f, c)),
                    None,
                ),
            ));
        }
        out.0.push((
            format!("{key}crun_p50_over_node_e_p50"),
            ratio(
                format!("{crun_name} p50 / {node_e_name} p50"),
                crun.zip(node_e).and_then(|(c, e)| div(c, e)),
                None,
            ),
        ));
    }
    out.0.push((
        "tput_over_python_tput".to_owned(),
        ratio(
            format!(
                "node no-op inv/s / Python no-op inv/s ({} clients)",
                b.node_tput.clients
            ),
            div(b.node_tput.rps, b.python_tput.rps),
            Some((">=", TARGET_TPUT_OVER_PYTHON)),
        ),
    ));
    out
}

fn kib(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// The suite's Markdown section.
pub fn markdown(b: &NodeBench) -> String {
    let mut out = String::from(
        "\n## Node.js: fnhost beside `node` started on the host and under the runtimes\n\n\
         fnhost rows: HTTP round trip on loopback (request sent → body read), sequential \
         requests. Milliseconds.\n\n",
    );
    out.push_str(&latency_table(&b.scenarios));
    for note in notes(&b.scenarios) {
        let _ = writeln!(out, "- **note:** {note}");
    }
    out.push_str(
        "\nBaselines: start-to-exit of `node -e` requiring `/var/task/index.js` and awaiting \
         `handler({bench: true}, {})` once, on the same root (host exec: on the host). \
         Milliseconds.\n\n\
         | what | n | p50 | p90 | p99 | max |\n|---|--:|--:|--:|--:|--:|\n",
    );
    for (which, baselines) in [("no-op", &b.baselines), ("heavy", &b.heavy_baselines)] {
        for base in baselines {
            let label = if base.name == HOST_EXEC {
                format!("{which}: host exec (`node -e`)")
            } else {
                format!("{which}: {}", base.name)
            };
            out.push_str(&baseline_row(&label, base));
        }
    }
    if b.baselines.is_empty() {
        out.push_str("| (not run: --baseline-runs 0) | - | - | - | - | - |\n");
    }
    for base in b.baselines.iter().chain(&b.heavy_baselines) {
        if let (Some(detail), true) = (&base.detail, base.status != baseline::Status::Ok) {
            let _ = writeln!(out, "- **{}:** {detail}", base.name);
        }
    }
    let _ = writeln!(out, "\n| ratio | value | target |\n|---|--:|---|");
    for (_, r) in &b.ratios.0 {
        let value = r.value.map_or("-".to_owned(), |v| format!("{v:.3}"));
        let target = match (&r.target, r.met) {
            (Some(t), Some(true)) => format!("{t}: met"),
            (Some(t), Some(false)) => format!("{t}: **missed**"),
            (Some(t), None) => t.clone(),
            (None, _) => String::new(),
        };
        let _ = writeln!(out, "| {} | {value} | {target} |", r.what);
    }
    let tput = |l: &LoadLevel| format!("{:.0} inv/s ({} errors)", l.rps, l.errors);
    let _ = writeln!(
        out,
        "\n| throughput ({} clients) and memory | value |\n|---|--:|\n\
         | node no-op | {} |\n| node heavy | {} |\n| python no-op | {} |\n\
         | idle ready sandbox PSS / USS, node | {} / {} |\n\
         | idle ready sandbox PSS / USS, python | {} / {} |",
        b.node_tput.clients,
        tput(&b.node_tput),
        tput(&b.node_heavy_tput),
        tput(&b.python_tput),
        kib(b.ready_pss_kib.0),
        kib(b.ready_uss_kib.0),
        kib(b.ready_pss_kib.1),
        kib(b.ready_uss_kib.1)
    );
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::baseline::Status;
    use crate::stats::{Percentiles, ScenarioStats};

    fn baseline(name: &str, p50_ms: Option<f64>) -> BaselineSummary {
        BaselineSummary {
            name: name.to_owned(),
            status: if p50_ms.is_some() {
                Status::Ok
            } else {
                Status::NotInstalled
            },
            latency: p50_ms.map(|p50_ms| Percentiles {
                n: 5,
                p50_ms,
                p90_ms: p50_ms,
                p99_ms: p50_ms,
                max_ms: p50_ms,
                mean_ms: p50_ms,
            }),
            detail: p50_ms.is_none().then(|| format!("{name}: not installed")),
            cdf_ms: p50_ms.map_or_else(Vec::new, |p| vec![p; 101]),
        }
    }

    /// Four requests of `us` microseconds (below 2,048 µs the histogram
    /// keeps values exactly).
    fn scenario(us: u64, expected: &str, errors: u64) -> ScenarioSummary {
        let mut stats = ScenarioStats::default();
        for _ in 0..4 {
            stats.record_success(Duration::from_micros(us), Some(expected), None);
        }
        for _ in 0..errors {
            stats.record_error("503 Overloaded".to_owned());
        }
        stats.summarize(expected)
    }

    fn level(rps: f64, errors: u64) -> LoadLevel {
        LoadLevel {
            clients: 4,
            ok: 100,
            errors,
            seconds: 1.0,
            rps,
            teardowns_per_s: None,
            latency: Percentiles {
                n: 100,
                p50_ms: 1.0,
                p90_ms: 1.0,
                p99_ms: 1.0,
                max_ms: 1.0,
                mean_ms: 1.0,
            },
            start_kinds: Default::default(),
            first_error: None,
        }
    }

    /// Warm requests that outran the refill: two ready-clone hits of
    /// 2 ms, four on-demand clones of 2.04 ms (below 2,048 µs the
    /// histogram keeps values exactly).
    fn warm_with_misses() -> ScenarioSummary {
        let mut stats = ScenarioStats::default();
        for (us, kind, n) in [(2000, "ready-clone", 2), (2040, "on-demand-clone", 4)] {
            for _ in 0..n {
                stats.record_success(Duration::from_micros(us), Some(kind), None);
            }
        }
        stats.summarize("ready-clone")
    }

    /// A run: no-op warm 2 ms on ready clones (a third of the requests;
    /// 2.04 ms over all) against `node -e` 20 ms (0.1, the target), `crun run`
    /// 25 ms, runc not installed; node 60 vs Python 100 inv/s; one failed
    /// cold request and two failed throughput requests.
    pub(crate) fn bench() -> NodeBench {
        let scenarios = Ordered(vec![
            ("node warm".to_owned(), warm_with_misses()),
            (
                "node on-demand".to_owned(),
                scenario(1500, "on-demand-clone", 0),
            ),
            ("node cold".to_owned(), scenario(2000, "cold-start", 1)),
            (
                "node heavy warm".to_owned(),
                scenario(1000, "ready-clone", 0),
            ),
        ]);
        let mut b = NodeBench {
            baselines: vec![
                baseline(CRUN_RUN, Some(25.0)),
                baseline("runc run", None),
                baseline(HOST_EXEC, Some(20.0)),
            ],
            heavy_baselines: vec![
                baseline(CRUN_RUN, Some(250.0)),
                baseline(HOST_EXEC, Some(200.0)),
            ],
            scenarios,
            node_tput: level(60.0, 2),
            node_heavy_tput: level(40.0, 0),
            python_tput: level(100.0, 0),
            ready_pss_kib: (Some(1331), Some(1024)),
            ready_uss_kib: (Some(717), None),
            ratios: Ordered::default(),
        };
        b.ratios = ratios(&b);
        b
    }

    #[test]
    fn ratios_hold_the_targets_of_the_issue() {
        let b = bench();
        let r = |key: &str| b.ratios.get(key).expect(key).clone();
        let warm = r("warm_ready_p50_over_node_e_p50");
        assert_eq!(warm.value, Some(0.1), "{warm:?}");
        assert_eq!(
            (warm.target.as_deref(), warm.met),
            (Some("<= 0.1"), Some(true))
        );
        assert_eq!(
            warm.what,
            "node warm p50, ready-clone hits (33% of the requests) / `node -e` p50"
        );
        // Over all requests (on-demand misses included): listed, no target.
        let all = r("warm_p50_over_node_e_p50");
        let close = |v: Option<f64>, want: f64| v.is_some_and(|v| (v - want).abs() < 1e-9);
        assert!(close(all.value, 0.102) && all.target.is_none(), "{all:?}");
        assert!(close(r("warm_p50_over_crun_p50").value, 0.0816));
        assert_eq!(r("ondemand_p50_over_crun_p50").value, Some(0.06));
        assert_eq!(r("crun_p50_over_node_e_p50").value, Some(1.25));
        assert_eq!(r("heavy_warm_p50_over_node_e_p50").value, Some(0.005));
        // The heavy ratios carry no target; unmeasured scenarios no value.
        assert_eq!(r("heavy_warm_p50_over_node_e_p50").target, None);
        assert_eq!(r("heavy_cold_p50_over_crun_p50").value, None);
        let tput = r("tput_over_python_tput");
        assert_eq!((tput.value, tput.met), (Some(0.6), Some(true)));
        let keys: Vec<&str> = b.ratios.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), 13, "{keys:?}");
    }

    #[test]
    fn ratios_without_baselines_are_empty_not_zero() {
        let mut b = bench();
        b.baselines.clear();
        b.ratios = ratios(&b);
        for key in ["warm_p50_over_node_e_p50", "warm_ready_p50_over_node_e_p50"] {
            let warm = b.ratios.get(key).expect("row");
            assert_eq!((warm.value, warm.met), (None, None), "{key}");
        }
    }

    #[test]
    fn errors_count_scenarios_and_throughput() {
        assert_eq!(bench().error_count(), 3);
    }

    #[test]
    fn markdown_has_baseline_rows_and_ratios() {
        let md = markdown(&bench());
        assert!(md.contains("| no-op: crun run | 5 | 25.000 |"), "{md}");
        assert!(md.contains("| no-op: runc run | not installed |"), "{md}");
        assert!(
            md.contains("| no-op: host exec (`node -e`) | 5 | 20.000 |"),
            "{md}"
        );
        assert!(md.contains("| heavy: crun run | 5 | 250.000 |"), "{md}");
        assert!(md.contains("**runc run:** runc run: not installed"), "{md}");
        assert!(
            md.contains("| node warm p50, ready-clone hits (33% of the requests) / `node -e` p50 | 0.100 | <= 0.1: met |"),
            "{md}"
        );
        assert!(
            md.contains("| node warm p50 / `crun run` node p50 | 0.082 |  |"),
            "{md}"
        );
        assert!(md.contains("| node no-op | 60 inv/s (2 errors) |"), "{md}");
        assert!(md.contains("| idle ready sandbox PSS / USS, python | 1.0 MiB / - |"));
        assert!(md.contains("node cold: 1 requests failed"), "{md}");
    }

    #[test]
    fn chart_series_are_scenarios_then_crun_and_node_e() {
        let b = bench();
        let names: Vec<String> = b.cdf_series().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "node warm",
                "node on-demand",
                "node cold",
                "node heavy warm",
                "crun run, no-op",
                "node -e, no-op",
                "crun run, heavy",
                "node -e, heavy"
            ]
        );
    }
}
