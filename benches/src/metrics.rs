//! The daemon's own account of where time goes: the Prometheus histograms
//! `fnhost_phase_seconds{function,phase}`, `fnhost_zygote_start_seconds`,
//! `fnhost_hibernate_seconds` and `fnhost_wake_seconds` scraped from
//! `/metrics`, with quantiles estimated from the buckets the way
//! Prometheus's `histogram_quantile` does (linear within a bucket); and
//! single counters and gauges by name and labels.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::http::{Connection, Endpoint};

const PHASE_METRIC: &str = "fnhost_phase_seconds";
const ZYGOTE_METRIC: &str = "fnhost_zygote_start_seconds";
const HIBERNATE_METRIC: &str = "fnhost_hibernate_seconds";
const WAKE_METRIC: &str = "fnhost_wake_seconds";
const FAULTS_METRIC: &str = "fnhost_clone_page_faults";
/// Phase names given to `fnhost_clone_page_faults{stage}`; their
/// [`PhaseMetric`] holds counts, not milliseconds.
pub const FAULTS_READY_PHASE: &str = "page_faults_ready";
pub const FAULTS_INVOCATION_PHASE: &str = "page_faults_invocation";
/// The phase name given to `fnhost_zygote_start_seconds`.
pub const ZYGOTE_PHASE: &str = "zygote_start";
/// The phase name given to `fnhost_hibernate_seconds` (one zygote going to
/// sleep: ready clones stopped, snapshot written or cgroup reclaimed).
pub const HIBERNATE_PHASE: &str = "hibernate";
/// The phase name given to `fnhost_wake_seconds` (restoring a zygote).
pub const WAKE_PHASE: &str = "wake";

/// One histogram's buckets, count and sum.
#[derive(Debug, Default, Clone)]
struct Histogram {
    /// (upper bound in seconds, cumulative count), `+Inf` as infinity.
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
}

/// Summary of one phase of one function, in milliseconds (the
/// `page_faults_*` phases: page faults per clone, in the same fields).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseMetric {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Phase summaries by function, then phase (`zygote_start` included).
pub type PhaseMetrics = BTreeMap<String, BTreeMap<String, PhaseMetric>>;

/// Scrapes `/metrics`.
pub async fn scrape(endpoint: &Endpoint) -> Result<String> {
    let mut conn = Connection::new(endpoint.clone());
    let reply = conn
        .send(
            Method::GET,
            &endpoint.path("/metrics"),
            Bytes::new(),
            Duration::from_secs(10),
        )
        .await?;
    if reply.status != StatusCode::OK {
        bail!("GET /metrics answered {}", reply.status);
    }
    Ok(String::from_utf8_lossy(&reply.body).into_owned())
}

/// Parses the phase and zygote-start histograms out of Prometheus text.
pub fn parse(text: &str) -> PhaseMetrics {
    let mut hists: BTreeMap<(String, String), Histogram> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        let (base, kind) = if let Some(b) = name.strip_suffix("_bucket") {
            (b, "bucket")
        } else if let Some(b) = name.strip_suffix("_count") {
            (b, "count")
        } else if let Some(b) = name.strip_suffix("_sum") {
            (b, "sum")
        } else {
            continue;
        };
        let phase = match base {
            PHASE_METRIC => match labels.get("phase") {
                Some(p) => p.clone(),
                None => continue,
            },
            ZYGOTE_METRIC => ZYGOTE_PHASE.to_owned(),
            HIBERNATE_METRIC => HIBERNATE_PHASE.to_owned(),
            WAKE_METRIC => WAKE_PHASE.to_owned(),
            FAULTS_METRIC => match labels.get("stage").map(String::as_str) {
                Some("ready") => FAULTS_READY_PHASE.to_owned(),
                Some("invocation") => FAULTS_INVOCATION_PHASE.to_owned(),
                _ => continue,
            },
            _ => continue,
        };
        let function = labels.get("function").cloned().unwrap_or_default();
        let hist = hists.entry((function, phase)).or_default();
        match kind {
            "bucket" => {
                let le = match labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => match le.parse() {
                        Ok(le) => le,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                hist.buckets.push((le, value));
            }
            "count" => hist.count = value,
            _ => hist.sum = value,
        }
    }
    let mut out = PhaseMetrics::new();
    for ((function, phase), mut hist) in hists {
        if hist.count <= 0.0 {
            continue;
        }
        hist.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Seconds become milliseconds; fault counts stay counts.
        let scale = if matches!(phase.as_str(), FAULTS_READY_PHASE | FAULTS_INVOCATION_PHASE) {
            1.0
        } else {
            1000.0
        };
        let metric = PhaseMetric {
            count: hist.count as u64,
            mean_ms: round_us(hist.sum / hist.count * scale),
            p50_ms: round_us(quantile(&hist, 0.50) * scale),
            p99_ms: round_us(quantile(&hist, 0.99) * scale),
        };
        out.entry(function).or_default().insert(phase, metric);
    }
    out
}

/// The sum over the series of metric `name` whose labels include every
/// pair of `labels` (`fnhost_wakes_total{function="f",result="ok"}`);
/// `None` when there is no such series.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, v)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        if series_name != name
            || !labels
                .iter()
                .all(|(k, want)| series_labels.get(*k).is_some_and(|got| got == want))
        {
            continue;
        }
        if let Ok(v) = v.trim().parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

