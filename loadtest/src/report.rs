//! Reports: one `RunReport` per run (one pool configuration), a
//! `Comparison` of several runs of the same workload, as Markdown tables
//! for people and JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::memory::MemoryStats;
use crate::record::{Recorder, StartKind};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Requests served one way (ready clone, on-demand clone, cold start).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StartStats {
    pub count: u64,
    /// Share of successful requests.
    pub fraction: f64,
    pub latency_ms: Percentiles,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    /// The pool configuration (or target) this run measured.
    pub label: String,
    pub offered_rps: f64,
    /// Successful responses per second of wall time.
    pub achieved_rps: f64,
    /// Schedule span and actual wall time (until the last response), s.
    pub span_s: f64,
    pub wall_s: f64,
    pub scheduled: u64,
    pub sent: u64,
    pub ok: u64,
    /// 429 TooManyRequests (max_concurrency + queue_timeout_ms exceeded).
    pub rejected_429: u64,
    /// 503 (no sandbox could be made, or shutting down).
    pub unavailable_503: u64,
    /// Other non-200 statuses, by code.
    pub other_status: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub timeouts: u64,
    /// Not sent because the client's in-flight cap was reached.
    pub dropped: u64,
    /// Not sent because the run was interrupted.
    pub unsent: u64,
    /// Successful requests, from the intended send time.
    pub latency_ms: Percentiles,
    /// By `x-fnhost-start`.
    pub by_start: BTreeMap<&'static str, StartStats>,
    pub cold_start_fraction: f64,
    /// Share of successful requests served by a pre-forked ready clone.
    pub pool_hit_rate: f64,
    /// Server-side queue phase (`Server-Timing: queue`), successful requests.
    pub queue_ms: Percentiles,
    /// Share of successful requests that queued 1 ms or more.
    pub queued_fraction: f64,
    pub memory: Option<MemoryStats>,
    /// How late the generator sent requests; large values mean the client
    /// machine, not the host, limited the run.
    pub send_lag_ms: Percentiles,
}

/// What a run needs besides the recorder.
pub struct RunContext {
    pub label: String,
    pub scheduled: u64,
    pub unsent: u64,
    pub span: Duration,
    pub wall: Duration,
    pub memory: Option<MemoryStats>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl RunReport {
    pub fn new(rec: &Recorder, ctx: RunContext) -> RunReport {
        let wall = ctx.wall.max(ctx.span);
        let per_sec = |n: u64, d: Duration| {
            if d.is_zero() {
                0.0
            } else {
                n as f64 / d.as_secs_f64()
            }
        };
        let by_start: BTreeMap<&'static str, StartStats> = rec
            .by_start
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(k, h)| {
                let stats = StartStats {
                    count: h.len(),
                    fraction: ratio(h.len(), rec.ok),
                    latency_ms: Percentiles::of(h),
                };
                (k.as_str(), stats)
            })
            .collect();
        let kind_count = |k: StartKind| rec.by_start.get(&k).map_or(0, Histogram::len);
        let queued = rec.queue.count_between(1000, rec.queue.max().max(1000));
        let other_status = rec
            .statuses
            .iter()
            .filter(|(c, _)| **c != 429 && **c != 503)
            .map(|(c, n)| (*c, *n))
            .collect();
        RunReport {
            label: ctx.label,
            offered_rps: per_sec(ctx.scheduled, ctx.span),
            achieved_rps: per_sec(rec.ok, wall),
            span_s: ctx.span.as_secs_f64(),
            wall_s: wall.as_secs_f64(),
            scheduled: ctx.scheduled,
            sent: rec.sent(),
            ok: rec.ok,
            rejected_429: rec.status_count(429),
            unavailable_503: rec.status_count(503),
            other_status,
            transport_errors: rec.transport_errors,
            timeouts: rec.timeouts,
            dropped: rec.dropped,
            unsent: ctx.unsent,
            latency_ms: Percentiles::of(&rec.latency),
            by_start,
            cold_start_fraction: ratio(kind_count(StartKind::ColdStart), rec.ok),
            pool_hit_rate: ratio(kind_count(StartKind::ReadyClone), rec.ok),
            queue_ms: Percentiles::of(&rec.queue),
            queued_fraction: ratio(queued, rec.queue.len()),
            memory: ctx.memory,
            send_lag_ms: Percentiles::of(&rec.send_lag),
        }
    }

