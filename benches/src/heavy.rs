//! The import-heavy function (issue 12): a Python function whose import
//! builds a large heap of Python objects (ints, strings and a dict, the
//! scale of a numpy or igraph import; no third-party packages) beside the
//! no-op, with the same handler body. Its source, and its numbers of a run
//! as ratios to the no-op's: warm, on-demand and cold p50, throughput per
//! concurrency, and each warm zygote's RSS.

use std::fmt::Write as _;

use crate::load::LoadLevel;
use crate::report::{div, times};
use crate::stats::{Ordered, ScenarioSummary};

/// Default `--heavy-mib`: the target is stated for ≥ 50 MiB.
pub const DEFAULT_MIB: u64 = 50;

/// Python memory per element of the import's heap (an int, a string
/// `"s<digits>"`, their list slots and a dict entry), in bytes: measured
/// with CPython 3.11 on x86-64 (VmRSS growth of the import: 50 MiB asked →
/// 53.6 MiB; the dict grows in steps, so 150 would give only 45 MiB).
const BYTES_PER_ELEMENT: u64 = 145;

/// Scenario labels of the heavy function, beside `warm`, `ondemand`, `cold`.
pub const LABELS: [(&str, &str); 3] = [
    ("heavy-warm", "warm"),
    ("heavy-ondemand", "ondemand"),
    ("heavy-cold", "cold"),
];

/// `handler.py` of the heavy function: builds about `mib` MiB of Python
/// objects at module top level, then the no-op's handler.
pub fn handler_source(mib: u64) -> String {
    let elements = mib * 1024 * 1024 / BYTES_PER_ELEMENT;
    format!(
        "# Written by fnhost-bench: an import-heavy function. Importing it builds\n\
         # about {mib} MiB of Python objects (like numpy or igraph would); the\n\
         # handler is the no-op's.\n\
         _N = {elements}\n\
         _INTS = list(range(1_000_000, 1_000_000 + _N))\n\
         _STRS = [\"s%d\" % i for i in _INTS]\n\
         _MAP = dict(zip(_STRS, _INTS))\n\
         \n\
         \n\
         {}",
        crate::daemon::NOOP_HANDLER
    )
}

/// A function's memory limit: the default 128 MiB plus room for the heap
/// (Python's overhead on top of it included).
pub fn memory_mb(mib: u64) -> u64 {
    128 + 2 * mib
}

/// The heavy function's numbers of one run beside the no-op's.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Heavy {
    /// `--heavy-mib`: the heap its import builds.
    pub heap_mib: u64,
    /// RSS of the warm no-op's zygote and of the warm heavy zygote, KiB
    /// (`None` when not measured, e.g. with --url).
    pub noop_zygote_rss_kib: Option<u64>,
    pub heavy_zygote_rss_kib: Option<u64>,
    /// heavy p50 ÷ no-op p50 of the warm, on-demand and cold scenarios.
    pub warm_p50_ratio: Option<f64>,
    pub ondemand_p50_ratio: Option<f64>,
    pub cold_p50_ratio: Option<f64>,
    /// The heavy function's throughput levels (same concurrencies as the
    /// no-op's `throughput`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Vec<LoadLevel>>,
    /// Per concurrency: heavy inv/s ÷ no-op inv/s.
    pub throughput_ratios: Vec<ThroughputRatio>,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ThroughputRatio {
    pub clients: u32,
    pub noop_rps: f64,
    pub heavy_rps: f64,
    pub ratio: Option<f64>,
}

