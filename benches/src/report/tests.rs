//! Tests of the report's Markdown and ratios.

use std::collections::BTreeMap;

use super::*;
use crate::stats::{Percentiles, PhaseSummary};

fn summary(n: u64, kinds: &[(&str, u64)]) -> ScenarioSummary {
    ScenarioSummary {
        function: "noop".to_owned(),
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
        latency_by_start: Default::default(),
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
        cdf_ms: Vec::new(),
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
    let mut report = Report::new(
        "fnhost-bench --warm 10".to_owned(),
        Machine {
            nproc: 2,
            kernel: "6.18.0".to_owned(),
            mem_total_kib: Some(24 * 1024 * 1024),
            loadavg_1m: None,
        },
        "http://127.0.0.1:1".to_owned(),
    );
    report.scenarios = Ordered(vec![("warm".to_owned(), warm)]);
    let md = report.to_markdown();
    assert!(
        md.contains("warm: 2 of 10 requests were not served as ready-clone (on-demand-clone: 2)"),
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
fn side_by_side_has_ratios_and_missing_baselines() {
    let scenarios = Ordered(vec![(
        "warm".to_owned(),
        summary(10, &[("ready-clone", 10)]),
    )]);
    let crun = BaselineSummary {
        name: "crun run".to_owned(),
        status: Status::Ok,
        latency: Some(Percentiles {
            n: 5,
            p50_ms: 36.0,
            p90_ms: 40.0,
            p99_ms: 50.0,
            max_ms: 50.0,
            mean_ms: 37.0,
        }),
        detail: None,
        cdf_ms: Vec::new(),
    };
    let runc = BaselineSummary {
        name: "runc run".to_owned(),
        status: Status::NotInstalled,
        latency: None,
        detail: Some("runc not installed".to_owned()),
        cdf_ms: Vec::new(),
    };
    let md = side_by_side(&scenarios, &[crun, runc]);
    assert!(md.contains("| runc run | not installed |"), "{md}");
    assert!(md.contains("| fnhost | vs crun run |"), "{md}");
    // 36 / 0.5 = 72, 50 / 2 = 25.
    assert!(md.contains("| warm | 72× (25×) |"), "{md}");
    assert!(md.contains("**runc run:** runc not installed"), "{md}");
    assert_eq!(ratio(1.0, 0.5), "2.00×");
    assert_eq!(ratio(1.0, 0.0), "-");
}

/// A report of a one-core machine with nothing measured yet.
fn empty_report() -> Report {
    Report::new(
        "x".to_owned(),
        Machine {
            nproc: 1,
            kernel: "k".to_owned(),
            mem_total_kib: None,
            loadavg_1m: None,
        },
        "t".to_owned(),
    )
}

#[test]
fn json_has_the_documented_shape() {
    let mut report = empty_report();
    report.scenarios = Ordered(vec![("warm".to_owned(), summary(5, &[("ready-clone", 5)]))]);
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

#[test]
fn node_section_counts_its_errors_and_serializes() {
    let mut report = empty_report();
    assert_eq!(report.error_count(), 0);
    report.node = Some(crate::node::tests::bench());
    assert_eq!(report.error_count(), 3);
    let md = report.to_markdown();
    assert!(md.contains("## Node.js"), "{md}");
    let v = serde_json::to_value(&report).expect("serializable");
    let node = &v["node"];
    assert_eq!(node["baselines"][0]["name"], "crun run");
    assert_eq!(node["baselines"][0]["status"], "ok");
    assert_eq!(node["scenarios"]["node warm"]["n"], 6);
    assert_eq!(
        node["scenarios"]["node warm"]["latency_by_start"]["ready-clone"]["n"],
        2
    );
    assert_eq!(
        node["ratios"]["warm_ready_p50_over_node_e_p50"]["met"],
        true
    );
    assert_eq!(node["python_tput"]["rps"], 100.0);
}
