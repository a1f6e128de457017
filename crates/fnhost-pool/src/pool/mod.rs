//! The pool of one function: warm zygotes, pre-forked ready clones, pooled
//! cgroups, and the admission limit. This module holds the pool's state,
//! settings and status; each other concern has its own file below. The
//! pool drives processes only through [`Backend`] (`real.rs` in production).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use fnhost_config::{FunctionSpec, PoolSettings};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::budget::{MemoryBudget, Reclaimable};
use crate::ledger::LedgerShare;
use crate::telemetry::{Labels, PoolMetrics};

mod admission;
pub mod backend;
mod checkout;
mod evict;
#[cfg(test)]
mod fake;
mod hibernate;
mod outcome;
mod real;
mod refill;
mod scaling;
mod slots;

pub use backend::{Backend, CloneHandle, SlotHandle, ZygoteHandle};
pub use outcome::{Invocation, Timings};
pub use real::{PoolShared, RealBackend};

/// How a request got its sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// A pre-forked clone was waiting.
    ReadyClone,
    /// No ready clone was waiting, but the background refill was making
    /// one: the request waited for it (that wait is its queue time) rather
    /// than queue a fork of its own behind the refill's at the zygote.
    RefillClone,
    /// A warm zygote cloned a sandbox for this request.
    OnDemandClone,
    /// No zygote was running: one was started for this request.
    ColdStart,
    /// The zygote was hibernated: it was woken, then cloned.
    Wake,
}

impl StartKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadyClone => "ready-clone",
            Self::RefillClone => "refill-clone",
            Self::OnDemandClone => "on-demand-clone",
            Self::ColdStart => "cold-start",
            Self::Wake => "wake",
        }
    }
}

/// One unit of a gauge-like count, given back on drop.
pub(super) struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    pub(super) fn enter(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Counted(count)
    }

    /// Enters only while `count` stays below `bound`'s current value.
    pub(super) fn enter_below(count: &'a AtomicU64, bound: &AtomicU64) -> Option<Self> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < bound.load(Ordering::SeqCst)).then_some(n + 1)
            })
            .ok()
            .map(|_| Counted(count))
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counters shared by every pool of a host.
#[derive(Debug, Default)]
pub struct Ids {
    sandbox: AtomicU64,
    zygote: AtomicU64,
    /// Slot cgroups are numbered host-wide: a pool that replaces another
    /// of the same function (reload) never reuses a name the old one may
    /// still hold or be removing.
    slot: AtomicU64,
}

/// A snapshot of a pool, for the admin API, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PoolStatus {
    pub zygotes: usize,
    pub ready_clones: usize,
    pub free_cgroups: usize,
    pub in_flight: usize,
    pub queued: usize,
    pub evictions: u64,
    pub memory_bytes: u64,
    /// Zygotes hibernating now.
    pub hibernated: usize,
    /// Bytes of memory held in their snapshot files.
    pub snapshot_bytes: u64,
    /// Of those, bytes in the page cache: memory the kernel may reclaim
    /// (a wake-up then reads it back), charged to the daemon's cgroup, not
    /// to `memory_bytes`.
    pub snapshot_cached_bytes: u64,
    /// Of `snapshot_bytes`, bytes mapped from the sharing group's base
    /// (`hibernate_share_pages`): one page cache copy for the group.
    pub snapshot_shared_bytes: u64,
}

/// What a pool needs besides its backend.
pub struct PoolParts<B> {
    pub spec: FunctionSpec,
    pub backend: B,
    pub ids: Arc<Ids>,
    pub budget: Arc<MemoryBudget>,
    pub max_response: usize,
    /// Whether its metrics carry a `function` label.
    pub labels: Labels,
}

/// The pool of one function; `B` runs its processes.
pub struct FunctionPool<B: Backend = RealBackend> {
    pub spec: FunctionSpec,
    name: Arc<str>,
    settings: RwLock<PoolSettings>,
    backend: B,
    ids: Arc<Ids>,
    budget: Arc<MemoryBudget>,
    max_response: usize,
    zygotes: Mutex<Vec<Arc<B::Zygote>>>,
    ready: Mutex<VecDeque<B::Clone>>,
    free_slots: Arc<Mutex<Vec<B::Slot>>>,
    concurrency: Arc<Semaphore>,
    /// Permits the semaphore currently stands for (max_concurrency).
    permits: AtomicU32,
    queued: AtomicU64,
    in_flight: AtomicU64,
    /// Requests since the last refill pass that found no ready clone.
    misses: AtomicU64,
    /// Clones the refill is making now, and requests waiting to take one
    /// of them (never more than the clones: see `checkout`).
    refill_cloning: AtomicU64,
    refill_waiters: AtomicU64,
    /// Notified each time a refill clone is finished (or failed).
    refilled: Notify,
    wake: Arc<Notify>,
    cold_start: tokio::sync::Mutex<()>,
    /// One refill pass at a time (the refill loop and prewarm both run them).
    refilling: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    /// Set by a budget eviction (or prewarm = false): do not refill until
    /// the next request.
    dormant: AtomicBool,
    /// Hibernated since its last request: every zygote's memory is in its
    /// snapshot, asleep or mapped back to keep `hibernate_ready_clones`.
    sleeping: AtomicBool,
    last_used_ms: AtomicU64,
    zygote_bytes: AtomicU64,
    evictions: AtomicU64,
    /// When hibernating last failed (`now_ms`); 0 = never.
    hibernate_failed_ms: AtomicU64,
    /// What its zygotes and clones hold, as last reported to the budget
    /// (see [`Self::account_descriptors`]).
    descriptors: LedgerShare,
    /// The last measurement of its snapshots' page cache, for the gauge.
    cache_sample: Mutex<Option<CacheSample>>,
    metrics: PoolMetrics,
}

