//! The kernel primitives that bound an isolated invocation, each timed
//! start to finish by a re-executed, single-threaded worker (so that it may
//! fork freely): fork + exit of a process with the zygote's heap,
//! `clone3` with fnhost's clone namespaces from an unprivileged process +
//! exit, an overlay mount over a tmpfs upper (in the worker's private mount
//! namespace), and a cgroup attach (pid written to `cgroup.procs` of every
//! hierarchy) in a test cgroup under `fnhost-bench-floor-<harness pid>`.
//! The harness removes that cgroup root again after the worker, whatever
//! happened to it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fnhost_sandbox::cgroup::{CgroupLayout, CgroupTree};
use fnhost_sandbox::{CLONE_NAMESPACES, CLONE_NETWORK};
use serde::{Deserialize, Serialize};

use crate::stats::{LatencyHistogram, Percentiles};

mod probes;

/// Untimed runs of each primitive before the timed ones.
const WARMUP_RUNS: u64 = 3;

/// The heap the fork probe gives its process when no zygote was measured.
pub const DEFAULT_HEAP_KIB: u64 = 10 * 1024;

/// Idle time before each "after idle" cgroup attach: long enough for the
/// kernel's cgroup migration lock to fall back to its idle state.
const ATTACH_IDLE: Duration = Duration::from_millis(30);

/// What the worker measured for one primitive, microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawPrimitive {
    pub name: String,
    pub samples_us: Vec<u64>,
    /// Why it could not be measured.
    pub error: Option<String>,
}

/// One primitive in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Primitive {
    pub name: String,
    #[serde(flatten)]
    pub latency: Option<Percentiles>,
    pub error: Option<String>,
}

/// Every primitive of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Primitives {
    /// The anonymous heap of the fork probe's process, KiB.
    pub fork_heap_kib: u64,
    /// Where that size came from: `zygote rss` (the latency suite's warm
    /// zygote) or `default`.
    pub fork_heap_source: String,
    pub runs: u64,
    pub rows: Vec<Primitive>,
}

/// The cgroup root of this harness run's attach probe.
pub fn cgroup_root(harness_pid: u32) -> String {
    format!("fnhost-bench-floor-{harness_pid}")
}