impl Heavy {
    /// Fills the ratios from this run's scenarios and throughput levels.
    pub fn compute_ratios(
        &mut self,
        scenarios: &Ordered<ScenarioSummary>,
        noop_throughput: Option<&[LoadLevel]>,
    ) {
        let p50 = |label: &str| {
            scenarios
                .get(label)
                .filter(|s| s.latency.n > 0)
                .map(|s| s.latency.p50_ms)
        };
        let ratio = |heavy: &str, noop: &str| div(p50(heavy)?, p50(noop)?);
        self.warm_p50_ratio = ratio(LABELS[0].0, LABELS[0].1);
        self.ondemand_p50_ratio = ratio(LABELS[1].0, LABELS[1].1);
        self.cold_p50_ratio = ratio(LABELS[2].0, LABELS[2].1);
        self.throughput_ratios = self
            .throughput
            .iter()
            .flatten()
            .filter_map(|h| {
                let noop = noop_throughput?.iter().find(|n| n.clients == h.clients)?;
                Some(ThroughputRatio {
                    clients: h.clients,
                    noop_rps: noop.rps,
                    heavy_rps: h.rps,
                    ratio: div(h.rps, noop.rps),
                })
            })
            .collect();
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// The report's section: zygote RSS, latency and throughput ratios, and the
/// heavy function's throughput levels.
pub fn markdown(h: &Heavy) -> String {
    let mut out = format!(
        "\n## Import-heavy function (issue 12)\n\n\
         A Python function whose import builds about {} MiB of Python objects (ints, strings, \
         a dict), with the no-op's handler body; its rows are in the latency table above \
         (`heavy-*`). Ratios: heavy ÷ no-op, same run (target: warm p50 ≤ 1.5×, throughput \
         ≥ 0.8×).\n\n\
         | | no-op | heavy | heavy ÷ no-op |\n|---|--:|--:|--:|\n\
         | warm zygote RSS (MiB) | {} | {} | {} |\n\
         | warm p50 | | | **{}** |\n| on-demand p50 | | | {} |\n| cold p50 | | | {} |\n",
        h.heap_mib,
        mib(h.noop_zygote_rss_kib),
        mib(h.heavy_zygote_rss_kib),
        times(
            h.noop_zygote_rss_kib
                .zip(h.heavy_zygote_rss_kib)
                .and_then(|(n, x)| div(x as f64, n as f64))
        ),
        times(h.warm_p50_ratio),
        times(h.ondemand_p50_ratio),
        times(h.cold_p50_ratio),
    );
    if !h.throughput_ratios.is_empty() {
        out.push_str(
            "\n| clients | no-op inv/s | heavy inv/s | heavy ÷ no-op |\n|--:|--:|--:|--:|\n",
        );
        for t in &h.throughput_ratios {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | **{}** |",
                t.clients,
                t.noop_rps,
                t.heavy_rps,
                times(t.ratio)
            );
        }
    }
    if let Some(levels) = &h.throughput {
        out.push_str("\n### Import-heavy function: throughput\n\n");
        out.push_str(&crate::load::markdown(levels, false));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{LatencyHistogram, Percentiles};

    fn level(clients: u32, rps: f64) -> LoadLevel {
        LoadLevel {
            clients,
            ok: 10,
            errors: 0,
            seconds: 1.0,
            rps,
            teardowns_per_s: None,
            latency: LatencyHistogram::default().summary(),
            start_kinds: Default::default(),
            first_error: None,
        }
    }

    fn scenario(p50_ms: f64) -> ScenarioSummary {
        let mut s = crate::stats::ScenarioStats::default().summarize("ready-clone");
        s.latency = Percentiles {
            n: 3,
            p50_ms,
            p90_ms: p50_ms,
            p99_ms: p50_ms,
            max_ms: p50_ms,
            mean_ms: p50_ms,
        };
        s
    }

    #[test]
    fn source_builds_the_heap_then_the_noop_handler() {
        let src = handler_source(4);
        assert!(
            src.contains(&format!("_N = {}\n", 4 * 1024 * 1024 / 145)),
            "{src}"
        );
        assert!(src.ends_with(crate::daemon::NOOP_HANDLER), "{src}");
        assert_eq!(memory_mb(50), 228);
    }

    #[test]
    fn ratios_pair_labels_and_concurrencies() {
        let scenarios = Ordered(vec![
            ("warm".to_owned(), scenario(2.0)),
            ("cold".to_owned(), scenario(50.0)),
            ("heavy-warm".to_owned(), scenario(3.0)),
            ("heavy-cold".to_owned(), scenario(200.0)),
        ]);
        let mut h = Heavy {
            heap_mib: 4,
            noop_zygote_rss_kib: Some(10_240),
            heavy_zygote_rss_kib: Some(15_360),
            throughput: Some(vec![level(1, 100.0), level(4, 150.0)]),
            ..Heavy::default()
        };
        h.compute_ratios(&scenarios, Some(&[level(1, 200.0), level(2, 300.0)]));
        assert_eq!(h.warm_p50_ratio, Some(1.5));
        assert_eq!(h.ondemand_p50_ratio, None);
        assert_eq!(h.cold_p50_ratio, Some(4.0));
        assert_eq!(h.throughput_ratios.len(), 1);
        assert_eq!(h.throughput_ratios[0].ratio, Some(0.5));
        let md = markdown(&h);
        assert!(
            md.contains("| warm zygote RSS (MiB) | 10.0 | 15.0 | 1.50× |"),
            "{md}"
        );
        assert!(md.contains("| warm p50 | | | **1.50×** |"), "{md}");
        assert!(md.contains("| 1 | 200 | 100 | **0.50×** |"), "{md}");
    }
}
