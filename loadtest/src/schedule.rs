//! Arrival schedules, computed up front: when each request is *intended*
//! to be sent and to which function. Latency is measured from these
//! intended times, so a slow server cannot slow the generator down and hide
//! its own queueing (no coordinated omission). The same seed gives the same
//! schedule, so every pool configuration sees identical traffic.

use std::time::Duration;

use crate::rng::Rng;
use crate::trace::Trace;
use crate::zipf::Zipf;

/// One request: intended send time (from the start of the run) and the
/// index of the function it targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub at: Duration,
    pub function: usize,
}

/// How inter-arrival times are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Process {
    /// Exactly 1/rate apart.
    Constant,
    /// Exponentially distributed gaps with mean 1/rate (a Poisson process).
    Poisson,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub arrivals: Vec<Arrival>,
    /// Nominal length of the run: the offered rate is arrivals / span.
    pub span: Duration,
    /// Number of distinct functions the arrivals may target.
    pub functions: usize,
}

impl Schedule {
    pub fn offered_rate(&self) -> f64 {
        if self.span.is_zero() {
            return 0.0;
        }
        self.arrivals.len() as f64 / self.span.as_secs_f64()
    }

    /// Requests per function index.
    pub fn per_function(&self) -> Vec<u64> {
        let mut counts = vec![0; self.functions];
        for a in &self.arrivals {
            counts[a.function] += 1;
        }
        counts
    }
}

/// Bounds shared by every generator: whichever is reached first.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub duration: Duration,
    pub max_requests: Option<usize>,
}

impl Bounds {
    fn full(&self, n: usize) -> bool {
        self.max_requests.is_some_and(|max| n >= max)
    }
}

/// Open-loop arrivals at `rate` per second, each to a function drawn from
/// `popularity`.
pub fn synthetic(
    process: Process,
    rate: f64,
    popularity: &Zipf,
    bounds: Bounds,
    seed: u64,
) -> anyhow::Result<Schedule> {
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "rate must be positive, got {rate}"
    );
    let mut gaps = Rng::derive(seed, 1);
    let mut choice = Rng::derive(seed, 2);
    let horizon = bounds.duration.as_secs_f64();
    let mut arrivals = Vec::new();
    let mut t = 0.0;
    let mut i = 0u64;
    loop {
        let at = match process {
            Process::Constant => i as f64 / rate,
            Process::Poisson => {
                t += gaps.exp(1.0 / rate);
                t
            }
        };
        if at >= horizon || bounds.full(arrivals.len()) {
            break;
        }
        arrivals.push(Arrival {
            at: Duration::from_secs_f64(at),
            function: popularity.sample(&mut choice),
        });
        i += 1;
    }
    let span = if bounds.full(arrivals.len()) {
        Duration::from_secs_f64(arrivals.len() as f64 / rate)
    } else {
        bounds.duration
    };
    Ok(Schedule {
        arrivals,
        span,
        functions: popularity.len(),
    })
}

/// Replay options of a trace.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    /// Real time one trace minute takes (1 s = 60× compression).
    pub minute: Duration,
    /// First trace minute replayed (0-based).
    pub start_minute: usize,
    /// Multiplier on every count (fractions are rounded randomly).
    pub scale: f64,
}

