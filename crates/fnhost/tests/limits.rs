//! Limits: the timeout and the memory limit kill the sandbox and name the
//! limit; the daemon and the pool carry on.

mod common;

use common::*;
use fnhost_sandbox::cgroup::names::{self, Member};

fn config() -> String {
    format!(
        r#"
[[functions]]
name = "sleep"
runtime = "python3"
code = "{probe}"
handler = "handler.sleep"
timeout_ms = 300

[[functions]]
name = "burn"
runtime = "python3"
code = "{probe}"
handler = "handler.burn"
cpu = 0.2

[[functions]]
name = "chatty"
runtime = "python3"
code = "{probe}"
handler = "handler.chatty"

[[functions]]
name = "allocate"
runtime = "python3"
code = "{probe}"
handler = "handler.allocate"
memory_mb = 64
"#,
        probe = probe_code().display()
    )
}

#[test]
fn timeout_kills_the_sandbox_and_names_the_limit() {
    if !require_root("timeout_kills_the_sandbox_and_names_the_limit") {
        return;
    }
    let daemon = Daemon::start(&config());
    let r = daemon.invoke("sleep", r#"{"seconds": 30}"#);
    assert_eq!(r.status, 504, "{}", r.text());
    let body = r.json();
    assert_eq!(body["errorType"], "Timeout");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("300 ms (timeout_ms)"),
        "{body}"
    );
    let r = daemon.invoke("sleep", r#"{"seconds": 0}"#);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn memory_limit_kills_the_sandbox_and_names_the_limit() {
    if !require_root("memory_limit_kills_the_sandbox_and_names_the_limit") {
        return;
    }
    let daemon = Daemon::start(&config());
    let r = daemon.invoke("allocate", r#"{"mb": 256}"#);
    assert_eq!(r.status, 502, "{}\n{}", r.text(), daemon.stderr());
    let body = r.json();
    assert_eq!(body["errorType"], "MemoryLimitExceeded", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("64 MiB (memory_mb)"),
        "{body}"
    );
    // Within the limit it works, and the daemon lives on.
    let r = daemon.invoke("allocate", r#"{"mb": 8}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["allocated_mb"], 8);
    assert_eq!(http(daemon.addr, "GET", "/healthz", b"").status, 200);
}

/// Sum of `nr_throttled` over the function's cgroups (cpu.stat, v1 cpu
/// controller or cgroup2).
fn throttled(cgroup_root: &str, function: &str) -> u64 {
    let mut total = 0;
    for base in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup"] {
        let Ok(dirs) = std::fs::read_dir(format!("{base}/{cgroup_root}")) else {
            continue;
        };
        for dir in dirs.flatten() {
            let path = dir.path();
            let ours = path
                .to_str()
                .and_then(names::parse)
                .is_some_and(|(f, _)| f == function);
            if !ours {
                continue;
            }
            let stat = std::fs::read_to_string(path.join("cpu.stat")).unwrap_or_default();
            total += stat
                .lines()
                .find_map(|l| l.strip_prefix("nr_throttled "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

#[test]
fn cpu_quota_holds_a_busy_loop_to_its_share() {
    if !require_root("cpu_quota_holds_a_busy_loop_to_its_share") {
        return;
    }
    let daemon = Daemon::start(&config());
    let before = throttled(&daemon.cgroup_root, "burn");
    let r = daemon.invoke("burn", r#"{"seconds": 0.6}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    // The kernel throttled the sandbox's cgroup (the quota was hit)...
    assert!(
        throttled(&daemon.cgroup_root, "burn") > before,
        "cpu = 0.2 never throttled: {report}"
    );
    // ...and the loop got about a fifth of a CPU, certainly not most of one.
    let share = report["cpu"].as_f64().unwrap() / report["wall"].as_f64().unwrap();
    assert!(
        share < 0.5,
        "busy loop got {share:.2} of a CPU with cpu = 0.2: {report}"
    );
}

#[test]
fn captured_output_is_capped() {
    if !require_root("captured_output_is_capped") {
        return;
    }
    let daemon = Daemon::start(&config());
    let r = daemon.invoke("chatty", r#"{"lines": 20000}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let dropped_metric = || {
        http(daemon.addr, "GET", "/metrics", b"")
            .text()
            .lines()
            .filter(|l| {
                l.starts_with("fnhost_function_output_dropped_lines_total{function=\"chatty\"}")
            })
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum::<f64>()
    };
    assert!(
        eventually(std::time::Duration::from_secs(10), || dropped_metric()
            > 0.0),
        "no output was dropped"
    );
    // The log got at most about the per-second cap of those lines.
    let logged = daemon
        .stderr()
        .lines()
        .filter(|l| l.contains("line "))
        .count();
    assert!(logged < 20000, "all {logged} lines reached the log");
    assert_eq!(daemon.invoke("chatty", r#"{"lines": 1}"#).status, 200);
}

/// The CPU weight of `dir` as cgroup v2 counts it: `cpu.weight`, or v1's
/// `cpu.shares` scaled (1024 = 100); `None` where neither file exists.
fn cpu_weight(dir: &std::path::Path) -> Option<u64> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    read("cpu.weight").or_else(|| read("cpu.shares").map(|s| s * 100 / 1024))
}

/// The refill yields the CPU to running invocations: a zygote's cgroup
/// weighs a tenth of the default, its sandboxes' the default.
#[test]
fn zygotes_weigh_less_than_the_sandboxes_they_fork() {
    if !require_root("zygotes_weigh_less_than_the_sandboxes_they_fork") {
        return;
    }
    let daemon = Daemon::start(&config());
    let r = daemon.invoke("chatty", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let dirs = daemon.cgroup_dirs();
    let weights = |zygote: bool| -> Vec<u64> {
        dirs.iter()
            .filter(|d| match d.to_str().and_then(names::parse) {
                Some(("chatty", Member::Zygote)) => zygote,
                Some(("chatty", Member::Slot(_))) => !zygote,
                _ => false,
            })
            .filter_map(|d| cpu_weight(d))
            .collect()
    };
    let zygote = weights(true);
    assert!(
        !zygote.is_empty(),
        "no zygote cgroup with a cpu controller in {dirs:?}"
    );
    // v1 stores 102 shares for weight 10: 9 after scaling back.
    assert!(zygote.iter().all(|w| (9..=10).contains(w)), "{zygote:?}");
    let sandboxes = weights(false);
    assert!(!sandboxes.is_empty(), "no sandbox cgroup in {dirs:?}");
    assert!(sandboxes.iter().all(|w| *w == 100), "{sandboxes:?}");
}

/// A host with more functions than its open-file limit can keep zygotes
/// for: once the descriptors set aside for sandboxes are held, a cold
/// start stops the least recently used idle zygote instead of failing
/// with EMFILE, so every request is answered.
#[test]
fn a_host_out_of_descriptors_stops_idle_zygotes_instead_of_failing() {
    if !require_root("a_host_out_of_descriptors_stops_idle_zygotes_instead_of_failing") {
        return;
    }
    const FUNCTIONS: usize = 16;
    // Room for 6 zygotes (3 descriptors each counted) and the running
    // clone (2) beside 16 connections and the 256 kept for the rest of
    // the daemon.
    const CONNECTIONS: u64 = 16;
    let limit = CONNECTIONS + 256 + 6 * 3 + 2;
    let functions: String = (0..FUNCTIONS)
        .map(|i| {
            python_function(
                &format!("f{i}"),
                &hello_code(),
                "handler.handler",
                "zygotes = 1\nready_clones = 0",
            )
        })
        .collect();
    let daemon = Daemon::start_with_open_file_limit(
        &functions,
        &format!("max_connections = {CONNECTIONS}"),
        limit,
    );
    for round in 0..2 {
        for i in 0..FUNCTIONS {
            let r = daemon.invoke(&format!("f{i}"), r#"{"name":"fd"}"#);
            assert_eq!(
                r.status,
                200,
                "round {round}, f{i}: {}\n{}",
                r.text(),
                daemon.stderr()
            );
        }
    }
    let metrics = http(daemon.addr, "GET", "/metrics", b"").text();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    assert_eq!(
        value("fnhost_sandbox_descriptor_limit "),
        Some((limit - CONNECTIONS - 256) as f64),
        "{metrics}"
    );
    // Labelled by function on a host this small.
    let evictions: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("fnhost_evictions_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        evictions >= (2 * FUNCTIONS - 6) as f64,
        "{evictions} evictions for {FUNCTIONS} functions in room for 6 zygotes:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("evict") || l.contains("zygotes") || l.contains("descriptor"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let zygotes = children(daemon.pid()).len();
    assert!(zygotes <= 6, "{zygotes} zygotes kept with room for 6");
}
