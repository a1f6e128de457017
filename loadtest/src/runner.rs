//! The open-loop runner. A pacer thread sends each request at its intended
//! time, whatever happened to earlier ones (no waiting for responses, no
//! coordinated omission); each request runs as its own task on a pool of
//! keep-alive HTTP/1 connections that grows as concurrency needs. Latency
//! is taken from the intended send time to the last byte of the response.
//!
//! The pacer is an OS thread sleeping with `nanosleep` (tens of µs of
//! slack) rather than a tokio timer (1 ms granularity), so that a warm
//! invocation of ~1 ms is not inflated by the generator's own clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::record::{server_timing_queue, Outcome, Recorder, Sample, StartKind};
use crate::schedule::{Arrival, Schedule};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client with an unbounded keep-alive pool (connections are opened as
/// concurrency needs and reused after).
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// GET a URL and return the body as text.
pub async fn get_text(client: &HttpClient, url: &str) -> anyhow::Result<String> {
    let uri: Uri = url.parse().with_context(|| format!("invalid URL {url}"))?;
    let req = Request::get(uri)
        .body(Full::new(Bytes::new()))
        .context("cannot build request")?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .with_context(|| format!("GET {url} timed out"))?
        .with_context(|| format!("GET {url} failed"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .with_context(|| format!("GET {url}: cannot read body"))?
        .to_bytes();
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Where requests go: function index i of a schedule invokes
/// `functions[i % functions.len()]`.
#[derive(Debug, Clone)]
pub struct Target {
    pub base_url: String,
    pub functions: Vec<String>,
}

impl Target {
    fn uris(&self) -> anyhow::Result<Vec<Uri>> {
        anyhow::ensure!(!self.functions.is_empty(), "no function to invoke");
        let base = self.base_url.trim_end_matches('/');
        self.functions
            .iter()
            .map(|f| {
                let url = format!("{base}/v1/functions/{f}/invoke");
                url.parse::<Uri>()
                    .with_context(|| format!("invalid URL {url}"))
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Requests in flight at most; beyond it arrivals are dropped and
    /// counted (never delayed: that would hide latency).
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub payload: Bytes,
}

#[derive(Debug)]
pub struct RunResult {
    pub recorder: Recorder,
    /// From the start of the schedule to the last response.
    pub wall: Duration,
    /// Arrivals not sent because the run was stopped.
    pub unsent: u64,
}

struct Shared {
    recorder: Recorder,
    last_done: Instant,
}

/// Plays `schedule` against `target`. `stop` ends pacing early (in-flight
/// requests still complete).
pub async fn run(
    client: &HttpClient,
    schedule: &Schedule,
    target: &Target,
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<RunResult> {
    let uris = Arc::new(target.uris()?);
    anyhow::ensure!(opts.max_in_flight >= 1, "max in flight must be at least 1");
    let permits = u32::try_from(opts.max_in_flight).context("max in flight is too large")?;
    let semaphore = Arc::new(Semaphore::new(opts.max_in_flight));
    // A short lead so the first arrivals are not late before we begin.
    let start = Instant::now() + Duration::from_millis(20);
    let shared = Arc::new(Mutex::new(Shared {
        recorder: Recorder::default(),
        last_done: start,
    }));
    let arrivals: Vec<Arrival> = schedule.arrivals.clone();
    let handle = tokio::runtime::Handle::current();
    let pacer = {
        let (client, shared, semaphore, opts) = (
            client.clone(),
            shared.clone(),
            semaphore.clone(),
            opts.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut sent = 0u64;
            'arrivals: for a in &arrivals {
                let intended = start + a.at;
                let now = loop {
                    if stop.load(Ordering::Relaxed) {
                        break 'arrivals;
                    }
                    let now = Instant::now();
                    if now >= intended {
                        break now;
                    }
                    std::thread::sleep((intended - now).min(Duration::from_millis(50)));
                };
                sent += 1;
                let send_lag = now - intended;
                let Ok(permit) = semaphore.clone().try_acquire_owned() else {
                    let sample = Sample {
                        latency: Duration::ZERO,
                        send_lag,
                        outcome: Outcome::Dropped,
                    };
                    shared
                        .lock()
                        .expect("recorder lock")
                        .recorder
                        .record(&sample);
                    continue;
                };
                let uri = uris[a.function % uris.len()].clone();
                let call = Call {
                    client: client.clone(),
                    uri,
                    payload: opts.payload.clone(),
                    timeout: opts.request_timeout,
                };
                handle.spawn(call.send(intended, send_lag, shared.clone(), permit));
            }
            sent
        })
    };
    let sent = pacer.await.context("the pacer thread panicked")?;
    // Every request holds a permit until it is recorded: taking them all
    // waits for the last one (each is bounded by the request timeout).
    let _all = semaphore
        .acquire_many(permits)
        .await
        .context("in-flight semaphore closed")?;
    let shared = shared.lock().expect("recorder lock");
    Ok(RunResult {
        recorder: shared.recorder.clone(),
        wall: shared.last_done.saturating_duration_since(start),
        unsent: (schedule.arrivals.len() as u64).saturating_sub(sent),
    })
}

struct Call {
    client: HttpClient,
    uri: Uri,
    payload: Bytes,
    timeout: Duration,
}

impl Call {
    async fn send(
        self,
        intended: Instant,
        send_lag: Duration,
        shared: Arc<Mutex<Shared>>,
        _permit: OwnedSemaphorePermit,
    ) {
        let outcome = match tokio::time::timeout(self.timeout, self.exchange()).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Transport,
            Err(_) => Outcome::Timeout,
        };
        let done = Instant::now();
        let sample = Sample {
            latency: done.saturating_duration_since(intended),
            send_lag,
            outcome,
        };
        let mut shared = shared.lock().expect("recorder lock");
        shared.recorder.record(&sample);
        shared.last_done = shared.last_done.max(done);
    }

    async fn exchange(self) -> anyhow::Result<Outcome> {
        let mut req = Request::post(self.uri).body(Full::new(self.payload))?;
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let resp = self.client.request(req).await?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let start = StartKind::from_header(header("x-fnhost-start").as_deref());
        let queue = header("server-timing")
            .as_deref()
            .and_then(server_timing_queue);
        // The response is complete when its body is.
        resp.into_body().collect().await?;
        Ok(if status == 200 {
            Outcome::Ok { start, queue }
        } else {
            Outcome::Status(status)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{synthetic, Bounds, Process};
    use crate::zipf::Zipf;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    /// A fake fnhost: function `ready` answers as a ready clone, `cold` as a
    /// cold start with a queue phase, `busy` with 429, anything else 404.
    async fn fake_host() -> (String, Arc<Mutex<BTreeMap<String, u64>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            assert_eq!(&body[..], b"{\"k\":1}");
                            *seen.lock().unwrap().entry(path.clone()).or_default() += 1;
                            let name = path.split('/').nth(3).unwrap_or("").to_string();
                            let r = Response::builder();
                            let r = match name.as_str() {
                                "ready" => r
                                    .header("x-fnhost-start", "ready-clone")
                                    .header("server-timing", "queue;dur=0.004, total;dur=0.9"),
                                "cold" => r
                                    .header("x-fnhost-start", "cold-start")
                                    .header("server-timing", "queue;dur=3.000, zygote;dur=30"),
                                "busy" => r
                                    .status(StatusCode::TOO_MANY_REQUESTS)
                                    .header("retry-after", "1"),
                                _ => r.status(StatusCode::NOT_FOUND),
                            };
                            Ok::<_, Infallible>(
                                r.body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn options(max_in_flight: usize) -> RunOptions {
        RunOptions {
            max_in_flight,
            request_timeout: Duration::from_secs(10),
            payload: Bytes::from_static(b"{\"k\":1}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_a_schedule_end_to_end_against_a_fake_host() {
        let (url, seen) = fake_host().await;
        let target = Target {
            base_url: url,
            functions: vec!["ready".into(), "cold".into(), "busy".into(), "nope".into()],
        };
        let z = Zipf::new(4, 0.0).unwrap();
        let bounds = Bounds {
            duration: Duration::from_secs(60),
            max_requests: Some(80),
        };
        let schedule = synthetic(Process::Constant, 400.0, &z, bounds, 3).unwrap();
        let per = schedule.per_function();
        let result = run(
            &http_client(),
            &schedule,
            &target,
            &options(64),
            Arc::new(AtomicBool::new(false)),
        )
        .await
        .unwrap();
        let r = &result.recorder;
        assert_eq!(result.unsent, 0);
        assert_eq!(r.sent(), 80);
        assert_eq!(r.ok, per[0] + per[1]);
        assert_eq!(r.by_start[&StartKind::ReadyClone].len(), per[0]);
        assert_eq!(r.by_start[&StartKind::ColdStart].len(), per[1]);
        assert_eq!(r.status_count(429), per[2]);
        assert_eq!(r.status_count(404), per[3]);
        assert_eq!(r.queue.len(), per[0] + per[1]);
        assert_eq!((r.transport_errors, r.timeouts, r.dropped), (0, 0, 0));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.get("/v1/functions/ready/invoke"), Some(&per[0]));
        assert_eq!(seen.values().sum::<u64>(), 80);
        assert!(result.wall >= schedule.arrivals.last().unwrap().at);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connection_failures_are_transport_errors_and_stop_ends_pacing() {
        // A port nothing listens on (bound, then closed).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let target = Target {
            base_url: format!("http://{addr}"),
            functions: vec!["f".into()],
        };
        let z = Zipf::new(1, 1.0).unwrap();
        let bounds = Bounds {
            duration: Duration::from_secs(60),
            max_requests: Some(5),
        };
        let schedule = synthetic(Process::Constant, 1000.0, &z, bounds, 1).unwrap();
        let result = run(
            &http_client(),
            &schedule,
            &target,
            &options(8),
            Arc::new(AtomicBool::new(false)),
        )
        .await
        .unwrap();
        assert_eq!(result.recorder.transport_errors, 5);
        assert_eq!(result.recorder.ok, 0);

        let stopped = run(
            &http_client(),
            &schedule,
            &target,
            &options(8),
            Arc::new(AtomicBool::new(true)),
        )
        .await
        .unwrap();
        assert_eq!(stopped.unsent, 5);
        assert_eq!(stopped.recorder.sent(), 0);
    }
}