/// How often the published gauge of a pool's snapshot page cache is
/// measured again (the admin API's status always measures afresh): each
/// measurement opens every hibernated zygote's snapshot by name and walks
/// its page cache (`cachestat`). Done on every pass (every 10 s asleep)
/// with 5,000 functions hibernated, `cachestat` alone was 5.5% of the
/// host's CPU and the opens about 3% more (`perf`), growing with them.
const SNAPSHOT_CACHE_SAMPLE_MS: u64 = 60_000;

/// One measurement of a pool's snapshot page cache.
#[derive(Debug, Clone, Copy)]
struct CacheSample {
    taken_ms: u64,
    /// The snapshots' data bytes then: a hibernation or wake-up since
    /// changes them and calls for a new measurement.
    snapshot_bytes: u64,
    cached_bytes: u64,
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Milliseconds since the first call (a process-wide monotonic clock; the
/// tokio clock, so tests can pause and advance it).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl<B: Backend> FunctionPool<B> {
    /// Builds the pool and registers it with the memory budget; its refill
    /// loop ([`Self::maintain`]) is the caller's to spawn.
    pub fn with_backend(parts: PoolParts<B>) -> Arc<Self> {
        let PoolParts {
            spec,
            backend,
            ids,
            budget,
            max_response,
            labels,
        } = parts;
        let pool = Arc::new(FunctionPool {
            name: Arc::from(spec.name.as_str()),
            settings: RwLock::new(spec.pool),
            concurrency: Arc::new(Semaphore::new(spec.pool.max_concurrency as usize)),
            permits: AtomicU32::new(spec.pool.max_concurrency),
            dormant: AtomicBool::new(!spec.pool.prewarm),
            sleeping: AtomicBool::new(false),
            metrics: PoolMetrics::new(&spec.name, labels),
            spec,
            backend,
            ids,
            budget: budget.clone(),
            max_response,
            zygotes: Mutex::new(Vec::new()),
            ready: Mutex::new(VecDeque::new()),
            free_slots: Arc::new(Mutex::new(Vec::new())),
            queued: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            refill_cloning: AtomicU64::new(0),
            refill_waiters: AtomicU64::new(0),
            refilled: Notify::new(),
            wake: Arc::new(Notify::new()),
            cold_start: tokio::sync::Mutex::new(()),
            refilling: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            last_used_ms: AtomicU64::new(now_ms()),
            zygote_bytes: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            hibernate_failed_ms: AtomicU64::new(0),
            descriptors: budget.ledger_share(),
            cache_sample: Mutex::new(None),
        });
        let weak: std::sync::Weak<dyn Reclaimable> = Arc::downgrade(&pool) as _;
        budget.register(weak);
        pool
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records the dispatcher's share of one invocation (phase `dispatch`).
    pub fn record_dispatch(&self, seconds: f64) {
        self.metrics.phase.dispatch.record(seconds);
    }

    /// The pool settings in force.
    pub fn settings(&self) -> PoolSettings {
        *self.settings.read().expect("settings lock")
    }

    /// Applies new pool settings without restarting anything: the refill
    /// loop converges to the new zygote and ready-clone counts, and the
    /// concurrency limit is resized (a lower limit takes effect as
    /// in-flight invocations finish).
    pub fn update_settings(&self, new: PoolSettings) {
        let old = std::mem::replace(&mut *self.settings.write().expect("settings lock"), new);
        if new.max_concurrency != old.max_concurrency {
            self.resize_concurrency(new.max_concurrency);
        }
        if new.prewarm && !old.prewarm {
            self.dormant.store(false, Ordering::SeqCst);
        }
        tracing::info!(function = %self.name, ?new, "pool settings updated");
        self.wake.notify_one();
    }

    pub fn last_used_ms(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }

    /// The pool now, its snapshots' page cache measured afresh.
    pub fn status(&self) -> PoolStatus {
        self.status_with(true)
    }

    /// The pool now; with `!fresh_cache`, its snapshots' page cache as
    /// last measured, unless that is older than [`SNAPSHOT_CACHE_SAMPLE_MS`]
    /// or its snapshots changed since.
    fn status_with(&self, fresh_cache: bool) -> PoolStatus {
        // A sleeping pool's zygotes may be mapped back (awake, to keep
        // ready clones): their memory is still the snapshot's.
        let sleeping = self.sleeping.load(Ordering::SeqCst);
        let hibernated: Vec<_> = self
            .live_zygotes()
            .into_iter()
            .filter(|z| sleeping || z.is_asleep())
            .collect();
        let snapshot_bytes = hibernated.iter().map(|z| z.snapshot_bytes()).sum();
        let measure = || hibernated.iter().map(|z| z.snapshot_cached_bytes()).sum();
        let snapshot_cached_bytes = {
            let mut sample = self.cache_sample.lock().expect("cache sample lock");
            let now = now_ms();
            match *sample {
                Some(s)
                    if !fresh_cache
                        && s.snapshot_bytes == snapshot_bytes
                        && now.saturating_sub(s.taken_ms) < SNAPSHOT_CACHE_SAMPLE_MS =>
                {
                    s.cached_bytes
                }
                _ => {
                    let cached_bytes = measure();
                    *sample = Some(CacheSample {
                        taken_ms: now,
                        snapshot_bytes,
                        cached_bytes,
                    });
                    cached_bytes
                }
            }
        };
        PoolStatus {
            hibernated: hibernated.len(),
            snapshot_bytes,
            snapshot_cached_bytes,
            snapshot_shared_bytes: hibernated.iter().map(|z| z.snapshot_shared_bytes()).sum(),
            zygotes: self.live_zygotes().len(),
            ready_clones: self.ready.lock().expect("ready lock").len(),
            free_cgroups: self.free_slots.lock().expect("slots lock").len(),
            in_flight: self.in_flight.load(Ordering::SeqCst) as usize,
            queued: self.queued.load(Ordering::SeqCst) as usize,
            evictions: self.evictions.load(Ordering::Relaxed),
            memory_bytes: self.backend.memory_usage().unwrap_or(0),
        }
    }

    /// The pool's zygotes still alive (dead ones are dropped from the set).
    fn live_zygotes(&self) -> Vec<Arc<B::Zygote>> {
        let mut zygotes = self.zygotes.lock().expect("zygotes lock");
        zygotes.retain(|z| z.is_alive());
        zygotes.clone()
    }

    /// Reports what its zygotes and clones hold now to the budget's
    /// descriptor ledger. Called right after every change that can add
    /// descriptors (a zygote kept, a wake-up, a ready clone, a request
    /// admitted) and at the end of every pass that can remove some, so
    /// the cap is never checked against less than is held (dropping them
    /// is only counted late, which errs on the safe side).
    pub(super) fn account_descriptors(&self) {
        self.descriptors.report(Reclaimable::descriptors(self));
    }

    fn publish_gauges(&self) {
        self.account_descriptors();
        let status = self.status_with(false);
        let m = &self.metrics;
        m.zygotes.set(status.zygotes as f64);
        m.ready_clones.set(status.ready_clones as f64);
        m.in_flight.set(status.in_flight as f64);
        m.queued.set(status.queued as f64);
        m.memory.set(status.memory_bytes as f64);
        m.hibernated.set(status.hibernated as f64);
        m.snapshot_bytes.set(status.snapshot_bytes as f64);
        m.snapshot_cached_bytes
            .set(status.snapshot_cached_bytes as f64);
        m.snapshot_shared_bytes
            .set(status.snapshot_shared_bytes as f64);
    }
}

/// The budget sees a pool only through this trait (no dependency on the
/// pool module).
impl<B: Backend> Reclaimable for FunctionPool<B> {
    fn name(&self) -> &str {
        &self.name
    }

    fn last_used_ms(&self) -> u64 {
        FunctionPool::last_used_ms(self)
    }

    fn can_hibernate(&self) -> bool {
        FunctionPool::can_hibernate(self)
    }

    fn hibernate(&self) -> crate::budget::BoxFuture<'_, usize> {
        Box::pin(FunctionPool::hibernate(self))
    }

    fn evictable(&self) -> bool {
        FunctionPool::evictable(self)
    }

    fn evict_idle(&self) -> crate::budget::BoxFuture<'_, ()> {
        Box::pin(FunctionPool::evict_idle(self))
    }

    fn descriptors(&self) -> usize {
        let zygotes: usize = {
            let zygotes = self.zygotes.lock().expect("zygotes lock");
            zygotes
                .iter()
                .filter(|z| z.is_alive())
                .map(|z| z.descriptors())
                .sum()
        };
        let clones = self.ready.lock().expect("ready lock").len()
            + self.in_flight.load(Ordering::SeqCst) as usize;
        zygotes + clones * crate::budget::CLONE_DESCRIPTORS
    }
}
