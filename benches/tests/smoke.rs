//! Smoke test of the harness: `all` (every suite but scale) with tiny
//! counts against a real daemon, baselines, hibernation, the floor, a small
//! import-heavy function and the node suite included. Asserts that the run
//! completes, that its
//! JSON and charts parse, and that it leaves no cgroup or mount behind;
//! never asserts on time. Needs root and `fnhost` (with its shim) next to
//! the harness binary (`cargo build --workspace --all-targets`).

use std::fs;
use std::process::Command;

mod support;

use fnhost_testkit::{cgroup_dirs, in_ci};

const TEST: &str = "every_suite_runs_with_tiny_counts";

#[test]
fn every_suite_runs_with_tiny_counts() {
    let Some(fnhost) = support::fnhost_beside_harness(TEST) else {
        return;
    };
    let out = tempfile::tempdir().expect("tempdir");
    let json = out.path().join("bench.json");
    let child = Command::new(env!("CARGO_BIN_EXE_fnhost-bench"))
        .arg("all")
        .args([
            "--warm",
            "5",
            "--ondemand",
            "3",
            "--cold",
            "2",
            "--warmup",
            "2",
        ])
        .args(["--baseline-runs", "2", "--duration", "0.3"])
        .args(["--churn-clients", "1,2", "--concurrency", "1,4"])
        .args(["--density-clones", "4"])
        .args(["--hibernate-cycles", "2", "--budget-mib", "256"])
        .args(["--share-copies", "3"])
        .args(["--primitive-runs", "3", "--heavy-mib", "4"])
        .arg("--fnhost")
        .arg(&fnhost)
        .arg("--out")
        .arg(out.path())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("the harness starts");
    let stdout = String::from_utf8_lossy(&child.stdout);
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(
        child.status.success(),
        "harness failed ({}):\n{stdout}\n{stderr}",
        child.status
    );

    assert!(stdout.contains("## fnhost vs baselines"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&json).expect("json written"))
            .expect("json parses");
    for scenario in [
        "warm",
        "ondemand",
        "cold",
        "heavy-warm",
        "heavy-ondemand",
        "heavy-cold",
    ] {
        assert!(
            report["scenarios"][scenario]["p50_ms"].is_number(),
            "{scenario}: {report}"
        );
    }
    let baselines = report["baselines"].as_array().expect("baselines listed");
    assert_eq!(names(baselines), BASELINES);
    let in_ci = in_ci();
    for b in baselines {
        let status = b["status"].as_str().expect("status");
        // CI installs every baseline (scripts/install-deps.sh), so there
        // each must have run; elsewhere "not installed" is a valid outcome.
        if in_ci || status != "not_installed" {
            assert_eq!(status, "ok", "{b}");
            assert!(b["p50_ms"].is_number(), "{b}");
        }
    }
    assert_eq!(report["churn"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["throughput"].as_array().map(Vec::len), Some(2));
    assert!(report["phase_metrics"]["noop"]["clone"]["count"].is_number());
    assert!(report["density"]["clone_pss_kib_mean"].is_number());
    // The workspace build puts the native example next to the bench binary.
    assert!(
        report["density_native"]["clone_pss_kib_mean"].is_number(),
        "native density missing: {report}"
    );
    check_heavy(&report["heavy"]);
    assert!(stdout.contains("## Import-heavy function"), "{stdout}");
    check_hibernation(&report["hibernation"]);
    assert!(stdout.contains("## Hibernation"), "{stdout}");
    check_floor(&report["floor"]);
    assert!(stdout.contains("## The floor"), "{stdout}");
    // CI installs nodejs; elsewhere `all` may skip the suite, and says so.
    let node_ran = !report["node"].is_null();
    if in_ci || node_ran {
        check_node(&report["node"], in_ci);
        assert!(stdout.contains("## Node.js"), "{stdout}");
    } else {
        assert!(stderr.contains("node suite skipped"), "{stderr}");
    }
    for chart in [
        "latency-cdf.svg",
        "phases.svg",
        "throughput.svg",
        "density.svg",
        "hibernation-memory.svg",
        "hibernation-wake.svg",
        "node-latency-cdf.svg",
    ] {
        if chart.starts_with("node") && !node_ran {
            continue;
        }
        let svg = fs::read_to_string(out.path().join(chart)).expect("chart written");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }

    // Nothing left behind: the daemons' and the runtimes' cgroups, and the
    // baseline root's bind mounts.
    let pid = child_pid_from(&stderr);
    for name in [
        format!("fnhost-bench-{pid}"),
        format!("fnhost-bench-baseline-{pid}"),
        format!("fnhost-bench-floor-{pid}"),
        format!("fnhost-bench-node-{pid}"),
    ] {
        let left = cgroup_dirs(&name);
        assert!(left.is_empty(), "cgroups left behind: {left:?}");
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains("fnhost-bench-baseline-"),
        "baseline mounts leaked:\n{mounts}"
    );
}

/// The import-heavy function ran beside the no-op: its heap, both zygotes'
/// RSS, the latency ratios and one throughput row per concurrency.
fn check_heavy(h: &serde_json::Value) {
    assert_eq!(h["heap_mib"], 4, "{h}");
    assert!(h["noop_zygote_rss_kib"].is_number(), "{h}");
    assert!(h["heavy_zygote_rss_kib"].is_number(), "{h}");
    for key in ["warm_p50_ratio", "ondemand_p50_ratio", "cold_p50_ratio"] {
        assert!(h[key].is_number(), "{key}: {h}");
    }
    assert_eq!(h["throughput"].as_array().map(Vec::len), Some(2), "{h}");
    let ratios = h["throughput_ratios"]
        .as_array()
        .expect("throughput ratios");
    let clients: Vec<u64> = ratios
        .iter()
        .map(|r| r["clients"].as_u64().expect("clients"))
        .collect();
    assert_eq!(clients, [1, 4], "{h}");
    for r in ratios {
        assert!(
            r["heavy_rps"].is_number() && r["noop_rps"].is_number(),
            "{r}"
        );
    }
}

/// Every baseline, in report order.
const BASELINES: [&str; 4] = ["crun run", "runc run", "bwrap --unshare-all", "host exec"];

/// The `name`s of a report's baseline list.
fn names(baselines: &[serde_json::Value]) -> Vec<&str> {
    baselines
        .iter()
        .map(|b| b["name"].as_str().expect("name"))
        .collect()
}

/// The node suite ran its baselines for both functions (`crun run` at
/// least, or said how to install it), its six scenarios and its three
/// throughput runs, and computed the ratios against the targets.
fn check_node(n: &serde_json::Value, in_ci: bool) {
    for key in ["baselines", "heavy_baselines"] {
        let baselines = n[key].as_array().expect("node baselines listed");
        assert_eq!(names(baselines), BASELINES, "{n}");
        for b in baselines {
            let status = b["status"].as_str().expect("status");
            if in_ci || status != "not_installed" || b["name"] == "host exec" {
                assert_eq!(status, "ok", "{b}");
                assert_eq!(b["n"], 2, "{b}");
            } else {
                assert!(b["detail"].as_str().is_some(), "{b}");
            }
        }
    }
    let scenarios = &n["scenarios"];
    for label in [
        "node warm",
        "node on-demand",
        "node cold",
        "node heavy warm",
        "node heavy on-demand",
        "node heavy cold",
    ] {
        let s = &scenarios[label];
        assert!(s["n"].as_u64() > Some(0), "{label}: {n}");
        assert_eq!(s["errors"], serde_json::json!({}), "{label}: {s}");
    }
    assert_eq!(scenarios["node warm"]["n"], 5, "{n}");
    for key in ["node_tput", "node_heavy_tput", "python_tput"] {
        assert_eq!(n[key]["clients"], 4, "{key}: {n}");
        assert!(n[key]["ok"].as_u64() > Some(0), "{key}: {n}");
    }
    let ratios = &n["ratios"];
    for key in [
        "warm_p50_over_node_e_p50",
        "warm_p50_over_crun_p50",
        "heavy_warm_p50_over_node_e_p50",
        "tput_over_python_tput",
    ] {
        if key.contains("crun") && n["baselines"][0]["status"] != "ok" {
            continue;
        }
        assert!(ratios[key]["value"].is_number(), "{key}: {ratios}");
    }
    // Whether any warm request found a ready clone depends on the refill's
    // pace: the row must be there, its value may be null.
    assert!(
        ratios.get("warm_ready_p50_over_node_e_p50").is_some(),
        "{ratios}"
    );
    assert!(n["ready_pss_kib"][0].is_number(), "{n}");
}

/// The hibernation suite ran every function: two timed wake-ups each (a
/// wrong `x-fnhost-start` would have failed the run), and a memory sample
/// of each function asleep and awake.
fn check_hibernation(h: &serde_json::Value) {
    assert!(h["failure"].is_null(), "{h}");
    // Three copies slept and their snapshots were compared.
    let sharing = &h["sharing"];
    assert_eq!(sharing["snapshots"], 3, "{h}");
    assert!(sharing["data_pages"].as_u64().unwrap_or(0) > 0, "{sharing}");
    assert!(
        sharing["distinct_pages"].as_u64() <= sharing["data_pages"].as_u64(),
        "{sharing}"
    );
    // They slept against one shared base and mapped pages from it.
    assert_eq!(sharing["bases"], 1, "{sharing}");
    assert!(
        sharing["shared_bytes"].as_u64().unwrap_or(0) > 0,
        "{sharing}"
    );
    // And each woke intact from pages of both files.
    assert_eq!(sharing["wake"]["n"], 3, "{sharing}");
    assert_eq!(sharing["wake_failures"], serde_json::json!([]), "{sharing}");
    let functions = h["functions"].as_array().expect("functions listed");
    let names: Vec<&str> = functions
        .iter()
        .map(|f| f["function"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "hib-kept",
            "hib-snap",
            "hib-snap-noprefetch",
            "hib-reclaim",
            "hib-warm",
            "hib-heavy",
            "hib-heavy-warm"
        ]
    );
    for f in functions {
        let inv = &f["invocations"];
        assert_eq!(inv["n"], 2, "{f}");
        assert!(inv["p50_ms"].is_number(), "{f}");
        assert!(f["warm"]["zygote"]["pss_kib"].is_number(), "{f}");
        if f["mode"] == "never" {
            // Never hibernated, so never woken. Whether each request finds
            // a ready clone depends on how fast the pool refills between
            // them (timing), so the kind is not asserted beyond that.
            assert!(inv["start_kinds"]["wake"].is_null(), "{f}");
            continue;
        }
        assert_eq!(inv["start_kinds"]["wake"], 2, "{f}");
        assert!(inv["phases"]["wake"]["p50_ms"].is_number(), "{f}");
        assert_eq!(f["hibernated"]["hibernated"], 1, "{f}");
        assert!(f["daemon"]["wakes_ok"].as_u64() >= Some(3), "{f}");
    }
    // Two bases for each of the five hibernating functions (heavy included).
    assert_eq!(h["budget"].as_array().map(Vec::len), Some(10), "{h}");
}

/// The floor ran with 1 and 2 workers (5 sequential requests each, the
/// throughput levels), measured every kernel primitive, and set fnhost's
/// numbers of the run beside it.
fn check_floor(f: &serde_json::Value) {
    assert_eq!(f["keep_alive"], false, "{f}");
    let servers = f["servers"].as_array().expect("floor servers listed");
    let workers: Vec<u64> = servers
        .iter()
        .map(|s| s["workers"].as_u64().expect("workers"))
        .collect();
    assert_eq!(workers, [1, 2], "{f}");
    for s in servers {
        assert_eq!(s["sequential"]["n"], 5, "{s}");
        assert_eq!(s["sequential_errors"], 0, "{s}");
        assert_eq!(s["throughput"].as_array().map(Vec::len), Some(2), "{s}");
    }
    let primitives = &f["primitives"];
    // The warm zygote of the latency suite's daemon set the fork heap.
    assert_eq!(
        primitives["fork_heap_source"], "the warm zygote's RSS",
        "{f}"
    );
    let rows = primitives["rows"].as_array().expect("primitives listed");
    assert_eq!(rows.len(), 8, "{primitives}");
    for row in rows {
        assert!(row["error"].is_null(), "{row}");
        assert_eq!(row["n"], 3, "{row}");
        assert!(row["p99_ms"].is_number(), "{row}");
    }
    let ratios = &f["ratios"];
    assert!(ratios["warm_p50_over_floor_p50"].is_number(), "{f}");
    assert!(ratios["warm_p99_over_floor_p50"].is_number(), "{f}");
    let tput = ratios["throughput"].as_array().expect("throughput ratios");
    assert_eq!(tput.len(), 2, "{ratios}");
    for t in tput {
        assert!(
            t["vs_1_worker"].is_number() && t["vs_2_workers"].is_number(),
            "{t}"
        );
    }
}

/// The harness's pid, from its "started ... (pid N)" line's parent: the
/// cgroups it names are `fnhost-bench-<harness pid>`, printed as `harness pid`.
fn child_pid_from(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("fnhost-bench: harness pid "))
        .expect("the harness prints its pid")
        .trim()
        .to_owned()
}
