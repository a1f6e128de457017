//! "The floor" in the report: the floor server's rows, fnhost's numbers of
//! the same run as ratios to them, and the kernel primitives.

use std::fmt::Write as _;

use crate::load::LoadLevel;
use crate::report::{div, times};
use crate::stats::{Ordered, ScenarioSummary};

use super::{primitives, Floor};

/// fnhost over the floor, in one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FloorRatios {
    /// The denominator of the latency ratios: the 1-worker floor's
    /// sequential p50.
    pub floor_p50_ms: f64,
    /// fnhost warm (ready clone) p50 ÷ floor p50.
    pub warm_p50_over_floor_p50: Option<f64>,
    /// fnhost warm p99 ÷ floor p50.
    pub warm_p99_over_floor_p50: Option<f64>,
    /// One entry per fnhost throughput level.
    pub throughput: Vec<ThroughputRatio>,
}

/// fnhost's throughput at one client count over the floor's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThroughputRatio {
    pub clients: u32,
    pub fnhost_rps: f64,
    pub floor_1w_rps: Option<f64>,
    pub floor_2w_rps: Option<f64>,
    /// fnhost inv/s ÷ 1-worker floor inv/s at the same client count.
    pub vs_1_worker: Option<f64>,
    /// fnhost inv/s ÷ 2-worker floor inv/s at the same client count.
    pub vs_2_workers: Option<f64>,
    /// fnhost p99 at this client count ÷ the floor's sequential p50.
    pub fnhost_p99_over_floor_p50: Option<f64>,
}

/// fnhost's warm scenario and throughput levels over the floor's numbers;
/// `None` when the floor has no sequential p50 or fnhost ran neither.
pub fn ratios(
    floor: &Floor,
    scenarios: &Ordered<ScenarioSummary>,
    throughput: Option<&[LoadLevel]>,
) -> Option<FloorRatios> {
    let floor_p50 = floor.server(1)?.sequential.p50_ms;
    let warm = scenarios
        .0
        .iter()
        .find(|(label, s)| label == "warm" && s.latency.n > 0)
        .map(|(_, s)| s.latency);
    if floor_p50 <= 0.0 || (warm.is_none() && throughput.is_none()) {
        return None;
    }
    let floor_rps = |workers: u32, clients: u32| {
        floor
            .server(workers)?
            .throughput
            .iter()
            .find(|l| l.clients == clients)
            .map(|l| l.rps)
    };
    let throughput = throughput
        .unwrap_or_default()
        .iter()
        .map(|l| {
            let (one, two) = (floor_rps(1, l.clients), floor_rps(2, l.clients));
            ThroughputRatio {
                clients: l.clients,
                fnhost_rps: l.rps,
                floor_1w_rps: one,
                floor_2w_rps: two,
                vs_1_worker: one.and_then(|f| div(l.rps, f)),
                vs_2_workers: two.and_then(|f| div(l.rps, f)),
                fnhost_p99_over_floor_p50: (l.latency.n > 0)
                    .then(|| div(l.latency.p99_ms, floor_p50))
                    .flatten(),
            }
        })
        .collect();
    Some(FloorRatios {
        floor_p50_ms: floor_p50,
        warm_p50_over_floor_p50: warm.and_then(|w| div(w.p50_ms, floor_p50)),
        warm_p99_over_floor_p50: warm.and_then(|w| div(w.p99_ms, floor_p50)),
        throughput,
    })
}

/// The "The floor" section.
pub fn markdown(floor: &Floor) -> String {
    let mut out = String::from(
        "\n## The floor: a bare fork-per-request server\n\n\
         The cheapest thing that could possibly work, measured in this run with the same \
         client: the same interpreter and no-op handler (imported once, heap frozen), \
         `fork()` per request, the child calls the handler, answers and exits, its worker \
         reaps it before accepting the next connection; no namespaces, cgroups or mounts. \
         One connection per request (`Connection: close`; the client's connect is not \
         timed). Milliseconds.\n\n\
         | floor | n | p50 | p90 | p99 | max | errors |\n|---|--:|--:|--:|--:|--:|--:|\n",
    );
    for s in &floor.servers {
        let l = &s.sequential;
        let _ = writeln!(
            out,
            "| {} worker{} (sequential) | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
            s.workers,
            if s.workers == 1 { "" } else { "s" },
            l.n,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms,
            s.sequential_errors
        );
    }
    let levels: Vec<u32> = floor
        .servers
        .first()
        .map(|s| s.throughput.iter().map(|l| l.clients).collect())
        .unwrap_or_default();
    if !levels.is_empty() {
        out.push_str("\n| clients |");
        for s in &floor.servers {
            let _ = write!(
                out,
                " {}w inv/s | {}w p50 | {}w p99 |",
                s.workers, s.workers, s.workers
            );
        }
        out.push_str("\n|--:|");
        out.push_str(&"--:|--:|--:|".repeat(floor.servers.len()));
        out.push('\n');
        for clients in levels {
            let _ = write!(out, "| {clients} |");
            for s in &floor.servers {
                match s.throughput.iter().find(|l| l.clients == clients) {
                    Some(l) => {
                        let _ = write!(
                            out,
                            " {:.0} | {:.3} | {:.3} |",
                            l.rps, l.latency.p50_ms, l.latency.p99_ms
                        );
                    }
                    None => out.push_str(" - | - | - |"),
                }
            }
            out.push('\n');
        }
    }
    if let Some(r) = &floor.ratios {
        out.push_str(&ratios_markdown(r));
    }
    if let Some(p) = &floor.primitives {
        let _ = write!(
            out,
            "\n### Kernel primitives that bound an isolated invocation\n\n\
             Each timed start to finish by a single-threaded helper process, {} runs: fork + \
             exit with a {:.1} MiB touched anonymous heap ({}; 4 KiB pages); clone3 with \
             fnhost's clone namespaces by a process that dropped to uid 65534, the child \
             exiting at once (reaped); an overlay over a fresh tmpfs upper in a private mount \
             namespace (as host root, not in a user namespace); a pid written to \
             `cgroup.procs` of a test cgroup in every hierarchy, as the daemon attaches a \
             clone.\n\n",
            p.runs,
            p.fork_heap_kib as f64 / 1024.0,
            p.fork_heap_source
        );
        out.push_str(&primitives::markdown(p));
    }
    out
}

