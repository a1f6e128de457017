//! What one request's outcome was, and the recorder that aggregates
//! outcomes into HDR histograms and counters as they arrive.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// How fnhost served a request (`x-fnhost-start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StartKind {
    ReadyClone,
    /// Waited for a clone the refill was making.
    RefillClone,
    OnDemandClone,
    ColdStart,
    /// Header missing or unknown (not fnhost, or a newer fnhost).
    Unknown,
}

impl StartKind {
    pub const ALL: [StartKind; 5] = [
        StartKind::ReadyClone,
        StartKind::RefillClone,
        StartKind::OnDemandClone,
        StartKind::ColdStart,
        StartKind::Unknown,
    ];

    pub fn from_header(value: Option<&str>) -> StartKind {
        match value {
            Some("ready-clone") => StartKind::ReadyClone,
            Some("refill-clone") => StartKind::RefillClone,
            Some("on-demand-clone") => StartKind::OnDemandClone,
            Some("cold-start") => StartKind::ColdStart,
            _ => StartKind::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StartKind::ReadyClone => "ready-clone",
            StartKind::RefillClone => "refill-clone",
            StartKind::OnDemandClone => "on-demand-clone",
            StartKind::ColdStart => "cold-start",
            StartKind::Unknown => "unknown",
        }
    }
}

/// Queue phase of a `Server-Timing` header (`queue;dur=0.012, …`, ms).
pub fn server_timing_queue(value: &str) -> Option<Duration> {
    value.split(',').find_map(|metric| {
        let mut parts = metric.trim().split(';');
        if parts.next()?.trim() != "queue" {
            return None;
        }
        let dur = parts.find_map(|p| p.trim().strip_prefix("dur="))?;
        let ms: f64 = dur.trim().parse().ok()?;
        (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200 from the function.
    Ok {
        start: StartKind,
        queue: Option<Duration>,
    },
    /// Any other HTTP status (429 and 503 are counted as rejections).
    Status(u16),
    /// Connect, write or read failure.
    Transport,
    /// No complete response within the request timeout.
    Timeout,
    /// Not sent: the client's in-flight cap was reached (the generator, not
    /// the server, was the bottleneck; raise --max-in-flight).
    Dropped,
}

/// One request's record.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// From the intended send time to the last byte of the response.
    pub latency: Duration,
    /// How late the generator actually sent it.
    pub send_lag: Duration,
    pub outcome: Outcome,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Aggregates samples; all latencies in microseconds.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Latency of successful (200) requests.
    pub latency: Histogram<u64>,
    /// The same, split by how the request was served.
    pub by_start: BTreeMap<StartKind, Histogram<u64>>,
    /// Server-side queue phase of successful requests.
    pub queue: Histogram<u64>,
    /// Latency of every answered request, whatever its status.
    pub answered: Histogram<u64>,
    pub send_lag: Histogram<u64>,
    pub ok: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub timeouts: u64,
    pub dropped: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: histogram(),
            by_start: StartKind::ALL.iter().map(|&k| (k, histogram())).collect(),
            queue: histogram(),
            answered: histogram(),
            send_lag: histogram(),
            ok: 0,
            statuses: BTreeMap::new(),
            transport_errors: 0,
            timeouts: 0,
            dropped: 0,
        }
    }
}

impl Recorder {
    pub fn record(&mut self, s: &Sample) {
        let latency = micros(s.latency);
        if !matches!(s.outcome, Outcome::Dropped) {
            self.send_lag.saturating_record(micros(s.send_lag));
        }
        match s.outcome {
            Outcome::Ok { start, queue } => {
                self.ok += 1;
                self.latency.saturating_record(latency);
                self.answered.saturating_record(latency);
                if let Some(h) = self.by_start.get_mut(&start) {
                    h.saturating_record(latency);
                }
                if let Some(q) = queue {
                    self.queue.saturating_record(micros(q));
                }
            }
            Outcome::Status(code) => {
                *self.statuses.entry(code).or_default() += 1;
                self.answered.saturating_record(latency);
            }
            Outcome::Transport => self.transport_errors += 1,
            Outcome::Timeout => self.timeouts += 1,
            Outcome::Dropped => self.dropped += 1,
        }
    }

    /// Requests that reached the wire.
    pub fn sent(&self) -> u64 {
        self.ok + self.statuses.values().sum::<u64>() + self.transport_errors + self.timeouts
    }

    pub fn status_count(&self, code: u16) -> u64 {
        self.statuses.get(&code).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_kind_and_queue_phase() {
        assert_eq!(
            StartKind::from_header(Some("cold-start")),
            StartKind::ColdStart
        );
        assert_eq!(
            StartKind::from_header(Some("ready-clone")),
            StartKind::ReadyClone
        );
        assert_eq!(StartKind::from_header(None), StartKind::Unknown);
        let st = "queue;dur=2.500, clone;dur=0.800, setup;dur=0.1, total;dur=4.2";
        assert_eq!(server_timing_queue(st), Some(Duration::from_micros(2500)));
        assert_eq!(server_timing_queue("total;dur=1"), None);
        assert_eq!(
            server_timing_queue("queue;desc=\"x\";dur=0.010"),
            Some(Duration::from_micros(10))
        );
        assert_eq!(server_timing_queue("queue;dur=abc"), None);
    }

    #[test]
    fn counts_each_outcome() {
        let mut r = Recorder::default();
        let s = |ms: u64, outcome| Sample {
            latency: Duration::from_millis(ms),
            send_lag: Duration::ZERO,
            outcome,
        };
        r.record(&s(
            1,
            Outcome::Ok {
                start: StartKind::ReadyClone,
                queue: Some(Duration::ZERO),
            },
        ));
        r.record(&s(
            40,
            Outcome::Ok {
                start: StartKind::ColdStart,
                queue: None,
            },
        ));
        r.record(&s(2, Outcome::Status(429)));
        r.record(&s(2, Outcome::Status(429)));
        r.record(&s(3, Outcome::Status(503)));
        r.record(&s(0, Outcome::Transport));
        r.record(&s(0, Outcome::Timeout));
        r.record(&s(0, Outcome::Dropped));
        assert_eq!((r.ok, r.status_count(429), r.status_count(503)), (2, 2, 1));
        assert_eq!((r.transport_errors, r.timeouts, r.dropped), (1, 1, 1));
        assert_eq!(r.sent(), 7);
        assert_eq!(r.latency.len(), 2);
        assert_eq!(r.answered.len(), 5);
        assert_eq!(r.queue.len(), 1);
        assert_eq!(r.send_lag.len(), 7);
        assert_eq!(r.by_start[&StartKind::ColdStart].len(), 1);
    }
}
