//! Closed-loop load: K clients, each with its own keep-alive connection,
//! send the next request as soon as the previous one is answered, for a
//! fixed time. Used for churn (sandboxes created and destroyed per second,
//! every request an on-demand clone, like OpenLambda's `sock_churn`) and
//! for throughput (isolated invocations per second at each K).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::http::{Connection, Endpoint};
use crate::metrics;
use crate::scenario::START_HEADER;
use crate::stats::{LatencyHistogram, Percentiles, NO_START_HEADER};

const PAYLOAD: &[u8] = br#"{"bench":true}"#;

/// One load level's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadLevel {
    pub clients: u32,
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Successful invocations per second.
    pub rps: f64,
    /// Sandboxes torn down per second (from the daemon's teardown
    /// histogram count), when /metrics could be read.
    pub teardowns_per_s: Option<f64>,
    #[serde(flatten)]
    pub latency: Percentiles,
    pub start_kinds: BTreeMap<String, u64>,
    /// What the first failed request got (status and body, or the
    /// transport error), so a failed run says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

struct ClientResult {
    latency: LatencyHistogram,
    ok: u64,
    errors: u64,
    start_kinds: BTreeMap<String, u64>,
    first_error: Option<String>,
}

async fn client(
    endpoint: Endpoint,
    path: String,
    deadline: Instant,
    timeout: Duration,
) -> ClientResult {
    let mut conn = Connection::new(endpoint);
    let mut out = ClientResult {
        latency: LatencyHistogram::default(),
        ok: 0,
        errors: 0,
        start_kinds: BTreeMap::new(),
        first_error: None,
    };
    while Instant::now() < deadline {
        match conn
            .send(Method::POST, &path, Bytes::from_static(PAYLOAD), timeout)
            .await
        {
            Ok(reply) if reply.status == StatusCode::OK => {
                out.latency.record(reply.elapsed);
                out.ok += 1;
                let kind = reply.header(START_HEADER).unwrap_or(NO_START_HEADER);
                *out.start_kinds.entry(kind.to_owned()).or_default() += 1;
            }
            failed => {
                out.errors += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(match failed {
                        Ok(reply) => format!(
                            "HTTP {} after {:.1} ms: {}",
                            reply.status,
                            reply.elapsed.as_secs_f64() * 1e3,
                            String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)])
                        ),
                        Err(e) => format!("{e:#}"),
                    });
                }
            }
        }
    }
    out
}

/// Teardowns of `function` so far, per the daemon's metrics.
async fn teardowns(endpoint: &Endpoint, function: &str) -> Option<u64> {
    let text = metrics::scrape(endpoint).await.ok()?;
    let phases = metrics::parse(&text);
    Some(
        phases
            .get(function)
            .and_then(|p| p.get("teardown"))
            .map_or(0, |m| m.count),
    )
}

/// Runs `clients` closed-loop clients against `function` for `duration`.
pub async fn run_level(
    endpoint: &Endpoint,
    function: &str,
    clients: u32,
    duration: Duration,
    timeout: Duration,
) -> Result<LoadLevel> {
    let path = endpoint.invoke_path(function);
    let torn_down_before = teardowns(endpoint, function).await;
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients.max(1))
        .map(|_| tokio::spawn(client(endpoint.clone(), path.clone(), deadline, timeout)))
        .collect();
    let mut latency = LatencyHistogram::default();
    let (mut ok, mut errors) = (0, 0);
    let mut start_kinds = BTreeMap::new();
    let mut first_error = None;
    for task in tasks {
        let r = task.await?;
        first_error = first_error.or(r.first_error);
        latency.add(&r.latency);
        ok += r.ok;
        errors += r.errors;
        for (k, v) in r.start_kinds {
            *start_kinds.entry(k).or_default() += v;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // Teardown runs after the response; give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some(e) = &first_error {
        eprintln!("fnhost-bench: {function}, {clients} clients: {errors} failed request(s); the first: {e}");
    }
    let torn_down_after = teardowns(endpoint, function).await;
    let teardowns_per_s = match (torn_down_before, torn_down_after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / seconds),
        _ => None,
    };
    Ok(LoadLevel {
        clients,
        ok,
        errors,
        seconds,
        rps: ok as f64 / seconds,
        teardowns_per_s,
        latency: latency.summary(),
        start_kinds,
        first_error,
    })
}

/// Runs one level per entry of `levels`, in order, with progress on stderr.
pub async fn run_levels(
    label: &str,
    endpoint: &Endpoint,
    function: &str,
    levels: &[u32],
    duration: Duration,
    timeout: Duration,
) -> Result<Vec<LoadLevel>> {
    let mut out = Vec::new();
    for &clients in levels {
        let level = run_level(endpoint, function, clients, duration, timeout).await?;
        eprintln!(
            "fnhost-bench: {label}: {clients} clients: {:.0} inv/s, p50 {:.3} ms, p99 {:.3} ms, {} errors",
            level.rps, level.latency.p50_ms, level.latency.p99_ms, level.errors
        );
        out.push(level);
    }
    Ok(out)
}

/// Markdown table of load levels.
pub fn markdown(levels: &[LoadLevel], with_teardowns: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("| clients | inv/s |");
    if with_teardowns {
        out.push_str(" teardowns/s |");
    }
    out.push_str(" p50 ms | p99 ms | ok | errors | start kinds |\n|--:|--:|");
    if with_teardowns {
        out.push_str("--:|");
    }
    out.push_str("--:|--:|--:|--:|---|\n");
    for l in levels {
        let _ = write!(out, "| {} | {:.0} |", l.clients, l.rps);
        if with_teardowns {
            match l.teardowns_per_s {
                Some(t) => {
                    let _ = write!(out, " {t:.0} |");
                }
                None => out.push_str(" - |"),
            }
        }
        let kinds: Vec<String> = l
            .start_kinds
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            out,
            " {:.3} | {:.3} | {} | {} | {} |",
            l.latency.p50_ms,
            l.latency.p99_ms,
            l.ok,
            l.errors,
            kinds.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_lists_levels() {
        let level = LoadLevel {
            clients: 4,
            ok: 100,
            errors: 1,
            seconds: 1.0,
            rps: 100.0,
            teardowns_per_s: Some(99.0),
            latency: LatencyHistogram::default().summary(),
            start_kinds: [("on-demand-clone".to_owned(), 100)].into_iter().collect(),
            first_error: Some("HTTP 429".to_owned()),
        };
        let md = markdown(&[level], true);
        assert!(
            md.contains("| 4 | 100 | 99 | 0.000 | 0.000 | 100 | 1 | on-demand-clone: 100 |"),
            "{md}"
        );
    }
}