/// Runs the worker (`exe --floor-worker ...`) and summarises what it
/// printed; removes the probe's cgroup root afterwards in any case.
pub fn run(exe: &Path, runs: u64, heap_kib: u64, heap_source: &str) -> Result<Primitives> {
    let root = cgroup_root(std::process::id());
    eprintln!(
        "fnhost-bench: floor: {runs} runs of each kernel primitive (fork heap {} MiB, {heap_source})",
        heap_kib / 1024
    );
    let output = Command::new(exe)
        .arg("--floor-worker")
        .arg(&root)
        .arg("--primitive-runs")
        .arg(runs.to_string())
        .arg("--floor-heap-kib")
        .arg(heap_kib.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("running the floor's kernel-primitive worker");
    let cleanup = remove_cgroup_root(&root);
    let output = output?;
    cleanup?;
    if !output.status.success() {
        bail!(
            "the floor's kernel-primitive worker failed ({})",
            output.status
        );
    }
    let raw: Vec<RawPrimitive> = serde_json::from_slice(&output.stdout)
        .context("parsing the floor's kernel-primitive worker output")?;
    Ok(Primitives {
        fork_heap_kib: heap_kib,
        fork_heap_source: heap_source.to_owned(),
        runs,
        rows: raw.iter().map(summarize).collect(),
    })
}

fn remove_cgroup_root(root: &str) -> Result<()> {
    let layout = CgroupLayout::detect().context("detecting the cgroup layout")?;
    CgroupTree::new(layout, root)
        .remove_all()
        .with_context(|| format!("removing the floor's test cgroup root {root}"))?;
    Ok(())
}

fn summarize(raw: &RawPrimitive) -> Primitive {
    let mut hist = LatencyHistogram::default();
    for us in &raw.samples_us {
        hist.record(Duration::from_micros(*us));
    }
    Primitive {
        name: raw.name.clone(),
        latency: (!raw.samples_us.is_empty()).then(|| hist.summary()),
        error: raw.error.clone(),
    }
}

/// The worker: measures every primitive and prints the results as JSON.
/// Must run before any thread is started (the probes fork).
pub fn worker_main(cgroup_root: &str, runs: u64, heap_kib: u64) -> Result<()> {
    let total = WARMUP_RUNS + runs;
    let mut out = Vec::new();
    // First, while this process is small: its children copy its page
    // tables.
    for (name, flags) in [
        (
            "clone3 user+mnt+pid+ipc+uts+net (unprivileged) + exit",
            CLONE_NAMESPACES | CLONE_NETWORK,
        ),
        (
            "clone3 user+mnt+pid+ipc+uts (unprivileged) + exit",
            CLONE_NAMESPACES,
        ),
    ] {
        out.push(timed(name, probes::unprivileged_clone(flags, total)));
    }
    match probes::private_mounts() {
        Ok(()) => {
            let (mount, umount) = match probes::overlay(total) {
                Ok((m, u)) => (Ok(m), Ok(u)),
                Err(e) => (Err(anyhow::anyhow!("{e:#}")), Err(e)),
            };
            out.push(timed("overlay mount (tmpfs upper)", mount));
            out.push(timed("overlay unmount", umount));
        }
        Err(e) => out.push(timed("overlay mount (tmpfs upper)", Err(e))),
    }
    let (busy, idle) = match probes::cgroup_attach(cgroup_root, total, ATTACH_IDLE) {
        Ok((b, i)) => (Ok(b), Ok(i)),
        Err(e) => (Err(anyhow::anyhow!("{e:#}")), Err(e)),
    };
    out.push(timed("cgroup attach (back to back)", busy));
    out.push(timed(
        &format!("cgroup attach (after {} ms idle)", ATTACH_IDLE.as_millis()),
        idle,
    ));
    out.push(timed(
        "fork + exit (worker's own heap)",
        probes::fork_exit(0, total),
    ));
    out.push(timed(
        &format!("fork + exit ({:.1} MiB heap)", heap_kib as f64 / 1024.0),
        probes::fork_exit(heap_kib, total),
    ));
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// The timed samples of `result` without its warm-up runs, or its error.
fn timed(name: &str, result: Result<Vec<u64>>) -> RawPrimitive {
    match result {
        Ok(samples) => RawPrimitive {
            name: name.to_owned(),
            samples_us: samples.into_iter().skip(WARMUP_RUNS as usize).collect(),
            error: None,
        },
        Err(err) => {
            eprintln!("fnhost-bench: floor: {name}: {err:#}");
            RawPrimitive {
                name: name.to_owned(),
                samples_us: Vec::new(),
                error: Some(format!("{err:#}")),
            }
        }
    }
}

/// Markdown table of the primitives.
pub fn markdown(p: &Primitives) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("| primitive | n | p50 ms | p99 ms |\n|---|--:|--:|--:|\n");
    for row in &p.rows {
        match (&row.latency, &row.error) {
            (Some(l), _) => {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.3} | {:.3} |",
                    row.name, l.n, l.p50_ms, l.p99_ms
                );
            }
            (None, Some(e)) => {
                let _ = writeln!(out, "| {} | failed: {e} | - | - |", row.name);
            }
            (None, None) => {
                let _ = writeln!(out, "| {} | 0 | - | - |", row.name);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_runs_are_dropped_and_errors_kept() {
        let ok = timed("x", Ok(vec![9, 9, 9, 1, 2]));
        assert_eq!(ok.samples_us, [1, 2]);
        let failed = timed("y", Err(anyhow::anyhow!("no user namespaces")));
        assert!(failed.samples_us.is_empty());
        let p = Primitives {
            fork_heap_kib: 1024,
            fork_heap_source: "default".to_owned(),
            runs: 2,
            rows: vec![summarize(&ok), summarize(&failed)],
        };
        let md = markdown(&p);
        assert!(md.contains("| x | 2 | 0.001 | 0.002 |"), "{md}");
        assert!(
            md.contains("| y | failed: no user namespaces | - | - |"),
            "{md}"
        );
    }

    #[test]
    fn cgroup_root_follows_the_bench_convention() {
        assert_eq!(cgroup_root(42), "fnhost-bench-floor-42");
    }
}