    /// Errors of any kind other than rejections.
    pub fn errors(&self) -> u64 {
        self.other_status.values().sum::<u64>()
            + self.transport_errors
            + self.timeouts
            + self.dropped
    }
}

/// Several runs of the same workload.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The command line that produced it.
    pub command: String,
    /// Human description of the workload.
    pub workload: String,
    pub runs: Vec<RunReport>,
}

fn f1(x: f64) -> String {
    format!("{x:.1}")
}

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

impl Comparison {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Workload: {}\n", self.workload);
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        out.push_str(
            "| config | offered/s | achieved/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | cold | ready hit | queue p99 ms | 429 | 503 | errors | mem idle MiB | mem mean MiB | mem peak MiB |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.runs {
            let (idle, mean, peak) = match &r.memory {
                Some(m) => (mib(m.idle_bytes), mib(m.mean_bytes), mib(m.peak_bytes)),
                None => ("n/a".into(), "n/a".into(), "n/a".into()),
            };
            let l = &r.latency_ms;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                f1(r.offered_rps),
                f1(r.achieved_rps),
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p999),
                ms(l.max),
                pct(r.cold_start_fraction),
                pct(r.pool_hit_rate),
                ms(r.queue_ms.p99),
                r.rejected_429,
                r.unavailable_503,
                r.errors(),
                idle,
                mean,
                peak,
            );
        }
        out.push_str("\nLatency by how the request was served (ms, from intended send time):\n\n");
        out.push_str("| config | served as | count | share | p50 | p99 | max |\n|---|---|---:|---:|---:|---:|---:|\n");
        for r in &self.runs {
            for (kind, s) in &r.by_start {
                let l = &s.latency_ms;
                let _ = writeln!(
                    out,
                    "| {} | {kind} | {} | {} | {} | {} | {} |",
                    r.label,
                    s.count,
                    pct(s.fraction),
                    ms(l.p50),
                    ms(l.p99),
                    ms(l.max)
                );
            }
        }
        if self.runs.iter().any(|r| r.memory.is_some()) {
            out.push_str(
                "\nMemory of fnhost's cgroup subtree (charged = cgroup accounting incl. page cache charged to it; \
                 PSS = proportional set size of its processes, before the run):\n\n\
                 | config | idle processes | idle PSS MiB | idle charged MiB | mean charged MiB | peak charged MiB |\n\
                 |---|---:|---:|---:|---:|---:|\n",
            );
            for r in &self.runs {
                let Some(m) = &r.memory else { continue };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    r.label,
                    m.idle_processes.map_or("n/a".into(), |n| n.to_string()),
                    m.idle_pss_bytes.map_or("n/a".into(), mib),
                    mib(m.idle_bytes),
                    mib(m.mean_bytes),
                    mib(m.peak_bytes)
                );
            }
        }
        let lagging: Vec<&RunReport> = self
            .runs
            .iter()
            .filter(|r| r.send_lag_ms.p99 > 5.0 || r.dropped > 0)
            .collect();
        for r in lagging {
            let _ = writeln!(
                out,
                "\nWarning ({}): the generator fell behind (send lag p99 {} ms, {} dropped); \
                 latencies include client-side delay.",
                r.label,
                ms(r.send_lag_ms.p99),
                r.dropped
            );
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Outcome, Sample};

    fn recorder() -> Recorder {
        let mut r = Recorder::default();
        let s = |us: u64, outcome| Sample {
            latency: Duration::from_micros(us),
            send_lag: Duration::from_micros(50),
            outcome,
        };
        for i in 0..97 {
            let queue = Some(Duration::from_micros(if i < 10 { 2000 } else { 10 }));
            r.record(&s(
                1000 + i,
                Outcome::Ok {
                    start: StartKind::ReadyClone,
                    queue,
                },
            ));
        }
        r.record(&s(
            2000,
            Outcome::Ok {
                start: StartKind::OnDemandClone,
                queue: Some(Duration::ZERO),
            },
        ));
        r.record(&s(
            35_000,
            Outcome::Ok {
                start: StartKind::ColdStart,
                queue: Some(Duration::ZERO),
            },
        ));
        r.record(&s(
            36_000,
            Outcome::Ok {
                start: StartKind::ColdStart,
                queue: Some(Duration::ZERO),
            },
        ));
        r.record(&s(500, Outcome::Status(429)));
        r.record(&s(500, Outcome::Status(502)));
        r.record(&s(0, Outcome::Dropped));
        r
    }

    fn report() -> RunReport {
        let memory = MemoryStats {
            idle_bytes: 30 << 20,
            mean_bytes: 40 << 20,
            peak_bytes: 50 << 20,
            samples: 10,
            idle_processes: Some(4),
            idle_pss_bytes: Some(60 << 20),
        };
        let ctx = RunContext {
            label: "zygotes=1,ready_clones=2".into(),
            scheduled: 103,
            unsent: 0,
            span: Duration::from_secs(2),
            wall: Duration::from_millis(1500),
            memory: Some(memory),
        };
        RunReport::new(&recorder(), ctx)
    }

    #[test]
    fn aggregates_rates_fractions_and_percentiles() {
        let r = report();
        assert_eq!(
            (r.scheduled, r.sent, r.ok, r.rejected_429, r.dropped),
            (103, 102, 100, 1, 1)
        );
        assert_eq!(r.other_status.get(&502), Some(&1));
        assert_eq!(r.errors(), 2);
        assert!((r.offered_rps - 51.5).abs() < 1e-9);
        // Wall time never counts as shorter than the schedule.
        assert!((r.achieved_rps - 50.0).abs() < 1e-9);
        assert!((r.cold_start_fraction - 0.02).abs() < 1e-9);
        assert!((r.pool_hit_rate - 0.97).abs() < 1e-9);
        assert!((r.queued_fraction - 0.10).abs() < 1e-9);
        assert_eq!(r.by_start["cold-start"].count, 2);
        assert!(!r.by_start.contains_key("unknown"));
        let l = r.latency_ms;
        assert_eq!(l.count, 100);
        assert!(l.p50 > 1.0 && l.p50 < 1.1, "{l:?}");
        assert!(l.p99 >= 35.0 && l.max >= 36.0 && l.max < 36.1, "{l:?}");
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
    }

    #[test]
    fn renders_markdown_and_json() {
        let c = Comparison {
            command: "fnhost-loadtest compare".into(),
            workload: "zipf".into(),
            runs: vec![report(), report()],
        };
        let md = c.markdown();
        assert!(md.contains("| config | offered/s |"));
        assert!(
            md.contains("| zygotes=1,ready_clones=2 | 51.5 | 50.0 |"),
            "{md}"
        );
        assert!(md.contains("| cold-start | 2 | 2.0% |"), "{md}");
        assert!(md.contains("30.0 | 40.0 | 50.0 |"), "{md}");
        assert!(
            md.contains("| zygotes=1,ready_clones=2 | 4 | 60.0 | 30.0 | 40.0 | 50.0 |"),
            "{md}"
        );
        assert!(md.contains("dropped"), "a dropped request warns: {md}");
        let v: serde_json::Value = serde_json::from_str(&c.json()).unwrap();
        assert_eq!(v["runs"].as_array().unwrap().len(), 2);
        assert_eq!(v["runs"][0]["rejected_429"], 1);
        assert_eq!(v["runs"][0]["by_start"]["ready-clone"]["count"], 97);
        assert_eq!(v["runs"][0]["memory"]["peak_bytes"], 50u64 << 20);
    }

    #[test]
    fn empty_run_is_all_zero() {
        let ctx = RunContext {
            label: "x".into(),
            scheduled: 0,
            unsent: 0,
            span: Duration::ZERO,
            wall: Duration::ZERO,
            memory: None,
        };
        let r = RunReport::new(&Recorder::default(), ctx);
        assert_eq!(r.latency_ms, Percentiles::default());
        assert_eq!(
            (r.offered_rps, r.achieved_rps, r.pool_hit_rate),
            (0.0, 0.0, 0.0)
        );
        let c = Comparison {
            command: String::new(),
            workload: String::new(),
            runs: vec![r],
        };
        assert!(c.markdown().contains("n/a"));
    }
}
