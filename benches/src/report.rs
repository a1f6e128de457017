//! The report: Markdown tables for people, the same data as JSON for
//! scripts, with the machine and the exact command that produced them.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::baseline::{BaselineSummary, Status};
use crate::density::{self, Density};
use crate::floor::{self, Floor};
use crate::heavy::{self, Heavy};
use crate::hibernation::{self, Hibernation};
use crate::load::{self, LoadLevel};
use crate::metrics::{PhaseMetrics, FAULTS_INVOCATION_PHASE, FAULTS_READY_PHASE, ZYGOTE_PHASE};
use crate::node::{self, NodeBench};
use crate::stats::{Ordered, Percentiles, ScenarioSummary};

/// /metrics phases in report order, with what they stand for.
const METRIC_PHASES: &[(&str, &str)] = &[
    ("queue", "queue (wait for a slot)"),
    (ZYGOTE_PHASE, "runtime start + import (zygote start)"),
    ("clone", "namespaces + fork (clone in zygote)"),
    (
        "cgroup_attach",
        "cgroup attach (by the daemon, beside setup)",
    ),
    ("user_namespace", "user namespace id maps"),
    ("mount", "mounts (root overlay, /proc, tmpfs)"),
    ("network", "loopback up (own network namespace)"),
    ("drop_privileges", "drop privileges"),
    ("seccomp", "seccomp clone stage"),
    ("handler", "handler"),
    ("exchange", "response (exchange)"),
    ("dispatch", "dispatcher"),
    ("invoke_total", "invoke total (server side)"),
    ("teardown", "teardown (after the response)"),
    (
        FAULTS_READY_PHASE,
        "page faults before the request (count, not ms)",
    ),
    (
        FAULTS_INVOCATION_PHASE,
        "page faults from request to answer (count, not ms)",
    ),
];

/// Where the numbers were measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub nproc: usize,
    /// `uname -r`.
    pub kernel: String,
    /// `MemTotal` from /proc/meminfo.
    pub mem_total_kib: Option<u64>,
    /// 1-minute load average when the run started: on a shared 2-core
    /// machine, anything much above 1 means the numbers include contention.
    pub loadavg_1m: Option<f64>,
}

impl Machine {
    pub fn detect() -> Self {
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        // The same string `uname -r` prints.
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let mem_total_kib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| parse_mem_total_kib(&s));
        let loadavg_1m = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok());
        Self {
            nproc,
            kernel,
            mem_total_kib,
            loadavg_1m,
        }
    }

    fn describe(&self) -> String {
        let mem = match self.mem_total_kib {
            Some(kib) => format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)),
            None => "unknown".to_owned(),
        };
        let load = match self.loadavg_1m {
            Some(l) => format!(", load average {l:.2} at start"),
            None => String::new(),
        };
        format!(
            "nproc {}, kernel {}, memory {mem}{load}",
            self.nproc, self.kernel
        )
    }
}

fn parse_mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// This process's command line, quoted so that it can be pasted into a shell.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// A complete benchmark run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub command: String,
    pub machine: Machine,
    /// The daemon measured.
    pub target: String,
    pub scenarios: Ordered<ScenarioSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baselines: Option<Vec<BaselineSummary>>,
    /// /metrics phase histograms by function after the latency suite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase_metrics: Option<PhaseMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churn: Option<Vec<LoadLevel>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Vec<LoadLevel>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub density: Option<Density>,
    /// The same measurement for a native Rust function (fnhost-sdk).
    pub density_native: Option<Density>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hibernation: Option<Hibernation>,
    /// The bare fork-per-request server, the kernel primitives, and
    /// fnhost's numbers of this run as ratios to them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<Floor>,
    /// The import-heavy function beside the no-op: its throughput levels,
    /// zygote RSS and ratios (its latency rows are in `scenarios`, labelled
    /// `heavy-warm`, `heavy-ondemand`, `heavy-cold`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heavy: Option<Heavy>,
    /// Node.js functions beside `node` started on the host and under the
    /// runtimes (`fnhost-bench node`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeBench>,
}

