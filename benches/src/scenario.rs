//! The scenarios: warm (ready clone), on-demand clone and cold start. Each
//! runs against a base URL over its own keep-alive connection: discarded
//! warm-up requests, then N sequential timed invocations.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::http::{Connection, Endpoint, Reply};
use crate::stats::{Ordered, ScenarioStats, ScenarioSummary};

/// Header naming how the daemon served an invocation.
pub const START_HEADER: &str = "x-fnhost-start";
pub const SERVER_TIMING_HEADER: &str = "server-timing";

/// The payload sent to every function.
const PAYLOAD: &[u8] = br#"{"bench":true}"#;

/// One scenario: which function to call, how it should be served, how often.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub label: &'static str,
    pub function: String,
    /// The `x-fnhost-start` value that this scenario exists to measure.
    pub expected_start: &'static str,
    pub warmup: u64,
    pub n: u64,
}

/// Runs every scenario with `n > 0` in order; returns their summaries in the
/// same order.
pub async fn run_all(
    endpoint: &Endpoint,
    scenarios: &[Scenario],
    timeout: Duration,
) -> Result<Ordered<ScenarioSummary>> {
    let mut out = Ordered::default();
    for scenario in scenarios.iter().filter(|s| s.n > 0) {
        let stats = run(endpoint, scenario, timeout).await?;
        let mut summary = stats.summarize(scenario.expected_start);
        summary.function = scenario.function.clone();
        out.0.push((scenario.label.to_owned(), summary));
    }
    Ok(out)
}

/// Runs one scenario over a fresh connection.
pub async fn run(
    endpoint: &Endpoint,
    scenario: &Scenario,
    timeout: Duration,
) -> Result<ScenarioStats> {
    let mut conn = Connection::new(endpoint.clone());
    let path = endpoint.invoke_path(&scenario.function);
    let payload = Bytes::from_static(PAYLOAD);

    if scenario.warmup > 0 {
        eprintln!(
            "fnhost-bench: {}: {} warm-up requests to {}",
            scenario.label, scenario.warmup, scenario.function
        );
    }
    let mut warmup_failures = 0u64;
    for _ in 0..scenario.warmup {
        match conn
            .send(Method::POST, &path, payload.clone(), timeout)
            .await
        {
            Ok(reply) if reply.status == StatusCode::OK => {}
            Ok(reply) => {
                if warmup_failures == 0 {
                    eprintln!(
                        "fnhost-bench: {}: warm-up request failed: {}",
                        scenario.label,
                        describe_failure(&reply)
                    );
                }
                warmup_failures += 1;
            }
            Err(err) => {
                if warmup_failures == 0 {
                    eprintln!(
                        "fnhost-bench: {}: warm-up request failed: {err:#}",
                        scenario.label
                    );
                }
                warmup_failures += 1;
            }
        }
    }
    if scenario.warmup > 0 && warmup_failures == scenario.warmup {
        bail!(
            "{}: all {} warm-up requests to function {:?} at {} failed; check that the daemon \
             is up and serves this function",
            scenario.label,
            scenario.warmup,
            scenario.function,
            endpoint
        );
    }
    if warmup_failures > 0 {
        eprintln!(
            "fnhost-bench: {}: {warmup_failures} of {} warm-up requests failed",
            scenario.label, scenario.warmup
        );
    }

    eprintln!(
        "fnhost-bench: {}: {} timed requests to {}",
        scenario.label, scenario.n, scenario.function
    );
    // Reconnects during warm-up are not the measured run's business.
    let reconnects_before = conn.reconnects;
    let mut stats = ScenarioStats::default();
    let started = Instant::now();
    for _ in 0..scenario.n {
        match conn
            .send(Method::POST, &path, payload.clone(), timeout)
            .await
        {
            Ok(reply) if reply.status == StatusCode::OK => stats.record_success(
                reply.elapsed,
                reply.header(START_HEADER),
                reply.header(SERVER_TIMING_HEADER),
            ),
            Ok(reply) => stats.record_error(describe_failure(&reply)),
            Err(err) => {
                if !stats.errors.keys().any(|k| k.starts_with("transport")) {
                    eprintln!("fnhost-bench: {}: request failed: {err:#}", scenario.label);
                }
                stats.record_error(format!("transport: {}", root_cause(&err)));
            }
        }
    }
    stats.reconnects = conn.reconnects - reconnects_before;
    eprintln!(
        "fnhost-bench: {}: done in {:.1} s",
        scenario.label,
        started.elapsed().as_secs_f64()
    );
    Ok(stats)
}

/// `503 PoolExhausted` from a status and the error body's `errorType`.
pub fn describe_failure(reply: &Reply) -> String {
    let error_type = serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| {
            v.get("errorType")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        });
    match error_type {
        Some(t) => format!("{} {t}", reply.status.as_u16()),
        None => format!("{}", reply.status.as_u16()),
    }
}

