//! Measurements of one scenario: request latency, `x-fnhost-start` counts,
//! errors, and one histogram per `Server-Timing` phase, all in microseconds,
//! summarised as milliseconds for the report.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::ser::{Serialize, Serializer};

/// Largest value a histogram tracks: one hour, in microseconds. Larger
/// values saturate (they are recorded as the maximum).
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// Three significant figures: 0.1% resolution at every magnitude.
const SIGNIFICANT_FIGURES: u8 = 3;

/// One entry of a `Server-Timing` header: a phase name and its duration in
/// milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: String,
    pub dur_ms: f64,
}

/// Parses a `Server-Timing` header value (`name;dur=X, name;desc="..";dur=Y`).
///
/// Entries are separated by commas, parameters by semicolons; the phase name
/// is the first token. Entries without a numeric, finite, non-negative `dur`
/// are skipped, so an unexpected header never aborts a run.
pub fn parse_server_timing(value: &str) -> Vec<Phase> {
    value
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.split(';');
            let name = parts.next()?.trim();
            if name.is_empty() {
                return None;
            }
            let dur_ms = parts.find_map(|param| {
                let (key, val) = param.split_once('=')?;
                if !key.trim().eq_ignore_ascii_case("dur") {
                    return None;
                }
                let val = val.trim().trim_matches('"');
                val.parse::<f64>()
                    .ok()
                    .filter(|d| d.is_finite() && *d >= 0.0)
            })?;
            Some(Phase {
                name: name.to_owned(),
                dur_ms,
            })
        })
        .collect()
}

/// An HDR histogram of durations in microseconds.
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self(
            Histogram::new_with_bounds(1, MAX_TRACKED_US, SIGNIFICANT_FIGURES)
                .expect("constant bounds are valid: 1 <= low, high >= 2 * low, sigfig <= 5"),
        )
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us);
    }

    pub fn record_ms(&mut self, ms: f64) {
        // Float-to-int `as` saturates; the parser only passes finite, >= 0 values.
        self.0.saturating_record((ms * 1000.0).round() as u64);
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        us_to_ms(self.0.value_at_quantile(q))
    }

    /// Adds every value recorded in `other`.
    pub fn add(&mut self, other: &Self) {
        // Both histograms share the same bounds, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Latency at quantiles 0.00, 0.01, ..., 1.00 (101 points), for CDFs.
    pub fn cdf_ms(&self) -> Vec<f64> {
        (0..=100)
            .map(|q| self.quantile_ms(f64::from(q) / 100.0))
            .collect()
    }

    pub fn summary(&self) -> Percentiles {
        Percentiles {
            n: self.0.len(),
            p50_ms: self.quantile_ms(0.50),
            p90_ms: self.quantile_ms(0.90),
            p99_ms: self.quantile_ms(0.99),
            max_ms: us_to_ms(self.0.max()),
            // Rounded to whole microseconds, the resolution of every other figure.
            mean_ms: self.0.mean().round() / 1000.0,
        }
    }
}