impl Report {
    /// Total failed requests over all scenarios, the floor's sequential
    /// requests and the node suite's requests (latency and throughput),
    /// plus the hibernation suite's failed wake-ups and zygotes that never
    /// slept.
    pub fn error_count(&self) -> u64 {
        self.scenarios
            .0
            .iter()
            .map(|(_, s)| s.error_count())
            .sum::<u64>()
            + self
                .hibernation
                .as_ref()
                .map_or(0, Hibernation::error_count)
            + self.floor.as_ref().map_or(0, Floor::error_count)
            + self.node.as_ref().map_or(0, NodeBench::error_count)
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_string_pretty(self).context("serializing the report")?;
        json.push('\n');
        fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }

    /// A report with no measurements yet.
    pub fn new(command: String, machine: Machine, target: String) -> Self {
        Self {
            command,
            machine,
            target,
            scenarios: Ordered::default(),
            baselines: None,
            phase_metrics: None,
            churn: None,
            throughput: None,
            density: None,
            density_native: None,
            hibernation: None,
            floor: None,
            heavy: None,
            node: None,
        }
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        if let Some(baselines) = &self.baselines {
            out.push_str(&side_by_side(&self.scenarios, baselines));
        }
        if self.scenarios.0.is_empty() {
            out.push_str(&self.rest_markdown());
            return out;
        }
        out.push_str("## fnhost invocation latency\n\n");
        out.push_str(
            "Client-side latency in ms (request sent → body read), sequential requests over \
             one keep-alive HTTP/1 connection on loopback; failed requests are excluded.\n\n",
        );
        out.push_str(&latency_table(&self.scenarios));
        let notes = notes(&self.scenarios);
        if !notes.is_empty() {
            out.push('\n');
            for note in notes {
                let _ = writeln!(out, "- **note:** {note}");
            }
        }
        for (label, summary) in &self.scenarios.0 {
            if summary.phases.0.is_empty() {
                continue;
            }
            let _ = write!(out, "\n### {label}: server-timing phases (ms)\n\n");
            out.push_str(&phase_table(summary));
        }
        out.push_str(&self.rest_markdown());
        out
    }

    /// Phases from /metrics, churn, throughput, density, hibernation, the
    /// floor, node, machine, command.
    fn rest_markdown(&self) -> String {
        let mut out = String::new();
        if let Some(phases) = &self.phase_metrics {
            out.push_str(&metric_phase_table(phases, &self.scenarios));
        }
        if let Some(churn) = &self.churn {
            out.push_str(
                "\n## Churn: sandboxes created and destroyed per second\n\n\
                 Closed loop, every request an on-demand clone (create) whose sandbox is torn \
                 down after the response (destroy), like OpenLambda's sock_churn.\n\n",
            );
            out.push_str(&load::markdown(churn, true));
        }
        if let Some(tput) = &self.throughput {
            out.push_str(
                "\n## Throughput: isolated invocations per second\n\n\
                 Closed loop with K keep-alive connections; every invocation runs in a fresh \
                 clone (pre-forked ready clones, refilled in the background, then on-demand).\n\n",
            );
            out.push_str(&load::markdown(tput, false));
        }
        if let Some(h) = &self.heavy {
            out.push_str(&heavy::markdown(h));
        }
        if let Some(d) = &self.density {
            out.push_str("\n## Density: memory per zygote and per idle ready clone (Python)\n\n");
            out.push_str(&density::markdown(d));
        }
        if let Some(d) = &self.density_native {
            out.push_str("\n## Density: native Rust function (fnhost-sdk)\n\n");
            out.push_str(&density::markdown(d));
        }
        if let Some(h) = &self.hibernation {
            out.push_str("\n## Hibernation: idle zygotes giving their memory back\n\n");
            out.push_str(&hibernation::markdown(h, &self.comparison_rows()));
        }
        if let Some(f) = &self.floor {
            out.push_str(&floor::markdown(f));
        }
        if let Some(n) = &self.node {
            out.push_str(&node::markdown(n));
        }
        let _ = write!(
            out,
            "\nmachine: {}  \ndaemon: {}  \ncommand: `{}`\n",
            self.machine.describe(),
            self.target,
            self.command
        );
        out
    }