fn round_us(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// `histogram_quantile`: linear interpolation inside the bucket that holds
/// the rank; a rank in the `+Inf` bucket reports the largest finite bound.
fn quantile(hist: &Histogram, q: f64) -> f64 {
    let rank = q * hist.count;
    let mut lower = 0.0;
    let mut below = 0.0;
    for &(le, cumulative) in &hist.buckets {
        if cumulative >= rank {
            if le.is_infinite() {
                return lower;
            }
            let in_bucket = cumulative - below;
            if in_bucket <= 0.0 {
                return le;
            }
            return lower + (le - lower) * (rank - below) / in_bucket;
        }
        lower = le;
        below = cumulative;
    }
    lower
}

/// `a="x",b="y"` (no escapes inside values are needed for fnhost's labels).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some((value, tail)) = after.split_once('"') else {
            break;
        };
        out.insert(
            key.trim().trim_start_matches(',').trim().to_owned(),
            value.to_owned(),
        );
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE fnhost_phase_seconds histogram\n\
fnhost_phase_seconds_bucket{function=\"noop\",phase=\"teardown\",le=\"0.001\"} 50\n\
fnhost_phase_seconds_bucket{function=\"noop\",phase=\"teardown\",le=\"0.002\"} 100\n\
fnhost_phase_seconds_bucket{function=\"noop\",phase=\"teardown\",le=\"+Inf\"} 100\n\
fnhost_phase_seconds_sum{function=\"noop\",phase=\"teardown\"} 0.1\n\
fnhost_phase_seconds_count{function=\"noop\",phase=\"teardown\"} 100\n\
fnhost_zygote_start_seconds_bucket{function=\"cold\",le=\"0.025\"} 0\n\
fnhost_zygote_start_seconds_bucket{function=\"cold\",le=\"0.05\"} 4\n\
fnhost_zygote_start_seconds_bucket{function=\"cold\",le=\"+Inf\"} 4\n\
fnhost_zygote_start_seconds_sum{function=\"cold\"} 0.14\n\
fnhost_zygote_start_seconds_count{function=\"cold\"} 4\n\
fnhost_wake_seconds_bucket{function=\"hib\",le=\"0.005\"} 1\n\
fnhost_wake_seconds_bucket{function=\"hib\",le=\"+Inf\"} 2\n\
fnhost_wake_seconds_sum{function=\"hib\"} 0.009\n\
fnhost_wake_seconds_count{function=\"hib\"} 2\n\
fnhost_clone_page_faults_bucket{function=\"noop\",stage=\"invocation\",le=\"25\"} 0\n\
fnhost_clone_page_faults_bucket{function=\"noop\",stage=\"invocation\",le=\"50\"} 10\n\
fnhost_clone_page_faults_bucket{function=\"noop\",stage=\"invocation\",le=\"+Inf\"} 10\n\
fnhost_clone_page_faults_sum{function=\"noop\",stage=\"invocation\"} 300\n\
fnhost_clone_page_faults_count{function=\"noop\",stage=\"invocation\"} 10\n\
fnhost_invocations_total{function=\"noop\",outcome=\"ok\"} 100\n\
fnhost_invocations_total{function=\"noop\",outcome=\"error\"} 3\n\
fnhost_invocations_total{function=\"noop-cold\",outcome=\"ok\"} 7\n";

    #[test]
    fn parses_histograms_and_interpolates_quantiles() {
        let m = parse(TEXT);
        let teardown = &m["noop"]["teardown"];
        assert_eq!(teardown.count, 100);
        assert_eq!(teardown.mean_ms, 1.0);
        // Rank 50 is the top of the first bucket; rank 99 is 49/50 into the second.
        assert_eq!(teardown.p50_ms, 1.0);
        assert_eq!(teardown.p99_ms, 1.98);
        let zygote = &m["cold"][ZYGOTE_PHASE];
        assert_eq!(zygote.count, 4);
        assert_eq!(zygote.mean_ms, 35.0);
        assert_eq!(zygote.p50_ms, 37.5);
        assert!(!m["noop"].contains_key("invocations"));
        let wake = &m["hib"][WAKE_PHASE];
        assert_eq!((wake.count, wake.mean_ms), (2, 4.5));
        // Page-fault counts stay counts (not scaled to milliseconds).
        let faults = &m["noop"][FAULTS_INVOCATION_PHASE];
        assert_eq!(
            (faults.count, faults.mean_ms, faults.p50_ms),
            (10, 30.0, 37.5)
        );
    }

    #[test]
    fn reads_single_values_by_labels() {
        let total = "fnhost_invocations_total";
        assert_eq!(value(TEXT, total, &[("function", "noop")]), Some(103.0));
        assert_eq!(
            value(TEXT, total, &[("function", "noop"), ("outcome", "ok")]),
            Some(100.0)
        );
        assert_eq!(value(TEXT, total, &[("function", "other")]), None);
        assert_eq!(
            value(TEXT, "fnhost_wake_seconds_count", &[("function", "hib")]),
            Some(2.0)
        );
    }

    #[test]
    fn parses_labels() {
        let l = parse_labels("function=\"a-b\",phase=\"clone\",le=\"+Inf\"");
        assert_eq!(l["function"], "a-b");
        assert_eq!(l["phase"], "clone");
        assert_eq!(l["le"], "+Inf");
    }
}
