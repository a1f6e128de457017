//! The requests of one start kind: each request's latency and
//! `Server-Timing` phases are kept, for percentiles and for where the
//! slowest requests spent their time: the slowest 1% of each start kind
//! is summarised as the mean of every phase, plus `outside`: the part of
//! the client's latency the daemon's `total` does not cover (connection,
//! HTTP parsing and the client's own scheduling).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::stats::{parse_server_timing, LatencyHistogram, Phase};

/// The share of requests summarised: the slowest 1%, at least one.
const TAIL_FRACTION: f64 = 0.01;

/// Name of the time outside the daemon's `total`.
const OUTSIDE: &str = "outside";

/// One request: its latency and the phases the daemon reported.
#[derive(Debug, Clone)]
struct Sample {
    elapsed: Duration,
    phases: Vec<Phase>,
}

/// The requests of one start kind.
#[derive(Debug, Default)]
pub struct Samples(Vec<Sample>);

/// The slowest requests of one start kind, phase by phase.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TailBreakdown {
    /// Requests summarised (the slowest 1% of `of`).
    pub requests: usize,
    pub of: usize,
    /// The fastest of them, ms.
    pub from_ms: f64,
    pub mean_ms: f64,
    /// Mean per phase over those requests, ms (a phase a request did not
    /// report counts as 0), with `outside` = latency − `total`.
    pub phase_mean_ms: BTreeMap<String, f64>,
}

impl Samples {
    pub fn record(&mut self, elapsed: Duration, server_timing: Option<&str>) {
        let phases = server_timing.map(parse_server_timing).unwrap_or_default();
        self.0.push(Sample { elapsed, phases });
    }

    /// Every request's latency, for percentiles.
    pub fn histogram(&self) -> LatencyHistogram {
        let mut h = LatencyHistogram::default();
        for sample in &self.0 {
            h.record(sample.elapsed);
        }
        h
    }

    /// The slowest 1%; `None` without samples.
    pub fn breakdown(&self) -> Option<TailBreakdown> {
        if self.0.is_empty() {
            return None;
        }
        let mut sorted: Vec<&Sample> = self.0.iter().collect();
        sorted.sort_by_key(|s| std::cmp::Reverse(s.elapsed));
        let n = ((sorted.len() as f64 * TAIL_FRACTION).ceil() as usize).max(1);
        let tail = &sorted[..n];
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        for sample in tail {
            let mut total = None;
            for phase in &sample.phases {
                *sums.entry(phase.name.clone()).or_default() += phase.dur_ms;
                if phase.name == "total" {
                    total = Some(phase.dur_ms);
                }
            }
            if let Some(total) = total {
                *sums.entry(OUTSIDE.to_owned()).or_default() +=
                    (ms(sample.elapsed) - total).max(0.0);
            }
        }
        Some(TailBreakdown {
            requests: n,
            of: sorted.len(),
            from_ms: ms(tail[n - 1].elapsed),
            mean_ms: tail.iter().map(|s| ms(s.elapsed)).sum::<f64>() / n as f64,
            phase_mean_ms: sums
                .into_iter()
                .map(|(name, sum)| (name, sum / n as f64))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn the_slowest_percent_is_summarised_phase_by_phase() {
        let mut samples = Samples::default();
        for _ in 0..198 {
            samples.record(ms(5), Some("queue;dur=0.5, handler;dur=1, total;dur=4"));
        }
        samples.record(
            ms(100),
            Some("queue;dur=60, wake;dur=20, handler;dur=1, total;dur=90"),
        );
        samples.record(ms(50), Some("queue;dur=10, handler;dur=1, total;dur=30"));
        let b = samples.breakdown().unwrap();
        // 1% of 200 is 2: the 100 ms and the 50 ms request.
        assert_eq!((b.requests, b.of), (2, 200));
        assert_eq!(b.from_ms, 50.0);
        assert_eq!(b.mean_ms, 75.0);
        assert_eq!(b.phase_mean_ms["queue"], 35.0);
        // Reported by one of the two: averaged over both.
        assert_eq!(b.phase_mean_ms["wake"], 10.0);
        assert_eq!(b.phase_mean_ms["total"], 60.0);
        // (100 - 90 + 50 - 30) / 2.
        assert_eq!(b.phase_mean_ms[OUTSIDE], 15.0);
    }

    #[test]
    fn a_request_without_server_timing_still_counts_in_the_tail() {
        let mut samples = Samples::default();
        samples.record(ms(10), None);
        let b = samples.breakdown().unwrap();
        assert_eq!((b.requests, b.mean_ms), (1, 10.0));
        assert!(b.phase_mean_ms.is_empty());
        assert_eq!(Samples::default().breakdown(), None);
    }
}
