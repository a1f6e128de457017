//! The metric handles of one pool, registered once when the pool is built,
//! so recording a phase on the request path neither allocates label strings
//! nor looks the metric up in the registry. Whether they carry a `function`
//! label or are summed over every pool is decided here ([`Labels`]).

use std::sync::{Arc, Mutex};

use metrics::{counter, gauge, histogram, Counter, Gauge, GaugeFn, Histogram};

/// How a pool's metrics are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    /// Every metric carries `function="<name>"`.
    PerFunction,
    /// No `function` label: counters and histograms of every such pool add
    /// up in one series, gauges are the sum of the pools' values. Keeps
    /// `/metrics` bounded however many functions a host defines.
    Summed,
}

impl Labels {
    /// Per function while `functions` (the config's count) is at most
    /// `max` (`server.function_metrics_max`).
    pub fn for_host(functions: usize, max: usize) -> Labels {
        if functions <= max {
            Labels::PerFunction
        } else {
            Labels::Summed
        }
    }

    /// One function's labelling on a host labelled `self`: its own series
    /// when it asked for them (`detailed_metrics`), else the host's.
    pub fn for_function(self, detailed: bool) -> Labels {
        if detailed {
            Labels::PerFunction
        } else {
            self
        }
    }
}

/// `fnhost_phase_seconds{function, phase}` for each phase a pool records.
#[derive(Clone)]
pub struct Phases {
    pub queue: Histogram,
    pub handler: Histogram,
    pub exchange: Histogram,
    pub invoke_total: Histogram,
    pub clone: Histogram,
    pub cgroup_attach: Histogram,
    pub mount: Histogram,
    pub network: Histogram,
    /// Mapping a clone's ids in its own user namespace.
    pub user_namespace: Histogram,
    pub drop_privileges: Histogram,
    pub seccomp: Histogram,
    pub teardown: Histogram,
    /// The dispatcher's share (request admission and response building).
    pub dispatch: Histogram,
}

/// Every metric of one function's pool.
#[derive(Clone)]
pub struct PoolMetrics {
    pub phase: Phases,
    /// `fnhost_clone_page_faults{stage="ready"}`: a clone's page faults
    /// before its request (setup, rehearsal).
    pub faults_ready: Histogram,
    /// `fnhost_clone_page_faults{stage="invocation"}`: from the request to
    /// the answer.
    pub faults_invocation: Histogram,
    pub zygote_start: Histogram,
    pub zygote_starts: Counter,
    pub cold_starts: Counter,
    pub timeouts: Counter,
    pub oom_kills: Counter,
    /// Invocations whose caller went away before the answer.
    pub cancelled: Counter,
    pub evictions: Counter,
    pub zygotes: Gauge,
    pub ready_clones: Gauge,
    pub in_flight: Gauge,
    pub queued: Gauge,
    pub memory: Gauge,
    pub hibernations: Counter,
    pub hibernations_failed: Counter,
    pub hibernate: Histogram,
    pub wakes: Counter,
    pub wakes_failed: Counter,
    pub wake: Histogram,
    pub wake_faults: Counter,
    pub wake_prefetched_pages: Counter,
    pub wake_copied_pages: Counter,
    pub hibernated: Gauge,
    pub snapshot_bytes: Gauge,
    pub snapshot_cached_bytes: Gauge,
    pub snapshot_shared_bytes: Gauge,
}

/// Builds handles with or without the `function` label.
struct Registrar {
    function: Option<String>,
}

impl Registrar {
    fn labels(&self, extra: &[(&'static str, &'static str)]) -> Vec<metrics::Label> {
        let mut labels: Vec<metrics::Label> = self
            .function
            .iter()
            .map(|f| metrics::Label::new("function", f.clone()))
            .collect();
        labels.extend(extra.iter().map(|&(k, v)| metrics::Label::new(k, v)));
        labels
    }

    fn histogram(&self, name: &'static str, extra: &[(&'static str, &'static str)]) -> Histogram {
        histogram!(name, self.labels(extra))
    }

    fn counter(&self, name: &'static str, extra: &[(&'static str, &'static str)]) -> Counter {
        counter!(name, self.labels(extra))
    }

    /// Per function: the function's own gauge. Summed: this pool's share
    /// of the gauge every pool adds to.
    fn gauge(&self, name: &'static str) -> Gauge {
        let handle = gauge!(name, self.labels(&[]));
        if self.function.is_some() {
            handle
        } else {
            Gauge::from_arc(Arc::new(Share::new(handle)))
        }
    }
}

