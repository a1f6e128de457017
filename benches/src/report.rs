//! The report: Markdown tables for people, the same data as JSON for
//! scripts, with the machine and the exact command that produced them.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::stats::{Ordered, ScenarioSummary};

/// Where the numbers were measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub nproc: usize,
    /// `uname -r`.
    pub kernel: String,
    /// `MemTotal` from /proc/meminfo.
    pub mem_total_kib: Option<u64>,
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
        Self {
            nproc,
            kernel,
            mem_total_kib,
        }
    }

    fn describe(&self) -> String {
        let mem = match self.mem_total_kib {
            Some(kib) => format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)),
            None => "unknown".to_owned(),
        };
        format!("nproc {}, kernel {}, memory {mem}", self.nproc, self.kernel)
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
}

impl Report {
    /// Total failed requests over all scenarios.
    pub fn error_count(&self) -> u64 {
        self.scenarios.0.iter().map(|(_, s)| s.error_count()).sum()
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let mut json = serde_json::to_string_pretty(self).context("serializing the report")?;
        json.push('\n');
        fs::write(path, json).with_context(|| format!("writing {}", path.display()))
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
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
        let _ = write!(
            out,
            "\nmachine: {}  \ndaemon: {}  \ncommand: `{}`\n",
            self.machine.describe(),
            self.target,
            self.command
        );
        out
    }
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
fn notes(scenarios: &Ordered<ScenarioSummary>) -> Vec<String> {
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
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::stats::{Percentiles, PhaseSummary};

    fn summary(n: u64, kinds: &[(&str, u64)]) -> ScenarioSummary {
        ScenarioSummary {
            latency: Percentiles {
                n,
                p50_ms: 0.5,
                p90_ms: 0.9126,
                p99_ms: 2.0,
                max_ms: 12.3456,
                mean_ms: 0.61,
            },
            expected_start: "ready-clone".to_owned(),
            start_kinds: kinds.iter().map(|(k, c)| ((*k).to_owned(), *c)).collect(),
            phases: Ordered(vec![
                (
                    "queue".to_owned(),
                    PhaseSummary {
                        n,
                        p50_ms: 0.012,
                        p99_ms: 0.05,
                    },
                ),
                (
                    "total".to_owned(),
                    PhaseSummary {
                        n,
                        p50_ms: 0.4,
                        p99_ms: 1.0,
                    },
                ),
            ]),
            errors: BTreeMap::new(),
            reconnects: 0,
        }
    }

    #[test]
    fn latency_table_uses_three_decimals() {
        let scenarios = Ordered(vec![
            ("warm".to_owned(), summary(2000, &[("ready-clone", 2000)])),
            ("cold".to_owned(), summary(0, &[])),
        ]);
        let table = latency_table(&scenarios);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| scenario | n | p50 | p90 | p99 | max | mean | start kinds |"
        );
        assert_eq!(
            lines[2],
            "| warm | 2000 | 0.500 | 0.913 | 2.000 | 12.346 | 0.610 | ready-clone: 2000 |"
        );
        assert_eq!(lines[3], "| cold | 0 | - | - | - | - | - | - |");
    }

    #[test]
    fn phase_table_lists_phases_in_order() {
        let table = phase_table(&summary(3, &[]));
        assert_eq!(
            table,
            "| phase | n | p50 | p99 |\n|---|--:|--:|--:|\n\
             | queue | 3 | 0.012 | 0.050 |\n| total | 3 | 0.400 | 1.000 |\n"
        );
    }

    #[test]
    fn markdown_flags_unexpected_starts_and_errors() {
        let mut warm = summary(10, &[("ready-clone", 8), ("on-demand-clone", 2)]);
        warm.errors.insert("503 PoolExhausted".to_owned(), 1);
        let report = Report {
            command: "fnhost-bench --warm 10".to_owned(),
            machine: Machine {
                nproc: 2,
                kernel: "6.18.0".to_owned(),
                mem_total_kib: Some(24 * 1024 * 1024),
            },
            target: "http://127.0.0.1:1".to_owned(),
            scenarios: Ordered(vec![("warm".to_owned(), warm)]),
        };
        let md = report.to_markdown();
        assert!(
            md.contains(
                "warm: 2 of 10 requests were not served as ready-clone (on-demand-clone: 2)"
            ),
            "{md}"
        );
        assert!(
            md.contains("warm: 1 requests failed (503 PoolExhausted: 1)"),
            "{md}"
        );
        assert!(md.contains("### warm: server-timing phases (ms)"), "{md}");
        assert!(
            md.contains("machine: nproc 2, kernel 6.18.0, memory 24.0 GiB"),
            "{md}"
        );
        assert!(md.contains("command: `fnhost-bench --warm 10`"), "{md}");
        assert_eq!(report.error_count(), 1);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let report = Report {
            command: "x".to_owned(),
            machine: Machine {
                nproc: 1,
                kernel: "k".to_owned(),
                mem_total_kib: None,
            },
            target: "t".to_owned(),
            scenarios: Ordered(vec![("warm".to_owned(), summary(5, &[("ready-clone", 5)]))]),
        };
        let v = serde_json::to_value(&report).expect("serializable");
        let warm = &v["scenarios"]["warm"];
        for key in ["n", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms"] {
            assert!(warm[key].is_number(), "{key} in {warm}");
        }
        assert_eq!(warm["start_kinds"]["ready-clone"], 5);
        assert_eq!(warm["phases"]["queue"]["p50_ms"], 0.012);
        assert_eq!(warm["phases"]["total"]["p99_ms"], 1.0);
    }

    #[test]
    fn parses_meminfo_and_quotes_arguments() {
        let meminfo = "MemFree:  100 kB\nMemTotal:       24576000 kB\n";
        assert_eq!(parse_mem_total_kib(meminfo), Some(24_576_000));
        assert_eq!(parse_mem_total_kib("nothing"), None);
        assert_eq!(shell_quote("--json"), "--json");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