    /// Latency rows of this run to show beside the wake-ups: fnhost's
    /// scenarios and the baselines that ran.
    fn comparison_rows(&self) -> Vec<(String, Percentiles)> {
        let scenarios = self
            .scenarios
            .0
            .iter()
            .filter(|(_, s)| s.latency.n > 0)
            .map(|(label, s)| (format!("fnhost {label} ({})", s.expected_start), s.latency));
        let baselines = self
            .baselines
            .iter()
            .flatten()
            .filter_map(|b| b.latency.map(|l| (b.name.clone(), l)));
        scenarios.chain(baselines).collect()
    }
}

/// fnhost's scenarios and the baselines in one table, then the ratios.
pub fn side_by_side(scenarios: &Ordered<ScenarioSummary>, baselines: &[BaselineSummary]) -> String {
    let mut out = String::from(
        "## fnhost vs baselines: the same no-op Python function on the same root\n\n\
         fnhost rows: HTTP round trip on loopback (request sent → body read). Baseline rows: \
         start-to-exit of the command running `python3 -c` that imports the handler and calls \
         it once. Milliseconds.\n\n\
         | what | n | p50 | p90 | p99 | max |\n|---|--:|--:|--:|--:|--:|\n",
    );
    for (label, s) in &scenarios.0 {
        let l = &s.latency;
        if l.n == 0 {
            let _ = writeln!(out, "| fnhost {label} | 0 | - | - | - | - |");
            continue;
        }
        let _ = writeln!(
            out,
            "| fnhost {label} ({}) | {} | {} | {} | {} | {} |",
            s.expected_start,
            l.n,
            ms(l.p50_ms),
            ms(l.p90_ms),
            ms(l.p99_ms),
            ms(l.max_ms)
        );
    }
    for b in baselines {
        out.push_str(&baseline_row(&b.name, b));
    }
    let usable: Vec<(&BaselineSummary, f64, f64)> = baselines
        .iter()
        .filter_map(|b| b.latency.map(|l| (b, l.p50_ms, l.p99_ms)))
        .collect();
    if !usable.is_empty() && scenarios.0.iter().any(|(_, s)| s.latency.n > 0) {
        out.push_str(
            "\n### Ratios: baseline time ÷ fnhost time (> 1: fnhost is that many times faster)\n\n\
             Each cell: p50 ratio (p99 ratio).\n\n| fnhost |",
        );
        for (b, _, _) in &usable {
            let _ = write!(out, " vs {} |", b.name);
        }
        out.push_str("\n|---|");
        out.push_str(&"--:|".repeat(usable.len()));
        out.push('\n');
        for (label, s) in scenarios.0.iter().filter(|(_, s)| s.latency.n > 0) {
            let _ = write!(out, "| {label} |");
            for (_, p50, p99) in &usable {
                let _ = write!(
                    out,
                    " {} ({}) |",
                    ratio(*p50, s.latency.p50_ms),
                    ratio(*p99, s.latency.p99_ms)
                );
            }
            out.push('\n');
        }
    }
    for b in baselines.iter().filter(|b| b.status != Status::Ok) {
        if let Some(detail) = &b.detail {
            let _ = writeln!(out, "\n- **{}:** {detail}", b.name);
        }
    }
    out.push('\n');
    out
}

/// One baseline as a `| what | n | p50 | p90 | p99 | max |` row labelled
/// `label`: its numbers, or "not installed" / "failed".
pub fn baseline_row(label: &str, b: &BaselineSummary) -> String {
    match (&b.latency, b.status) {
        (Some(l), Status::Ok) => format!(
            "| {label} | {} | {} | {} | {} | {} |\n",
            l.n,
            ms(l.p50_ms),
            ms(l.p90_ms),
            ms(l.p99_ms),
            ms(l.max_ms)
        ),
        (_, Status::NotInstalled) => format!("| {label} | not installed | - | - | - | - |\n"),
        _ => format!("| {label} | failed | - | - | - | - |\n"),
    }
}

/// `a ÷ b`, or `None` when `b` is not positive or `a` not finite.
pub fn div(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

/// A ratio as `0.47×`, or `-` when there is none.
pub fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}×"))
}

/// `36.0×`, or `-` when fnhost's time is zero.
pub fn ratio(baseline_ms: f64, fnhost_ms: f64) -> String {
    if fnhost_ms <= 0.0 {
        return "-".to_owned();
    }
    let r = baseline_ms / fnhost_ms;
    if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.2}×")
    }
}