impl PoolMetrics {
    pub fn new(function: &str, labels: Labels) -> Self {
        let r = Registrar {
            function: (labels == Labels::PerFunction).then(|| function.to_string()),
        };
        let phase = |name: &'static str| r.histogram("fnhost_phase_seconds", &[("phase", name)]);
        PoolMetrics {
            phase: Phases {
                queue: phase("queue"),
                handler: phase("handler"),
                exchange: phase("exchange"),
                invoke_total: phase("invoke_total"),
                clone: phase("clone"),
                cgroup_attach: phase("cgroup_attach"),
                mount: phase("mount"),
                network: phase("network"),
                user_namespace: phase("user_namespace"),
                drop_privileges: phase("drop_privileges"),
                seccomp: phase("seccomp"),
                teardown: phase("teardown"),
                dispatch: phase("dispatch"),
            },
            faults_ready: r.histogram("fnhost_clone_page_faults", &[("stage", "ready")]),
            faults_invocation: r.histogram("fnhost_clone_page_faults", &[("stage", "invocation")]),
            zygote_start: r.histogram("fnhost_zygote_start_seconds", &[]),
            zygote_starts: r.counter("fnhost_zygote_starts_total", &[]),
            cold_starts: r.counter("fnhost_cold_starts_total", &[]),
            timeouts: r.counter("fnhost_timeouts_total", &[]),
            oom_kills: r.counter("fnhost_oom_kills_total", &[]),
            cancelled: r.counter("fnhost_invocations_cancelled_total", &[]),
            evictions: r.counter("fnhost_evictions_total", &[]),
            zygotes: r.gauge("fnhost_pool_zygotes"),
            ready_clones: r.gauge("fnhost_pool_ready_clones"),
            in_flight: r.gauge("fnhost_pool_in_flight"),
            queued: r.gauge("fnhost_pool_queued"),
            memory: r.gauge("fnhost_function_memory_bytes"),
            hibernations: r.counter("fnhost_hibernations_total", &[("result", "ok")]),
            hibernations_failed: r.counter("fnhost_hibernations_total", &[("result", "failed")]),
            hibernate: r.histogram("fnhost_hibernate_seconds", &[]),
            wakes: r.counter("fnhost_wakes_total", &[("result", "ok")]),
            wakes_failed: r.counter("fnhost_wakes_total", &[("result", "failed")]),
            wake: r.histogram("fnhost_wake_seconds", &[]),
            wake_faults: r.counter("fnhost_wake_faults_total", &[]),
            wake_prefetched_pages: r.counter("fnhost_wake_prefetched_pages_total", &[]),
            wake_copied_pages: r.counter("fnhost_wake_copied_pages_total", &[]),
            hibernated: r.gauge("fnhost_pool_hibernated_zygotes"),
            snapshot_bytes: r.gauge("fnhost_pool_snapshot_bytes"),
            snapshot_cached_bytes: r.gauge("fnhost_pool_snapshot_cached_bytes"),
            snapshot_shared_bytes: r.gauge("fnhost_pool_snapshot_shared_bytes"),
        }
    }
}

/// One pool's share of a gauge summed over pools: `set` moves the sum by
/// the difference from the pool's last value, and dropping the pool (its
/// last handle) takes its share back out.
struct Share {
    total: Gauge,
    mine: Mutex<f64>,
}

impl Share {
    fn new(total: Gauge) -> Share {
        Share {
            total,
            mine: Mutex::new(0.0),
        }
    }

    fn add(&self, delta: f64) {
        // The sum moves under the lock, so concurrent sets of one pool
        // leave the sum equal to the last value set.
        let mut mine = self.mine.lock().unwrap_or_else(|e| e.into_inner());
        *mine += delta;
        self.total.increment(delta);
    }
}

impl GaugeFn for Share {
    fn increment(&self, value: f64) {
        self.add(value);
    }

    fn decrement(&self, value: f64) {
        self.add(-value);
    }

    fn set(&self, value: f64) {
        let mut mine = self.mine.lock().unwrap_or_else(|e| e.into_inner());
        self.total.increment(value - *mine);
        *mine = value;
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mine = *self.mine.get_mut().unwrap_or_else(|e| e.into_inner());
        self.total.decrement(mine);
    }
}

#[cfg(test)]
mod tests;