/// Arrivals of a trace: each minute's count for a function becomes that many
/// requests at uniformly random instants within the (compressed) minute.
/// Function i of the schedule is the trace's row i.
pub fn replay(
    trace: &Trace,
    replay: Replay,
    bounds: Bounds,
    seed: u64,
) -> anyhow::Result<Schedule> {
    anyhow::ensure!(
        !replay.minute.is_zero(),
        "a trace minute must last more than zero time"
    );
    anyhow::ensure!(
        replay.scale.is_finite() && replay.scale >= 0.0,
        "trace scale must be >= 0"
    );
    anyhow::ensure!(
        replay.start_minute < trace.minutes,
        "start minute {} is past the trace's {} minutes",
        replay.start_minute,
        trace.minutes
    );
    let minute = replay.minute.as_secs_f64();
    let by_duration = (bounds.duration.as_secs_f64() / minute).ceil() as usize;
    let minutes = by_duration.min(trace.minutes - replay.start_minute);
    let mut rng = Rng::derive(seed, 3);
    let mut arrivals = Vec::new();
    for m in 0..minutes {
        for (f, row) in trace.functions.iter().enumerate() {
            let want = f64::from(row.counts[replay.start_minute + m]) * replay.scale;
            let mut n = want.floor() as u64;
            if rng.next_f64() < want - want.floor() {
                n += 1;
            }
            for _ in 0..n {
                let at = (m as f64 + rng.next_f64()) * minute;
                if at < bounds.duration.as_secs_f64() {
                    arrivals.push(Arrival {
                        at: Duration::from_secs_f64(at),
                        function: f,
                    });
                }
            }
        }
    }
    arrivals.sort_by_key(|a| a.at);
    let mut span = Duration::from_secs_f64(minutes as f64 * minute).min(bounds.duration);
    if let Some(max) = bounds.max_requests {
        if arrivals.len() > max {
            arrivals.truncate(max);
            span = arrivals.last().map_or(Duration::ZERO, |a| a.at);
        }
    }
    Ok(Schedule {
        arrivals,
        span,
        functions: trace.functions.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceFunction;

    fn bounds(secs: u64) -> Bounds {
        Bounds {
            duration: Duration::from_secs(secs),
            max_requests: None,
        }
    }

    #[test]
    fn constant_rate_is_evenly_spaced() {
        let z = Zipf::new(1, 1.0).unwrap();
        let s = synthetic(Process::Constant, 100.0, &z, bounds(2), 1).unwrap();
        assert_eq!(s.arrivals.len(), 200);
        for (i, a) in s.arrivals.iter().enumerate() {
            assert!((a.at.as_secs_f64() - i as f64 / 100.0).abs() < 1e-9);
        }
        assert!((s.offered_rate() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn poisson_gaps_have_exponential_statistics() {
        let z = Zipf::new(1, 1.0).unwrap();
        let rate = 500.0;
        let s = synthetic(Process::Poisson, rate, &z, bounds(100), 42).unwrap();
        let n = s.arrivals.len() as f64;
        // Count ~ Poisson(50_000): within 5 sd.
        assert!((n - 50_000.0).abs() < 5.0 * 50_000f64.sqrt(), "{n}");
        let gaps: Vec<f64> = s
            .arrivals
            .windows(2)
            .map(|w| (w[1].at - w[0].at).as_secs_f64() * rate)
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Exponential(1): mean 1, variance 1 (coefficient of variation 1,
        // unlike constant arrivals' 0).
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
        // Counts in 1-second windows are Poisson: variance ≈ mean.
        let mut windows = vec![0f64; 100];
        for a in &s.arrivals {
            windows[a.at.as_secs() as usize] += 1.0;
        }
        let wm = windows.iter().sum::<f64>() / 100.0;
        let wv = windows.iter().map(|w| (w - wm).powi(2)).sum::<f64>() / 99.0;
        assert!(wv / wm > 0.6 && wv / wm < 1.5, "dispersion {}", wv / wm);
        assert!(s.arrivals.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn same_seed_same_schedule() {
        let z = Zipf::new(10, 1.0).unwrap();
        let a = synthetic(Process::Poisson, 200.0, &z, bounds(3), 9).unwrap();
        let b = synthetic(Process::Poisson, 200.0, &z, bounds(3), 9).unwrap();
        let c = synthetic(Process::Poisson, 200.0, &z, bounds(3), 10).unwrap();
        assert_eq!(a.arrivals, b.arrivals);
        assert_ne!(a.arrivals, c.arrivals);
    }

    #[test]
    fn zipf_targets_and_request_cap() {
        let z = Zipf::new(8, 1.0).unwrap();
        let capped = Bounds {
            duration: Duration::from_secs(1000),
            max_requests: Some(4000),
        };
        let s = synthetic(Process::Constant, 1000.0, &z, capped, 5).unwrap();
        assert_eq!(s.arrivals.len(), 4000);
        assert_eq!(s.span, Duration::from_secs(4));
        let per = s.per_function();
        assert_eq!(per.iter().sum::<u64>(), 4000);
        assert!(per[0] > per[1] && per[1] > per[7], "{per:?}");
    }

    fn tiny_trace() -> Trace {
        let row = |name: &str, counts: Vec<u32>| TraceFunction {
            owner: "o".into(),
            app: "a".into(),
            function: name.into(),
            trigger: "http".into(),
            counts,
        };
        Trace {
            minutes: 3,
            functions: vec![row("hot", vec![10, 20, 30]), row("cold", vec![0, 1, 0])],
        }
    }

    #[test]
    fn trace_replay_places_each_minute_in_its_compressed_window() {
        let t = tiny_trace();
        let r = Replay {
            minute: Duration::from_millis(500),
            start_minute: 0,
            scale: 1.0,
        };
        let s = replay(&t, r, bounds(60), 1).unwrap();
        assert_eq!(s.arrivals.len(), 61);
        assert_eq!(s.span, Duration::from_millis(1500));
        assert_eq!(s.per_function(), vec![60, 1]);
        let in_minute = |m: u64| {
            s.arrivals
                .iter()
                .filter(|a| a.at.as_millis() as u64 / 500 == m)
                .count()
        };
        assert_eq!((in_minute(0), in_minute(1), in_minute(2)), (10, 21, 30));
        let cold = s.arrivals.iter().find(|a| a.function == 1).unwrap();
        assert!(cold.at >= Duration::from_millis(500) && cold.at < Duration::from_millis(1000));
    }

    #[test]
    fn trace_replay_start_scale_and_bounds() {
        let t = tiny_trace();
        let r = Replay {
            minute: Duration::from_secs(1),
            start_minute: 1,
            scale: 2.0,
        };
        let s = replay(&t, r, bounds(60), 1).unwrap();
        assert_eq!(s.per_function(), vec![100, 2]);
        // Duration cuts the replay at 1 s: only minute 1.
        let s = replay(&t, r, bounds(1), 1).unwrap();
        assert_eq!(s.arrivals.len(), 42);
        assert_eq!(s.span, Duration::from_secs(1));
        let capped = Bounds {
            duration: Duration::from_secs(60),
            max_requests: Some(5),
        };
        assert_eq!(replay(&t, r, capped, 1).unwrap().arrivals.len(), 5);
        let past = Replay {
            start_minute: 3,
            ..r
        };
        assert!(replay(&t, past, bounds(60), 1).is_err());
    }
}