fn us_to_ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Latency percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub n: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// A string-keyed list that keeps insertion order and serialises as a JSON
/// object (phases in the order the daemon reports them, scenarios in run order).
#[derive(Debug, Clone)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<V> Default for Ordered<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> Ordered<V> {
    pub fn entry_or_default(&mut self, key: &str) -> &mut V
    where
        V: Default,
    {
        let idx = match self.0.iter().position(|(k, _)| k == key) {
            Some(idx) => idx,
            None => {
                self.0.push((key.to_owned(), V::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[idx].1
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// Everything measured in one scenario.
#[derive(Debug, Default)]
pub struct ScenarioStats {
    pub latency: LatencyHistogram,
    /// `x-fnhost-start` values of successful requests (`(none)` when absent).
    pub start_kinds: BTreeMap<String, u64>,
    /// Latency of the successful requests of each start kind.
    pub latency_by_start: BTreeMap<String, LatencyHistogram>,
    pub phases: Ordered<LatencyHistogram>,
    /// Failed requests by kind (`503 PoolExhausted`, `timeout`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Times the keep-alive connection had to be re-established.
    pub reconnects: u64,
}

/// Marker counted when a response carries no `x-fnhost-start` header.
pub const NO_START_HEADER: &str = "(none)";

impl ScenarioStats {
    pub fn record_success(
        &mut self,
        elapsed: Duration,
        start_kind: Option<&str>,
        server_timing: Option<&str>,
    ) {
        self.latency.record(elapsed);
        let kind = start_kind.unwrap_or(NO_START_HEADER);
        *self.start_kinds.entry(kind.to_owned()).or_default() += 1;
        self.latency_by_start
            .entry(kind.to_owned())
            .or_default()
            .record(elapsed);
        for phase in server_timing.map(parse_server_timing).unwrap_or_default() {
            self.phases
                .entry_or_default(&phase.name)
                .record_ms(phase.dur_ms);
        }
    }

    pub fn record_error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn summarize(&self, expected_start: &str) -> ScenarioSummary {
        let phases = self
            .phases
            .0
            .iter()
            .map(|(name, hist)| {
                let p = hist.summary();
                let phase = PhaseSummary {
                    n: p.n,
                    p50_ms: p.p50_ms,
                    p99_ms: p.p99_ms,
                };
                (name.clone(), phase)
            })
            .collect();
        ScenarioSummary {
            function: String::new(),
            latency: self.latency.summary(),
            expected_start: expected_start.to_owned(),
            start_kinds: self.start_kinds.clone(),
            latency_by_start: self
                .latency_by_start
                .iter()
                .map(|(kind, hist)| (kind.clone(), hist.summary()))
                .collect(),
            phases: Ordered(phases),
            errors: self.errors.clone(),
            reconnects: self.reconnects,
            cdf_ms: self.latency.cdf_ms(),
        }
    }
}

/// Percentiles of one `Server-Timing` phase, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PhaseSummary {
    /// Responses that reported this phase.
    pub n: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The reportable result of one scenario (also its JSON form).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScenarioSummary {
    /// The function invoked (set by the scenario runner).
    pub function: String,
    #[serde(flatten)]
    pub latency: Percentiles,
    /// The `x-fnhost-start` value this scenario is meant to measure.
    pub expected_start: String,
    pub start_kinds: BTreeMap<String, u64>,
    /// Latency of the requests of each start kind (a sequential client
    /// can outrun the refill: then some "warm" requests are on-demand).
    pub latency_by_start: BTreeMap<String, Percentiles>,
    pub phases: Ordered<PhaseSummary>,
    pub errors: BTreeMap<String, u64>,
    pub reconnects: u64,
    /// Latency at quantiles 0.00, 0.01, ..., 1.00 (for the CDF chart).
    #[serde(skip)]
    pub cdf_ms: Vec<f64>,
}

impl ScenarioSummary {
    /// Successful requests not served the way the scenario intends.
    pub fn unexpected_starts(&self) -> u64 {
        self.start_kinds
            .iter()
            .filter(|(kind, _)| **kind != self.expected_start)
            .map(|(_, count)| count)
            .sum()
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Latency of the requests served the way the scenario intends.
    pub fn expected_latency(&self) -> Option<&Percentiles> {
        self.latency_by_start
            .get(&self.expected_start)
            .filter(|p| p.n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, dur_ms: f64) -> Phase {
        Phase {
            name: name.to_owned(),
            dur_ms,
        }
    }

    #[test]
    fn parses_contract_header() {
        let header = "queue;dur=0.012, zygote;dur=18.2, clone;dur=0.81, setup;dur=0.20, \
                      handler;dur=0.03, response;dur=0.05, total;dur=1.1";
        let phases = parse_server_timing(header);
        assert_eq!(
            phases,
            vec![
                phase("queue", 0.012),
                phase("zygote", 18.2),
                phase("clone", 0.81),
                phase("setup", 0.20),
                phase("handler", 0.03),
                phase("response", 0.05),
                phase("total", 1.1),
            ]
        );
    }

    #[test]
    fn parses_description_quotes_case_and_whitespace() {
        let header = r#" db ; desc="a;b" ; DUR = "2.5" ,cache;dur=0"#;
        assert_eq!(
            parse_server_timing(header),
            vec![phase("db", 2.5), phase("cache", 0.0)]
        );
    }

    #[test]
    fn skips_entries_without_valid_duration() {
        let header = "miss, ;dur=1, neg;dur=-1, nan;dur=NaN, inf;dur=inf, text;dur=abc, ok;dur=3";
        assert_eq!(parse_server_timing(header), vec![phase("ok", 3.0)]);
        assert!(parse_server_timing("").is_empty());
    }

    #[test]
    fn histogram_reports_milliseconds() {
        let mut hist = LatencyHistogram::default();
        // Below 2048 µs, 3 significant figures store values exactly.
        for us in [100, 200, 300, 400] {
            hist.record(Duration::from_micros(us));
        }
        let p = hist.summary();
        assert_eq!(p.n, 4);
        assert_eq!(p.p50_ms, 0.2);
        assert_eq!(p.max_ms, 0.4);
        assert_eq!(p.mean_ms, 0.25);
    }

    #[test]
    fn stats_count_kinds_and_keep_phase_order() {
        let mut stats = ScenarioStats::default();
        let timing = Some("queue;dur=0.01, clone;dur=0.8, total;dur=1.0");
        stats.record_success(Duration::from_micros(900), Some("ready-clone"), timing);
        stats.record_success(Duration::from_micros(1900), Some("on-demand-clone"), timing);
        stats.record_success(Duration::from_micros(800), None, None);
        stats.record_error("503 Overloaded".to_owned());

        let summary = stats.summarize("ready-clone");
        assert_eq!(summary.latency.n, 3);
        assert_eq!(summary.start_kinds["ready-clone"], 1);
        assert_eq!(summary.start_kinds["on-demand-clone"], 1);
        assert_eq!(summary.start_kinds[NO_START_HEADER], 1);
        assert_eq!(summary.unexpected_starts(), 2);
        assert_eq!(summary.error_count(), 1);
        // Each kind's own latency: the ready clone's alone is the 900 µs.
        let ready = summary.expected_latency().expect("ready-clone latency");
        assert_eq!((ready.n, ready.max_ms), (1, 0.9));
        assert_eq!(summary.latency_by_start["on-demand-clone"].max_ms, 1.9);
        assert!(stats.summarize("cold-start").expected_latency().is_none());
        let names: Vec<&str> = summary.phases.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["queue", "clone", "total"]);
        let clone = summary.phases.get("clone").expect("clone phase recorded");
        assert_eq!(clone.n, 2);
        assert_eq!(clone.p50_ms, 0.8);
    }

    #[test]
    fn ordered_map_serializes_in_insertion_order() {
        let map = Ordered(vec![("b".to_owned(), 1), ("a".to_owned(), 2)]);
        assert_eq!(
            serde_json::to_string(&map).expect("serializable"),
            r#"{"b":1,"a":2}"#
        );
    }
}
