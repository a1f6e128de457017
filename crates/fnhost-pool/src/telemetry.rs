//! The metric handles of one pool, registered once when the pool is built,
//! so recording a phase on the request path neither allocates label strings
//! nor looks the metric up in the registry.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

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
}

/// Every metric of one function's pool.
#[derive(Clone)]
pub struct PoolMetrics {
    pub phase: Phases,
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
}

impl PoolMetrics {
    pub fn new(function: &str) -> Self {
        let f = function.to_string();
        let phase = |name: &'static str| histogram!("fnhost_phase_seconds", "function" => f.clone(), "phase" => name);
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
            },
            zygote_start: histogram!("fnhost_zygote_start_seconds", "function" => f.clone()),
            zygote_starts: counter!("fnhost_zygote_starts_total", "function" => f.clone()),
            cold_starts: counter!("fnhost_cold_starts_total", "function" => f.clone()),
            timeouts: counter!("fnhost_timeouts_total", "function" => f.clone()),
            oom_kills: counter!("fnhost_oom_kills_total", "function" => f.clone()),
            cancelled: counter!("fnhost_invocations_cancelled_total", "function" => f.clone()),
            evictions: counter!("fnhost_evictions_total", "function" => f.clone()),
            zygotes: gauge!("fnhost_pool_zygotes", "function" => f.clone()),
            ready_clones: gauge!("fnhost_pool_ready_clones", "function" => f.clone()),
            in_flight: gauge!("fnhost_pool_in_flight", "function" => f.clone()),
            queued: gauge!("fnhost_pool_queued", "function" => f.clone()),
            memory: gauge!("fnhost_function_memory_bytes", "function" => f.clone()),
            hibernations: counter!("fnhost_hibernations_total", "function" => f.clone(), "result" => "ok"),
            hibernations_failed: counter!("fnhost_hibernations_total", "function" => f.clone(), "result" => "failed"),
            hibernate: histogram!("fnhost_hibernate_seconds", "function" => f.clone()),
            wakes: counter!("fnhost_wakes_total", "function" => f.clone(), "result" => "ok"),
            wakes_failed: counter!("fnhost_wakes_total", "function" => f.clone(), "result" => "failed"),
            wake: histogram!("fnhost_wake_seconds", "function" => f.clone()),
            wake_faults: counter!("fnhost_wake_faults_total", "function" => f.clone()),
            wake_prefetched_pages: counter!("fnhost_wake_prefetched_pages_total", "function" => f.clone()),
            wake_copied_pages: counter!("fnhost_wake_copied_pages_total", "function" => f.clone()),
            hibernated: gauge!("fnhost_pool_hibernated_zygotes", "function" => f.clone()),
            snapshot_bytes: gauge!("fnhost_pool_snapshot_bytes", "function" => f.clone()),
            snapshot_cached_bytes: gauge!("fnhost_pool_snapshot_cached_bytes", "function" => f),
        }
    }
}