/// The daemon's own phase histograms, one column pair per function.
fn metric_phase_table(phases: &PhaseMetrics, scenarios: &Ordered<ScenarioSummary>) -> String {
    let functions: Vec<(String, String)> = if scenarios.0.is_empty() {
        phases.keys().map(|f| (f.clone(), f.clone())).collect()
    } else {
        scenarios
            .0
            .iter()
            .filter(|(_, s)| s.latency.n > 0)
            .map(|(label, s)| (label.clone(), s.function.clone()))
            .collect()
    };
    let mut out = String::from(
        "\n## Where the time goes: the daemon's phase histograms (/metrics)\n\n\
         Estimated from Prometheus buckets (25 µs … 30 s; linear within a bucket), in ms: \
         p50 / p99, over every request to the function in this run (warm-up, churn and \
         background refills included; the on-demand function also serves the churn suite). \
         The zygote start of warm and on-demand functions happened once, at daemon start.\n\n\
         | phase |",
    );
    for (label, _) in &functions {
        let _ = write!(out, " {label} |");
    }
    out.push_str("\n|---|");
    out.push_str(&"--:|".repeat(functions.len()));
    out.push('\n');
    for (phase, description) in METRIC_PHASES {
        let cells: Vec<String> = functions
            .iter()
            .map(|(_, f)| match phases.get(f).and_then(|p| p.get(*phase)) {
                Some(m) => format!("{} / {}", ms(m.p50_ms), ms(m.p99_ms)),
                None => "-".to_owned(),
            })
            .collect();
        if cells.iter().all(|c| c == "-") {
            continue;
        }
        let _ = writeln!(out, "| {description} | {} |", cells.join(" | "));
    }
    out
}

fn ms(v: f64) -> String {
    format!("{v:.3}")
}

/// `ready-clone: 1990, on-demand-clone: 10`, or `-` when nothing succeeded.
fn start_kinds(summary: &ScenarioSummary) -> String {
    if summary.start_kinds.is_empty() {
        return "-".to_owned();
    }
    summary
        .start_kinds
        .iter()
        .map(|(kind, count)| format!("{kind}: {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn latency_table(scenarios: &Ordered<ScenarioSummary>) -> String {
    let mut out = String::from(
        "| scenario | n | p50 | p90 | p99 | max | mean | start kinds |\n\
         |---|--:|--:|--:|--:|--:|--:|---|\n",
    );
    for (label, s) in &scenarios.0 {
        let l = &s.latency;
        let cells = if l.n == 0 {
            vec!["-".to_owned(); 5]
        } else {
            [l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.mean_ms]
                .into_iter()
                .map(ms)
                .collect()
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} |",
            l.n,
            cells.join(" | "),
            start_kinds(s)
        );
    }
    out
}

pub fn phase_table(summary: &ScenarioSummary) -> String {
    let mut out = String::from("| phase | n | p50 | p99 |\n|---|--:|--:|--:|\n");
    for (name, p) in &summary.phases.0 {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            p.n,
            ms(p.p50_ms),
            ms(p.p99_ms)
        );
    }
    out
}

/// Everything that makes a scenario's numbers mean something other than
/// what its name says.
pub fn notes(scenarios: &Ordered<ScenarioSummary>) -> Vec<String> {
    let mut notes = Vec::new();
    for (label, s) in &scenarios.0 {
        let unexpected = s.unexpected_starts();
        if unexpected > 0 {
            let others: Vec<String> = s
                .start_kinds
                .iter()
                .filter(|(kind, _)| **kind != s.expected_start)
                .map(|(kind, count)| format!("{kind}: {count}"))
                .collect();
            notes.push(format!(
                "{label}: {unexpected} of {} requests were not served as {} ({}); \
                 its latencies mix start kinds",
                s.latency.n,
                s.expected_start,
                others.join(", ")
            ));
        }
        let errors = s.error_count();
        if errors > 0 {
            let kinds: Vec<String> = s.errors.iter().map(|(k, c)| format!("{k}: {c}")).collect();
            notes.push(format!(
                "{label}: {errors} requests failed ({}) and are not in the latency figures",
                kinds.join(", ")
            ));
        }
        if s.reconnects > 0 {
            notes.push(format!(
                "{label}: the keep-alive connection was re-established {} times",
                s.reconnects
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests;
