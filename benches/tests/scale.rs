//! CI-sized run of the scale suite: 150 distinct functions, a 15 s trace
//! replay. Asserts correctness (every function answered with its own code,
//! no failed request), a bounded /metrics, and that removing every
//! function (config reload) and stopping the daemon leave no process,
//! cgroup, mount or extra descriptor behind; never asserts on time. Needs
//! root and `fnhost` (with its shim) next to the harness binary.

use std::fs;
use std::process::Command;

mod support;

const TEST: &str = "many_functions_answer_and_leave_nothing_behind";
/// Above server.function_metrics_max (50): the summed metrics are exercised.
const FUNCTIONS: u64 = 150;

#[test]
fn many_functions_answer_and_leave_nothing_behind() {
    let Some(fnhost) = support::fnhost_beside_harness(TEST) else {
        return;
    };
    let out = tempfile::tempdir().expect("tempdir");
    let child = Command::new(env!("CARGO_BIN_EXE_fnhost-bench"))
        .arg("scale")
        .args(["--scale-functions", &FUNCTIONS.to_string()])
        .args(["--scale-seconds", "15", "--scale-rps", "5"])
        .args(["--scale-hot-requests", "20", "--scale-budget-mib", "2048"])
        .arg("--fnhost")
        .arg(&fnhost)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("the harness starts");
    let stdout = String::from_utf8_lossy(&child.stdout);
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(
        child.status.success(),
        "harness failed ({}):\n{stdout}\n{stderr}",
        child.status
    );
    assert!(stdout.contains("## Scale: 150 functions"), "{stdout}");
    let text = fs::read_to_string(out.path().join("scale.json")).expect("scale.json written");
    let r: serde_json::Value = serde_json::from_str(&text).expect("scale.json parses");

    assert_eq!(r["first_touch"]["ok"], FUNCTIONS, "{stdout}");
    for phase in [
        "first_touch",
        "replay",
        "hot_one_function_host",
        "hot_many_function_host",
    ] {
        assert_eq!(r[phase]["errors"], 0, "{phase}: {stdout}");
    }
    assert!(
        r["replay"]["ok"].as_u64().expect("replay ok") > 0,
        "{stdout}"
    );
    assert!(
        r["first_touch"]["by_start"]["cold-start"]["n"]
            .as_u64()
            .is_some(),
        "{stdout}"
    );
    assert!(r["hot_p50_ratio"].is_number(), "{stdout}");
    // The slowest replay requests are broken down by the daemon's phases.
    let tails = r["replay"]["tails"].as_object().expect("replay tails");
    assert!(!tails.is_empty(), "{stdout}");
    for (kind, tail) in tails {
        assert!(tail["phase_mean_ms"]["total"].is_number(), "{kind}: {tail}");
    }
    assert!(stdout.contains("The slowest 1% of each kind"), "{stdout}");
    // Beyond server.function_metrics_max only fnhost_invocations_total is
    // per function: well under 2 KB a function.
    let metrics = r["metrics_bytes_at_end"].as_u64().expect("metrics size");
    assert!(metrics < FUNCTIONS * 1024, "{metrics} bytes of /metrics");

    let back = &r["returned"];
    assert!(
        back["drain_seconds"].is_number(),
        "not drained after the reload: {back}"
    );
    assert_eq!(back["processes_after_removal"], 0, "{back}");
    assert_eq!(back["function_cgroups_after_removal"], 0, "{back}");
    let fds_start = back["daemon_fds_after_start"].as_u64().expect("fds");
    let fds_end = back["daemon_fds_after_removal"].as_u64().expect("fds");
    assert!(
        fds_end <= fds_start,
        "descriptors {fds_start} after start, {fds_end} after removal"
    );
    assert_eq!(back["cgroup_dirs_left"], 0, "{back}");
    assert_eq!(back["mounts_left"], false, "{back}");
    let samples = r["samples"].as_array().expect("samples");
    assert!(samples.len() >= 2, "{back}");
}