fn ratios_markdown(r: &FloorRatios) -> String {
    let mut out = format!(
        "\n### fnhost ÷ the floor (same run)\n\n\
         Latency over the 1-worker floor's sequential p50 ({:.3} ms): fnhost warm p50 \
         **{}**, warm p99 **{}** (< 1: fnhost is faster).\n",
        r.floor_p50_ms,
        times(r.warm_p50_over_floor_p50),
        times(r.warm_p99_over_floor_p50)
    );
    if !r.throughput.is_empty() {
        out.push_str(
            "\nThroughput at the same client count (> 1: fnhost serves more):\n\n\
             | clients | fnhost inv/s | ÷ floor 1 worker | ÷ floor 2 workers | fnhost p99 ÷ floor p50 |\n\
             |--:|--:|--:|--:|--:|\n",
        );
        for t in &r.throughput {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {} |",
                t.clients,
                t.fnhost_rps,
                times(t.vs_1_worker),
                times(t.vs_2_workers),
                times(t.fnhost_p99_over_floor_p50)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::FloorServerResult;
    use super::*;
    use crate::stats::Percentiles;

    fn pct(p50: f64, p99: f64) -> Percentiles {
        Percentiles {
            n: 10,
            p50_ms: p50,
            p90_ms: p50,
            p99_ms: p99,
            max_ms: p99,
            mean_ms: p50,
        }
    }

    fn level(clients: u32, rps: f64, p99: f64) -> LoadLevel {
        LoadLevel {
            clients,
            ok: 1,
            errors: 0,
            seconds: 1.0,
            rps,
            teardowns_per_s: None,
            latency: pct(1.0, p99),
            start_kinds: BTreeMap::new(),
            first_error: None,
        }
    }

    fn floor() -> Floor {
        let server = |workers, rps: f64| FloorServerResult {
            workers,
            sequential: pct(4.0, 8.0),
            sequential_errors: 0,
            throughput: vec![level(1, rps, 5.0), level(2, rps * 2.0, 6.0)],
            cdf_ms: Vec::new(),
        };
        Floor {
            interpreter: "/usr/bin/python3",
            keep_alive: false,
            servers: vec![server(1, 200.0), server(2, 250.0)],
            primitives: None,
            ratios: None,
        }
    }

    fn warm(p50: f64, p99: f64) -> Ordered<ScenarioSummary> {
        let mut stats = crate::stats::ScenarioStats::default();
        stats.record_success(
            std::time::Duration::from_millis(1),
            Some("ready-clone"),
            None,
        );
        let mut s = stats.summarize("ready-clone");
        s.latency = pct(p50, p99);
        Ordered(vec![("warm".to_owned(), s)])
    }

    #[test]
    fn ratios_divide_by_the_floor_of_the_same_client_count() {
        let f = floor();
        let fnhost = [
            level(1, 100.0, 12.0),
            level(2, 500.0, 40.0),
            level(16, 9.0, 1.0),
        ];
        let r = ratios(&f, &warm(2.0, 20.0), Some(&fnhost)).expect("ratios");
        assert_eq!(r.floor_p50_ms, 4.0);
        assert_eq!(r.warm_p50_over_floor_p50, Some(0.5));
        assert_eq!(r.warm_p99_over_floor_p50, Some(5.0));
        assert_eq!(r.throughput[0].vs_1_worker, Some(0.5));
        assert_eq!(r.throughput[0].vs_2_workers, Some(0.4));
        assert_eq!(r.throughput[1].vs_1_worker, Some(1.25));
        assert_eq!(r.throughput[1].fnhost_p99_over_floor_p50, Some(10.0));
        // No floor level with 16 clients: no ratio, not a made-up one.
        assert_eq!(r.throughput[2].vs_2_workers, None);

        let md = markdown(&Floor {
            ratios: Some(r),
            ..floor()
        });
        assert!(md.contains("## The floor"), "{md}");
        assert!(
            md.contains("| 1 worker (sequential) | 10 | 4.000 |"),
            "{md}"
        );
        assert!(
            md.contains("| 2 | 400 | 1.000 | 6.000 | 500 | 1.000 | 6.000 |"),
            "{md}"
        );
        assert!(
            md.contains("warm p50 **0.50×**, warm p99 **5.00×**"),
            "{md}"
        );
        assert!(md.contains("| 2 | 500 | 1.25× | 1.00× | 10.00× |"), "{md}");
        assert!(md.contains("| 16 | 9 | - | - | 0.25× |"), "{md}");
    }

    #[test]
    fn no_ratios_without_fnhost_numbers() {
        assert!(ratios(&floor(), &Ordered::default(), None).is_none());
        let only_tput = ratios(&floor(), &Ordered::default(), Some(&[])).expect("ratios");
        assert_eq!(only_tput.warm_p50_over_floor_p50, None);
    }
}