/// The innermost error message, so that distinct failures of one kind share
/// a key in the error table.
pub fn root_cause(err: &anyhow::Error) -> String {
    err.root_cause().to_string()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    /// Mimics the daemon's invoke API: the start kind follows the function
    /// name, `broken` answers 503, anything else 404.
    async fn fake_invoke(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path().to_owned();
        let function = path
            .strip_prefix("/v1/functions/")
            .and_then(|rest| rest.strip_suffix("/invoke"))
            .unwrap_or("");
        let (status, start, timing, body) = match function {
            "noop" => (
                200,
                "ready-clone",
                "queue;dur=0.012, setup;dur=0.2, handler;dur=0.03, total;dur=0.4",
                r#"{"ok":true}"#,
            ),
            "noop-ondemand" => (
                200,
                "on-demand-clone",
                "queue;dur=0.01, clone;dur=0.81, total;dur=1.1",
                r#"{"ok":true}"#,
            ),
            "noop-cold" => (
                200,
                "cold-start",
                "zygote;dur=18.2, clone;dur=0.9, total;dur=20.5",
                r#"{"ok":true}"#,
            ),
            "broken" => (
                503,
                "",
                "",
                r#"{"errorType":"PoolExhausted","errorMessage":"no capacity"}"#,
            ),
            _ => (
                404,
                "",
                "",
                r#"{"errorType":"ResourceNotFoundException","errorMessage":"unknown"}"#,
            ),
        };
        let _ = req.into_body().collect().await;
        let mut resp = Response::builder().status(status);
        if !start.is_empty() {
            resp = resp
                .header(START_HEADER, start)
                .header(SERVER_TIMING_HEADER, timing);
        }
        Ok(resp
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("static response parts are valid"))
    }

    /// Serves `fake_invoke` on 127.0.0.1:0; returns the URL and a counter of
    /// accepted connections.
    async fn start_fake_daemon() -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let connections = Arc::new(AtomicU64::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(fake_invoke))
                        .await;
                });
            }
        });
        (format!("http://{addr}"), connections)
    }

    fn scenario(label: &'static str, function: &str, expected: &'static str, n: u64) -> Scenario {
        Scenario {
            label,
            function: function.to_owned(),
            expected_start: expected,
            warmup: 2,
            n,
        }
    }

    #[tokio::test]
    async fn runs_scenarios_against_fake_daemon() {
        let (url, connections) = start_fake_daemon().await;
        let endpoint = Endpoint::parse(&url).expect("fake daemon URL");
        let scenarios = [
            scenario("warm", "noop", "ready-clone", 20),
            // A scenario whose function is not served as expected is still
            // measured and reported honestly.
            scenario("ondemand", "noop-ondemand", "ready-clone", 7),
            scenario("cold", "noop-cold", "cold-start", 3),
            scenario("skipped", "noop", "ready-clone", 0),
        ];
        let results = run_all(&endpoint, &scenarios, Duration::from_secs(10))
            .await
            .expect("scenarios run");

        let labels: Vec<&str> = results.0.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["warm", "ondemand", "cold"]);

        let warm = results.get("warm").expect("warm ran");
        assert_eq!(warm.latency.n, 20);
        assert_eq!(warm.start_kinds.get("ready-clone"), Some(&20));
        assert_eq!(warm.unexpected_starts(), 0);
        assert_eq!(warm.error_count(), 0);
        assert_eq!(warm.reconnects, 0);
        let names: Vec<&str> = warm.phases.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["queue", "setup", "handler", "total"]);
        assert_eq!(
            warm.phases.get("setup").map(|p| (p.n, p.p50_ms)),
            Some((20, 0.2))
        );

        let ondemand = results.get("ondemand").expect("ondemand ran");
        assert_eq!(ondemand.start_kinds.get("on-demand-clone"), Some(&7));
        assert_eq!(ondemand.unexpected_starts(), 7);

        let cold = results.get("cold").expect("cold ran");
        assert_eq!(cold.latency.n, 3);
        assert_eq!(cold.phases.get("zygote").map(|p| p.n), Some(3));

        // One keep-alive connection per scenario that ran.
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn counts_error_responses() {
        let (url, _) = start_fake_daemon().await;
        let endpoint = Endpoint::parse(&url).expect("fake daemon URL");
        let mut broken = scenario("warm", "broken", "ready-clone", 4);
        broken.warmup = 0;
        let stats = run(&endpoint, &broken, Duration::from_secs(10))
            .await
            .expect("errors are counted, not fatal");
        assert_eq!(stats.latency.summary().n, 0);
        assert_eq!(stats.errors.get("503 PoolExhausted"), Some(&4));
    }

    #[tokio::test]
    async fn fails_when_every_warmup_request_fails() {
        let (url, _) = start_fake_daemon().await;
        let endpoint = Endpoint::parse(&url).expect("fake daemon URL");
        let missing = scenario("warm", "no-such-fn", "ready-clone", 4);
        let err = run(&endpoint, &missing, Duration::from_secs(10))
            .await
            .expect_err("unknown function must fail the run");
        assert!(err.to_string().contains("no-such-fn"), "{err:#}");
    }

    #[tokio::test]
    async fn counts_transport_errors_when_nothing_listens() {
        // Bind then drop, so the port is (almost certainly) closed.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback")
            .local_addr()
            .expect("bound address");
        let endpoint = Endpoint::parse(&format!("http://{addr}")).expect("URL");
        let mut s = scenario("warm", "noop", "ready-clone", 3);
        s.warmup = 0;
        let stats = run(&endpoint, &s, Duration::from_secs(10))
            .await
            .expect("counted");
        assert_eq!(stats.errors.values().sum::<u64>(), 3);
        assert!(stats.errors.keys().all(|k| k.starts_with("transport: ")));
    }
}
