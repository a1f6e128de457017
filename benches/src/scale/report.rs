//! The scale suite's Markdown summary (the JSON holds everything).

use std::fmt::Write as _;

use super::drive::TallySummary;
use super::Scale;

fn tally_rows(out: &mut String, label: &str, t: &TallySummary) {
    for (start, p) in &t.by_start {
        let _ = writeln!(
            out,
            "| {label} | {start} | {} | {:.1} | {:.1} | {:.1} |",
            p.n, p.p50_ms, p.p99_ms, p.max_ms
        );
    }
    if t.errors > 0 || t.shed > 0 {
        let _ = writeln!(
            out,
            "| {label} | errors / shed | {} / {} | | | |",
            t.errors, t.shed
        );
    }
}

/// Phases in the order a request passes them; others follow by name.
const PHASE_ORDER: [&str; 10] = [
    "queue", "zygote", "wake", "clone", "setup", "handler", "exchange", "dispatch", "total",
    "outside",
];

fn tail_rows(out: &mut String, label: &str, t: &TallySummary) {
    for (start, b) in &t.tails {
        let mut phases: Vec<(&str, f64)> = PHASE_ORDER
            .iter()
            .filter_map(|p| b.phase_mean_ms.get(*p).map(|v| (*p, *v)))
            .collect();
        phases.extend(
            b.phase_mean_ms
                .iter()
                .filter(|(p, _)| !PHASE_ORDER.contains(&p.as_str()))
                .map(|(p, v)| (p.as_str(), *v)),
        );
        let phases = phases
            .iter()
            .filter(|(_, v)| *v >= 0.05)
            .map(|(p, v)| format!("{p} {v:.1}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {label} | {start} | {} of {} | {:.1} | {:.1} | {phases} |",
            b.requests, b.of, b.from_ms, b.mean_ms
        );
    }
}

impl Scale {
    pub fn to_markdown(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## Scale: {} functions\n\nTrace: Zipf(s = {}) popularity, {} requests/s for {} s, seed {}; hibernate_after_ms = {}, memory_budget_mb = {}.\n",
            s.functions, super::trace::ZIPF_S, s.rps, s.replay_seconds, s.seed, s.hibernate_after_ms, s.budget_mib
        );
        let _ = writeln!(out, "| Figure | Value |\n|---|---|");
        let _ = writeln!(
            out,
            "| start-up (spawn to /healthz 200) | {:.2} s |",
            self.startup_seconds
        );
        let _ = writeln!(
            out,
            "| every function answered once | {:.1} s ({} ok, {} errors) |",
            self.first_touch_seconds, self.first_touch.ok, self.first_touch.errors
        );
        let _ = writeln!(
            out,
            "| /metrics after start / at end | {} / {} bytes |",
            self.metrics_bytes_after_start, self.metrics_bytes_at_end
        );
        if let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) {
            let peak_rss = self
                .samples
                .iter()
                .map(|x| x.daemon_rss_kib)
                .max()
                .unwrap_or(0);
            let min_avail = self
                .samples
                .iter()
                .map(|x| x.mem_available_kib)
                .min()
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "| daemon RSS after start / peak / end | {} / {} / {} MiB |",
                first.daemon_rss_kib / 1024,
                peak_rss / 1024,
                last.daemon_rss_kib / 1024
            );
            let _ = writeln!(
                out,
                "| MemAvailable drop (start to lowest) | {} MiB |",
                first.mem_available_kib.saturating_sub(min_avail) / 1024
            );
            let _ = writeln!(
                out,
                "| fnhost cgroup charge at end | {} MiB |",
                last.fnhost_cgroup_kib / 1024
            );
            let _ = writeln!(
                out,
                "| slab start / end | {} / {} MiB |",
                first.slab_kib / 1024,
                last.slab_kib / 1024
            );
            let _ = writeln!(
                out,
                "| processes / memory cgroups / daemon fds at end | {} / {} / {} |",
                last.processes, last.cgroups, last.daemon_fds
            );
        }
        if let Some(ratio) = self.hot_p50_ratio {
            let _ = writeln!(
                out,
                "| hot function warm p50, N-function / 1-function host | {ratio:.2}x |"
            );
        }
        let r = &self.returned;
        let _ = writeln!(out, "| after removing every function | drained in {} s; processes {}, function cgroups {}, daemon fds {} (after start {}) |",
            r.drain_seconds.map_or("-".to_owned(), |d| format!("{d:.1}")),
            r.processes_after_removal, r.function_cgroups_after_removal, r.daemon_fds_after_removal, r.daemon_fds_after_start);
        let _ = writeln!(
            out,
            "| after stop | memory cgroups {} (before {}), cgroup dirs left {}, mounts left {} |\n",
            r.cgroups_after, r.cgroups_before, r.cgroup_dirs_left, r.mounts_left
        );
        let _ = writeln!(
            out,
            "| Phase | Served as | n | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|"
        );
        tally_rows(&mut out, "first touch", &self.first_touch);
        tally_rows(&mut out, "replay", &self.replay);
        tally_rows(
            &mut out,
            "hot, 1-function host",
            &self.hot_one_function_host,
        );
        tally_rows(
            &mut out,
            "hot, N-function host",
            &self.hot_many_function_host,
        );
        let _ = writeln!(
            out,
            "\nThe slowest 1% of each kind, mean ms per `Server-Timing` phase (`outside`: latency the daemon's `total` does not cover):\n\n| Phase | Served as | requests | from ms | mean ms | phases (mean ms) |\n|---|---|---|---|---|---|"
        );
        tail_rows(&mut out, "replay", &self.replay);
        tail_rows(
            &mut out,
            "hot, N-function host",
            &self.hot_many_function_host,
        );
        for e in self
            .first_touch
            .first_errors
            .iter()
            .chain(&self.replay.first_errors)
        {
            let _ = writeln!(out, "\n- error: {e}");
        }
        out
    }
}
