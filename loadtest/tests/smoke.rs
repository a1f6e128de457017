//! CI smoke test of the load tester: `compare` launches the real fnhost
//! (built next to this package's binary by `cargo build --workspace`) with
//! two pool configurations and three functions, runs a few seconds of low
//! load against each, and must finish with a parseable report. Needs root;
//! skips with a reason otherwise, but under CI=true a skip is a failure.
//! No timing assertions: only that it completes and reports what it served,
//! checked against what the pool design promises (not counts that depend
//! on how requests happen to overlap).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fnhost_testkit::{alive, require_root, skip};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const TEST: &str = "compare_two_pool_configs_against_real_fnhost";

/// SIGTERM, wait up to `grace`, SIGKILL. `reap` waits on a child of ours.
fn terminate(pid: u32, grace: Duration, mut reap: impl FnMut() -> bool) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if reap() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && !reap() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the load tester and any fnhost it launched, even if the test
/// fails half way.
struct Cleanup {
    loadtest: Child,
    daemons: Arc<Mutex<Vec<u32>>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if matches!(self.loadtest.try_wait(), Ok(None)) {
            let pid = self.loadtest.id();
            let child = &mut self.loadtest;
            terminate(pid, Duration::from_secs(15), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
        }
        for &pid in self
            .daemons
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let is_fnhost = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("serve"))
                .unwrap_or(false);
            if alive(pid) && is_fnhost {
                eprintln!("smoke: fnhost pid {pid} outlived the load tester; stopping it");
                terminate(pid, Duration::from_secs(10), || !alive(pid));
            }
        }
    }
}

#[test]
fn compare_two_pool_configs_against_real_fnhost() {
    if !require_root(TEST) {
        return;
    }
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_fnhost-loadtest"));
    let fnhost = exe.parent().expect("binary has a directory").join("fnhost");
    if !fnhost.is_file() {
        skip(
            TEST,
            &format!(
                "no fnhost at {}; run `cargo build --workspace --all-targets` first",
                fnhost.display()
            ),
        );
        return;
    }
    let child = Command::new(&exe)
        .args(["compare", "--fnhost"])
        .arg(&fnhost)
        .args([
            "--functions",
            "3",
            "--rate",
            "15",
            "--duration",
            "3",
            "--arrivals",
            "constant",
            "--pool-configs",
            "zygotes=0,ready_clones=0;zygotes=1,ready_clones=1",
            "--warm-timeout-secs",
            "20",
            "--settle-secs",
            "0.2",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run fnhost-loadtest");
    let mut cleanup = Cleanup {
        loadtest: child,
        daemons: Arc::new(Mutex::new(Vec::new())),
    };

    let stderr = cleanup.loadtest.stderr.take().expect("stderr piped");
    let daemons = cleanup.daemons.clone();
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if let Some(rest) = line.split("launched fnhost pid ").nth(1) {
                if let Some(pid) = rest.split_whitespace().next().and_then(|p| p.parse().ok()) {
                    daemons.lock().unwrap().push(pid);
                }
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut stdout = cleanup.loadtest.stdout.take().expect("stdout piped");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = cleanup
            .loadtest
            .try_wait()
            .expect("wait for fnhost-loadtest")
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "fnhost-loadtest did not finish within 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = err_reader.join().expect("stderr reader");
    let stdout = out_reader.join().expect("stdout reader");
    assert!(
        status.success(),
        "fnhost-loadtest failed ({status}):\n{stderr}"
    );
    assert!(
        stderr.contains("| config | offered/s | achieved/s |"),
        "no Markdown table on stderr:\n{stderr}"
    );

    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}"));
    let runs = report["runs"].as_array().expect("runs array");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["label"], "zygotes=0,ready_clones=0");
    assert_eq!(runs[1]["label"], "zygotes=1,ready_clones=1");
    for run in runs {
        let n = |k: &str| {
            run[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{k} missing in {run}"))
        };
        assert!(n("scheduled") > 0, "{run}");
        assert_eq!(
            n("sent") + n("dropped") + n("unsent"),
            n("scheduled"),
            "{run}"
        );
        assert!(n("ok") > 0, "nothing succeeded: {run}");
        assert!(run["latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{run}");
    }
    // Scale to zero (zygotes = 0, ready_clones = 0): nothing is pre-forked,
    // so no request is served by a ready clone; the first request of each
    // function starts a zygote (a cold start); and every request succeeds.
    // Requests that overlap a cold start may share its zygote (served as
    // on-demand clones), so how many are cold starts depends on timing and
    // is not asserted.
    let cold = &runs[0];
    let kind = |run: &serde_json::Value, k: &str| run["by_start"][k]["count"].as_u64().unwrap_or(0);
    assert_eq!(
        kind(cold, "ready-clone"),
        0,
        "ready clone with ready_clones=0: {cold}"
    );
    assert!(
        kind(cold, "cold-start") >= 1,
        "no cold start with zygotes=0: {cold}"
    );
    assert_eq!(cold["ok"], cold["sent"], "a request failed: {cold}");
    // A warm zygote: requests are served by clones.
    assert!(
        runs[1]["cold_start_fraction"].as_f64().unwrap() < 1.0,
        "{}",
        runs[1]
    );

    // The load tester stopped every fnhost it launched.
    let launched = cleanup.daemons.lock().unwrap().clone();
    assert_eq!(
        launched.len(),
        2,
        "expected one fnhost per configuration:\n{stderr}"
    );
    for pid in launched {
        assert!(
            !alive(pid),
            "fnhost pid {pid} still running after fnhost-loadtest exited"
        );
    }
}
