//! Sending the scale suite's requests: one invocation checked against the
//! function's expected answer, the first touch of every function, the
//! trace replay (open loop, bounded in flight), and sequential requests to
//! one function; results by how the daemon served each request.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;

use super::functions::{self, PAYLOAD};
use super::tail::{self, TailBreakdown};
use super::trace::Arrival;
use crate::http::{Connection, Endpoint};
use crate::stats::{LatencyHistogram, Percentiles};

/// Errors kept verbatim in the results (the rest are only counted).
const KEPT_ERRORS: usize = 10;

/// Outcomes of a batch of requests.
#[derive(Debug, Default)]
pub struct Tally {
    /// By `x-fnhost-start`: ready-clone, refill-clone, on-demand-clone,
    /// cold-start, wake.
    /// Every request's latency and phases.
    pub by_start: BTreeMap<String, tail::Samples>,
    pub ok: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
    /// Replay arrivals not sent because `max_in_flight` were outstanding.
    pub shed: u64,
}

/// Latency percentiles by start kind, and counts, for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TallySummary {
    pub by_start: BTreeMap<String, Percentiles>,
    /// The slowest 1% of each start kind, phase by phase.
    pub tails: BTreeMap<String, TailBreakdown>,
    pub all: Option<Percentiles>,
    pub ok: u64,
    pub errors: u64,
    pub first_errors: Vec<String>,
    pub shed: u64,
}

impl Tally {
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.first_errors.len() < KEPT_ERRORS {
            self.first_errors.push(message);
        }
    }

    pub fn summary(&self) -> TallySummary {
        let histograms: BTreeMap<&String, LatencyHistogram> = self
            .by_start
            .iter()
            .map(|(k, samples)| (k, samples.histogram()))
            .collect();
        let mut all = LatencyHistogram::default();
        for h in histograms.values() {
            all.add(h);
        }
        TallySummary {
            by_start: histograms
                .iter()
                .map(|(k, h)| ((*k).clone(), h.summary()))
                .collect(),
            tails: self
                .by_start
                .iter()
                .filter_map(|(k, s)| Some((k.clone(), s.breakdown()?)))
                .collect(),
            all: (self.ok > 0).then(|| all.summary()),
            ok: self.ok,
            errors: self.errors,
            first_errors: self.first_errors.clone(),
            shed: self.shed,
        }
    }
}

/// Invokes function `index` once and records the outcome.
async fn invoke(endpoint: &Endpoint, index: usize, timeout: Duration, tally: &RefCell<Tally>) {
    let name = functions::name(index);
    let mut conn = Connection::new(endpoint.clone());
    let path = endpoint.invoke_path(&name);
    match conn
        .send(Method::POST, &path, Bytes::from_static(PAYLOAD), timeout)
        .await
    {
        Ok(reply)
            if reply.status.is_success() && functions::answer_is_correct(index, &reply.body) =>
        {
            let start = reply
                .header("x-fnhost-start")
                .unwrap_or("unknown")
                .to_owned();
            let mut t = tally.borrow_mut();
            t.ok += 1;
            t.by_start
                .entry(start)
                .or_default()
                .record(reply.elapsed, reply.header("server-timing"));
        }
        Ok(reply) => tally.borrow_mut().error(format!(
            "{name}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)])
        )),
        Err(e) => tally.borrow_mut().error(format!("{name}: {e:#}")),
    }
}

/// Invokes every function of `0..n` once, `concurrency` at a time.
pub async fn first_touch(
    endpoint: &Endpoint,
    n: usize,
    concurrency: usize,
    timeout: Duration,
) -> Tally {
    let tally = Rc::new(RefCell::new(Tally::default()));
    let next = Rc::new(std::cell::Cell::new(0usize));
    let workers = (0..concurrency.max(1)).map(|_| {
        let (tally, next, endpoint) = (tally.clone(), next.clone(), endpoint.clone());
        async move {
            loop {
                let index = next.get();
                if index >= n {
                    return;
                }
                next.set(index + 1);
                invoke(&endpoint, index, timeout, &tally).await;
            }
        }
    });
    futures_join(workers).await;
    Rc::try_unwrap(tally)
        .map(RefCell::into_inner)
        .unwrap_or_default()
}

/// Replays `arrivals` open loop: each request is sent at its time, unless
/// `max_in_flight` are outstanding (then it is shed and counted).
pub async fn replay(
    endpoint: &Endpoint,
    arrivals: &[Arrival],
    max_in_flight: usize,
    timeout: Duration,
) -> Tally {
    let tally = Rc::new(RefCell::new(Tally::default()));
    let in_flight = Rc::new(std::cell::Cell::new(0usize));
    let local = tokio::task::LocalSet::new();
    let start = tokio::time::Instant::now();
    local
        .run_until(async {
            let mut handles = Vec::new();
            for arrival in arrivals {
                tokio::time::sleep_until(start + Duration::from_secs_f64(arrival.at_s)).await;
                if in_flight.get() >= max_in_flight {
                    tally.borrow_mut().shed += 1;
                    continue;
                }
                in_flight.set(in_flight.get() + 1);
                let (tally, in_flight, endpoint) =
                    (tally.clone(), in_flight.clone(), endpoint.clone());
                let index = arrival.function;
                handles.push(tokio::task::spawn_local(async move {
                    invoke(&endpoint, index, timeout, &tally).await;
                    in_flight.set(in_flight.get() - 1);
                }));
            }
            for handle in handles {
                let _ = handle.await;
            }
        })
        .await;
    Rc::try_unwrap(tally)
        .map(RefCell::into_inner)
        .unwrap_or_default()
}

/// `n` sequential requests to function `index` after `warmup` untimed ones.
pub async fn sequential(
    endpoint: &Endpoint,
    index: usize,
    warmup: u64,
    n: u64,
    timeout: Duration,
) -> Tally {
    let scratch = RefCell::new(Tally::default());
    for _ in 0..warmup {
        invoke(endpoint, index, timeout, &scratch).await;
    }
    let tally = RefCell::new(Tally::default());
    for _ in 0..n {
        invoke(endpoint, index, timeout, &tally).await;
    }
    let mut out = tally.into_inner();
    let warm = scratch.into_inner();
    out.errors += warm.errors;
    out.first_errors.extend(warm.first_errors);
    out
}

/// Runs futures concurrently on the current task.
async fn futures_join<F: std::future::Future<Output = ()> + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let handles: Vec<_> = futures.map(tokio::task::spawn_local).collect();
            for handle in handles {
                let _ = handle.await;
            }
        })
        .await;
}

/// Seconds since `t`.
pub fn secs_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
