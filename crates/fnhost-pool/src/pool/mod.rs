//! The pool of one function: warm zygotes, pre-forked ready clones, pooled
//! cgroups, and the admission limit. A background task keeps the configured
//! number of zygotes and ready clones; a request takes a ready clone, or
//! clones on demand, or (with no zygote) cold-starts one. Pool settings can
//! change while it runs (config reload); the memory budget can evict its
//! idle zygotes for other functions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use fnhost_config::{FunctionSpec, PoolSettings};
use fnhost_sandbox::cgroup::{Cgroup, CgroupLimits, CgroupTree};
use fnhost_zygote::protocol::InvokeMeta;
use fnhost_zygote::spec::ZygoteSpec;
use tokio::sync::{Notify, Semaphore};

use crate::budget::{MemoryBudget, Need};
use crate::error::InvokeError;
use crate::hibernation::SnapshotStore;
use crate::process::IdMap;
use crate::sandbox::{RunOutcome, Sandbox, Slot};
use crate::telemetry::PoolMetrics;
use crate::zygote::{CloneError, Placement, Zygote};

mod hibernate;

/// How long a zygote may take to start its runtime and import the function.
const ZYGOTE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// uid and gid function code runs as inside a user namespace.
pub const SANDBOX_UID: u32 = 1000;
/// Least idle time before a zygote added by scale-out is stopped.
const SCALE_IN_IDLE_MS: u64 = 30_000;
/// Pause before hibernating again after a hibernation failed.
const HIBERNATE_RETRY_MS: u64 = 60_000;
/// Longest pause between refill attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a request got its sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// A pre-forked clone was waiting.
    ReadyClone,
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
            Self::OnDemandClone => "on-demand-clone",
            Self::ColdStart => "cold-start",
            Self::Wake => "wake",
        }
    }
}

/// Where the time of one invocation went, microseconds.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub queue_us: u64,
    /// Starting a zygote (cold starts only).
    pub zygote_us: u64,
    /// Waking a hibernated zygote (wake-ups only).
    pub wake_us: u64,
    /// `clone3` in the zygote (on-demand and cold starts; a ready clone paid
    /// it ahead of time).
    pub clone_us: u64,
    /// The clone's own setup: cgroup attach, mounts, privilege drop.
    pub setup_us: u64,
    pub handler_us: u64,
    /// Sending the payload and receiving the result, minus the handler.
    pub exchange_us: u64,
    pub total_us: u64,
}

/// A successful invocation.
#[derive(Debug)]
pub struct Invocation {
    pub body: Vec<u8>,
    pub start: StartKind,
    pub sandbox_id: u64,
    pub timings: Timings,
}

/// Counters shared by every pool of a host.
#[derive(Debug, Default)]
pub struct Ids {
    sandbox: AtomicU64,
    zygote: AtomicU64,
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
}

/// What every pool of a host shares.
#[derive(Clone)]
pub struct PoolShared {
    pub tree: Arc<CgroupTree>,
    pub ids: Arc<Ids>,
    pub budget: Arc<MemoryBudget>,
    pub max_response: usize,
    /// The user namespace mapping, when sandboxes run in one.
    pub userns: Option<IdMap>,
    pub snapshots: Arc<SnapshotStore>,
}

pub struct FunctionPool {
    pub spec: FunctionSpec,
    name: Arc<str>,
    settings: RwLock<PoolSettings>,
    zygote_spec: ZygoteSpec,
    tree: Arc<CgroupTree>,
    zygote_cgroup: Cgroup,
    limits: CgroupLimits,
    ids: Arc<Ids>,
    budget: Arc<MemoryBudget>,
    max_response: usize,
    userns: Option<IdMap>,
    snapshots: Arc<SnapshotStore>,
    zygotes: Mutex<Vec<Arc<Zygote>>>,
    ready: Mutex<VecDeque<Sandbox>>,
    free_slots: Arc<Mutex<Vec<Slot>>>,
    next_slot: AtomicU64,
    concurrency: Arc<Semaphore>,
    /// Permits the semaphore currently stands for (max_concurrency).
    permits: AtomicU32,
    queued: AtomicU64,
    in_flight: AtomicU64,
    /// Requests since the last refill pass that found no ready clone.
    misses: AtomicU64,
    wake: Arc<Notify>,
    cold_start: tokio::sync::Mutex<()>,
    /// One refill pass at a time (the refill loop and prewarm both run them).
    refilling: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    /// Set by a budget eviction (or prewarm = false): do not refill until
    /// the next request.
    dormant: AtomicBool,
    last_used_ms: AtomicU64,
    zygote_bytes: AtomicU64,
    evictions: AtomicU64,
    /// When hibernating last failed (`now_ms`); 0 = never.
    hibernate_failed_ms: AtomicU64,
    metrics: PoolMetrics,
}

/// Runs futures concurrently on the current task; results come back in
/// input order.
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, fut) in pending.iter_mut().enumerate() {
            if results[i].is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => results[i] = Some(out),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future completed"))
        .collect()
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Milliseconds since the first call (a process-wide monotonic clock).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl FunctionPool {
    pub fn new(
        spec: FunctionSpec,
        zygote_spec: ZygoteSpec,
        zygote_cgroup: Cgroup,
        shared: PoolShared,
    ) -> Arc<Self> {
        let PoolShared {
            tree,
            ids,
            budget,
            max_response,
            userns,
            snapshots,
        } = shared;
        let spec_name = spec.name.clone();
        let limits = CgroupLimits::from_cpus(
            spec.limits.memory_bytes(),
            spec.limits.cpu,
            spec.limits.pids,
        );
        let pool = Arc::new(FunctionPool {
            name: Arc::from(spec.name.as_str()),
            settings: RwLock::new(spec.pool),
            concurrency: Arc::new(Semaphore::new(spec.pool.max_concurrency as usize)),
            permits: AtomicU32::new(spec.pool.max_concurrency),
            dormant: AtomicBool::new(!spec.pool.prewarm),
            spec,
            zygote_spec,
            tree,
            zygote_cgroup,
            limits,
            ids,
            budget: budget.clone(),
            max_response,
            userns,
            snapshots,
            zygotes: Mutex::new(Vec::new()),
            ready: Mutex::new(VecDeque::new()),
            free_slots: Arc::new(Mutex::new(Vec::new())),
            next_slot: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
            cold_start: tokio::sync::Mutex::new(()),
            refilling: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            last_used_ms: AtomicU64::new(now_ms()),
            zygote_bytes: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            hibernate_failed_ms: AtomicU64::new(0),
            metrics: PoolMetrics::new(&spec_name),
        });
        budget.register(&pool);
        pool
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What this pool's zygotes are started from.
    pub fn zygote_spec(&self) -> &ZygoteSpec {
        &self.zygote_spec
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
            let previous = self.permits.swap(new.max_concurrency, Ordering::SeqCst);
            if new.max_concurrency > previous {
                self.concurrency
                    .add_permits((new.max_concurrency - previous) as usize);
            } else {
                let surplus = previous - new.max_concurrency;
                let semaphore = self.concurrency.clone();
                tokio::spawn(async move {
                    if let Ok(permits) = semaphore.acquire_many(surplus).await {
                        permits.forget();
                    }
                });
            }
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

    /// True when the pool holds warm processes and nothing is running.
    pub fn evictable(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
            && (!self.zygotes.lock().expect("zygotes lock").is_empty()
                || !self.ready.lock().expect("ready lock").is_empty())
    }

    /// Takes every ready clone and zygote out of the pool.
    fn take_all(&self) -> (Vec<Sandbox>, Vec<Arc<Zygote>>) {
        let ready = self.ready.lock().expect("ready lock").drain(..).collect();
        let zygotes = self
            .zygotes
            .lock()
            .expect("zygotes lock")
            .drain(..)
            .collect();
        (ready, zygotes)
    }

    /// Stops every idle zygote and ready clone; the pool stays dormant (no
    /// refill) until its next request.
    pub async fn evict_idle(&self) {
        self.dormant.store(true, Ordering::SeqCst);
        self.evictions.fetch_add(1, Ordering::Relaxed);
        self.metrics.evictions.increment(1);
        let (ready, zygotes) = self.take_all();
        for sandbox in ready {
            sandbox.kill();
            self.spawn_teardown(sandbox);
        }
        for zygote in zygotes {
            zygote.kill();
        }
        self.publish_gauges();
    }

    pub fn status(&self) -> PoolStatus {
        let zygotes = self.live_zygotes();
        PoolStatus {
            hibernated: zygotes.iter().filter(|z| z.is_asleep()).count(),
            snapshot_bytes: zygotes.iter().map(|z| z.snapshot_bytes()).sum(),
            zygotes: self.live_zygotes().len(),
            ready_clones: self.ready.lock().expect("ready lock").len(),
            free_cgroups: self.free_slots.lock().expect("slots lock").len(),
            in_flight: self.in_flight.load(Ordering::SeqCst) as usize,
            queued: self.queued.load(Ordering::SeqCst) as usize,
            evictions: self.evictions.load(Ordering::Relaxed),
            memory_bytes: self.tree.memory_usage(&self.name).unwrap_or(0),
        }
    }

    fn live_zygotes(&self) -> Vec<Arc<Zygote>> {
        let mut zygotes = self.zygotes.lock().expect("zygotes lock");
        zygotes.retain(|z| z.is_alive());
        zygotes.clone()
    }

    fn publish_gauges(&self) {
        let status = self.status();
        let m = &self.metrics;
        m.zygotes.set(status.zygotes as f64);
        m.ready_clones.set(status.ready_clones as f64);
        m.in_flight.set(status.in_flight as f64);
        m.queued.set(status.queued as f64);
        m.memory.set(status.memory_bytes as f64);
        m.hibernated.set(status.hibernated as f64);
        m.snapshot_bytes.set(status.snapshot_bytes as f64);
    }

    fn take_slot(&self) -> Result<Slot, String> {
        if let Some(slot) = self.free_slots.lock().expect("slots lock").pop() {
            return Ok(slot);
        }
        let n = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let rel = format!("{}/s{n}", self.name);
        let cgroup = self
            .tree
            .create(&rel, &self.limits)
            .map_err(|e| e.to_string())?;
        if let Some(map) = self.userns {
            self.tree
                .delegate(&rel, map.host_base, map.host_base)
                .map_err(|e| e.to_string())?;
        }
        let oom_seen = cgroup.oom_kills().unwrap_or(0);
        Ok(Slot { cgroup, oom_seen })
    }

    fn over_budget(&self, e: crate::budget::OverBudget) -> InvokeError {
        InvokeError::OverBudget {
            function: self.name.to_string(),
            budget_mb: e.budget_mb,
            used_mb: e.used_mb,
        }
    }

    /// What the next zygote of this function will cost: its own last
    /// measurement, else the host-wide one.
    fn zygote_estimate(&self) -> u64 {
        match self.zygote_bytes.load(Ordering::Relaxed) {
            0 => self.budget.zygote_estimate(),
            bytes => bytes,
        }
    }

    /// Starts a zygote; `keep` adds it to the pool's warm set.
    async fn start_zygote(&self, keep: bool) -> Result<Arc<Zygote>, InvokeError> {
        self.budget
            .reserve(&self.name, Need::Zygote(self.zygote_estimate()))
            .await
            .map_err(|e| self.over_budget(e))?;
        let id = self.ids.zygote.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let (dir, v1) = self
            .zygote_cgroup
            .clone_into_fd()
            .and_then(|dir| Ok((dir, self.zygote_cgroup.v1_procs_fds()?)))
            .map_err(|e| InvokeError::SandboxUnavailable {
                function: self.name.to_string(),
                detail: e.to_string(),
            })?;
        let placement = Placement {
            cgroup_dir: dir.as_ref(),
            v1_procs: &v1,
            userns: self.userns,
        };
        let result = Zygote::start(
            id,
            self.name.clone(),
            &self.zygote_spec,
            placement,
            ZYGOTE_START_TIMEOUT,
            self.wake.clone(),
        )
        .await;
        self.metrics
            .zygote_start
            .record(started.elapsed().as_secs_f64());
        self.metrics.zygote_starts.increment(1);
        let zygote = result.map_err(|e| InvokeError::init_failed(&self.name, e))?;
        tracing::info!(function = %self.name, zygote = id, pid = zygote.pid,
            start_ms = zygote.started_in.as_secs_f64() * 1e3, import_ms = zygote.import_us as f64 / 1e3, "zygote ready");
        if keep {
            self.zygotes
                .lock()
                .expect("zygotes lock")
                .push(zygote.clone());
        }
        // Learn what a zygote of this function costs, for the budget.
        let live = self.live_zygotes().len().max(1) as u64;
        if let Ok(bytes) = self.zygote_cgroup.memory_current() {
            if bytes > 0 {
                self.zygote_bytes.store(bytes / live, Ordering::Relaxed);
                self.budget.learn_zygote_bytes(bytes / live);
            }
        }
        Ok(zygote)
    }

    async fn create_sandbox(&self, zygote: Arc<Zygote>) -> Result<Sandbox, InvokeError> {
        self.budget
            .reserve(&self.name, Need::Clone)
            .await
            .map_err(|e| self.over_budget(e))?;
        let unavailable = |detail: String| InvokeError::SandboxUnavailable {
            function: self.name.to_string(),
            detail,
        };
        let slot = self.take_slot().map_err(unavailable)?;
        if zygote.is_asleep() {
            // The clone will attach itself to its v1 cgroups after the
            // wake-up; the first cgroup migration after an idle period
            // waits for an RCU grace period, paid here during the restore.
            let cgroup = self.zygote_cgroup.clone();
            let pid = zygote.pid;
            tokio::task::spawn_blocking(move || {
                if let Err(e) = cgroup.prime_migration_lock(pid) {
                    tracing::debug!(error = %e, "cannot prime the cgroup migration lock");
                }
            });
        }
        let id = self.ids.sandbox.fetch_add(1, Ordering::Relaxed);
        let run_as = self.userns.map(|_| (SANDBOX_UID, SANDBOX_UID));
        match Sandbox::create(
            id,
            zygote,
            slot,
            self.spec.limits.writable_layer_bytes(),
            run_as,
        )
        .await
        {
            Ok(sandbox) => {
                if let Some(woke) = &sandbox.woke {
                    self.record_wake(woke);
                }
                let phase = &self.metrics.phase;
                phase.clone.record(secs(sandbox.fork_us));
                phase.cgroup_attach.record(secs(sandbox.setup.cgroup_us));
                phase.mount.record(secs(sandbox.setup.mount_us));
                phase
                    .drop_privileges
                    .record(secs(sandbox.setup.privileges_us));
                phase.seccomp.record(secs(sandbox.setup.seccomp_us));
                Ok(sandbox)
            }
            Err((slot, error)) => {
                if matches!(error, CloneError::WakeFailed(_)) {
                    self.metrics.wakes_failed.increment(1);
                }
                // The clone may still be exiting; only reuse an empty cgroup.
                if slot.cgroup.is_empty().unwrap_or(false) {
                    self.free_slots.lock().expect("slots lock").push(slot);
                }
                Err(unavailable(error.to_string()))
            }
        }
    }

    /// Gets a sandbox for one request. A cold start is shared: requests that
    /// arrive while a zygote is starting wait for it (at most until
    /// `deadline`, the end of their queue time) and clone from it.
    async fn checkout(&self, deadline: Instant) -> Result<(Sandbox, StartKind, u64), InvokeError> {
        loop {
            let Some(sandbox) = self.ready.lock().expect("ready lock").pop_front() else {
                break;
            };
            if sandbox.is_alive() {
                return Ok((sandbox, StartKind::ReadyClone, 0));
            }
            self.spawn_teardown(sandbox);
        }
        if self.settings().ready_clones > 0 {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        for attempt in 0..2 {
            let zygote = self
                .live_zygotes()
                .into_iter()
                .min_by_key(Arc::strong_count);
            let (zygote, kind, zygote_us) = match zygote {
                Some(z) => (z, StartKind::OnDemandClone, 0),
                None => {
                    let settings = self.settings();
                    let Ok(_guard) =
                        tokio::time::timeout_at(deadline.into(), self.cold_start.lock()).await
                    else {
                        return Err(InvokeError::Overloaded {
                            function: self.name.to_string(),
                            max_concurrency: settings.max_concurrency,
                            queue_timeout_ms: settings.queue_timeout_ms,
                        });
                    };
                    match self.live_zygotes().into_iter().next() {
                        Some(z) => (z, StartKind::OnDemandClone, 0),
                        None => {
                            let started = Instant::now();
                            // Kept in the warm set so concurrent requests
                            // share it; released when the function goes
                            // idle (see `release_surplus_zygotes`).
                            let z = self.start_zygote(true).await?;
                            self.metrics.cold_starts.increment(1);
                            (
                                z,
                                StartKind::ColdStart,
                                started.elapsed().as_micros() as u64,
                            )
                        }
                    }
                }
            };
            match self.create_sandbox(zygote.clone()).await {
                Ok(sandbox) if sandbox.woke.is_some() && kind == StartKind::OnDemandClone => {
                    return Ok((sandbox, StartKind::Wake, zygote_us))
                }
                Ok(sandbox) => return Ok((sandbox, kind, zygote_us)),
                // A zygote that died under us: try once more with another.
                Err(e) if attempt == 0 && !zygote.is_alive() => {
                    tracing::warn!(function = %self.name, error = %e, "zygote died during clone; retrying");
                }
                Err(e) => return Err(e),
            }
        }
        Err(InvokeError::SandboxUnavailable {
            function: self.name.to_string(),
            detail: "no live zygote".into(),
        })
    }

    fn spawn_teardown(&self, sandbox: Sandbox) {
        let free_slots = self.free_slots.clone();
        let wake = self.wake.clone();
        let teardown = self.metrics.phase.teardown.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let slot = sandbox.teardown().await;
            teardown.record(started.elapsed().as_secs_f64());
            if let Some(slot) = slot {
                free_slots.lock().expect("slots lock").push(slot);
                wake.notify_one();
            }
        });
    }

    /// Keeps the configured warm zygotes and ready clones until the pool is
    /// closed. Failures back off exponentially (a function whose import
    /// fails must not spin).
    pub async fn maintain(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        while !self.closed.load(Ordering::SeqCst) {
            let failed = match self.refill_once().await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    false
                }
                // Out of budget is not a fault of this pool: wait quietly.
                Err(InvokeError::OverBudget { .. }) => true,
                Err(e) => {
                    tracing::warn!(function = %self.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "pool refill failed");
                    true
                }
            };
            self.stop_idle_extra_zygotes();
            self.hibernate_if_idle().await;
            self.trim_idle_cgroups();
            self.publish_gauges();
            let wait = if failed {
                backoff
            } else {
                Duration::from_secs(1)
            };
            if failed {
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            tokio::select! {
                _ = self.wake.notified(), if !failed => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Drops the pool's hold on zygotes above `zygotes` (with `idle_ttl_ms =
    /// 0`, as soon as nothing runs): each dies when its last sandbox is torn
    /// down, so the next request is a true cold start.
    fn release_surplus_zygotes(&self) {
        self.remove_surplus_zygotes(false);
    }

    /// Stops zygotes above the configured count once the function has been
    /// idle for `idle_ttl_ms`, with the ready clones they hold.
    fn stop_idle_extra_zygotes(&self) {
        let settings = self.settings();
        // Zygotes added by scale-out stay at least SCALE_IN_IDLE_MS after
        // the last request: a sequential client leaves nothing in flight
        // between requests, and stopping them then would only start them
        // again on the next misses.
        let idle_for = if settings.zygotes > 0 {
            settings.idle_ttl_ms.max(SCALE_IN_IDLE_MS)
        } else {
            settings.idle_ttl_ms
        };
        if self.live_zygotes().len() <= settings.zygotes as usize
            || self.in_flight.load(Ordering::SeqCst) > 0
            || now_ms().saturating_sub(self.last_used_ms()) < idle_for
        {
            return;
        }
        self.remove_surplus_zygotes(true);
    }

    /// Removes spare cgroups (beyond what the ready clones need) once the
    /// function has been idle for SCALE_IN_IDLE_MS: a burst grows the free
    /// list to its peak concurrency, and keeping hundreds of idle cgroups
    /// costs kernel memory and slows every walk of the hierarchy.
    fn trim_idle_cgroups(&self) {
        let keep = self.settings().ready_clones as usize + 2;
        if self.in_flight.load(Ordering::SeqCst) > 0
            || now_ms().saturating_sub(self.last_used_ms()) < SCALE_IN_IDLE_MS
        {
            return;
        }
        let spare: Vec<Slot> = {
            let mut free = self.free_slots.lock().expect("slots lock");
            if free.len() <= keep {
                return;
            }
            let n = free.len();
            free.drain(keep..n).collect()
        };
        let removed = spare.len();
        for slot in spare {
            if let Err(e) = slot.cgroup.remove() {
                tracing::warn!(cgroup = slot.cgroup.name(), error = %e, "cannot remove a spare cgroup");
            }
        }
        tracing::info!(function = %self.name, removed, "removed spare cgroups of an idle pool");
    }

    /// Takes the zygotes above `zygotes` out of the pool with the ready
    /// clones they hold; `kill` stops them now rather than when their last
    /// sandbox is torn down.
    fn remove_surplus_zygotes(&self, kill: bool) {
        let keep = self.settings().zygotes as usize;
        let surplus: Vec<Arc<Zygote>> = {
            let mut zygotes = self.zygotes.lock().expect("zygotes lock");
            let n = zygotes.len();
            zygotes.drain(keep.min(n)..).collect()
        };
        self.stop_ready_clones_of(&surplus);
        if kill {
            for zygote in surplus {
                tracing::info!(function = %self.name, zygote = zygote.id, "stopping idle zygote (idle_ttl_ms)");
                zygote.kill();
            }
        }
    }

    /// Stops the ready clones forked by any of `zygotes`.
    fn stop_ready_clones_of(&self, zygotes: &[Arc<Zygote>]) {
        let stale: Vec<Sandbox> = {
            let mut ready = self.ready.lock().expect("ready lock");
            let (keep, stale): (VecDeque<Sandbox>, VecDeque<Sandbox>) = ready
                .drain(..)
                .partition(|s| !zygotes.iter().any(|z| Arc::ptr_eq(z, &s.zygote)));
            *ready = keep;
            stale.into_iter().collect()
        };
        for sandbox in stale {
            sandbox.kill();
            self.spawn_teardown(sandbox);
        }
    }

    /// One pass: start missing zygotes, drop dead ready clones, pre-fork
    /// missing ready clones (at most `burst` at once).
    pub async fn refill_once(&self) -> Result<(), InvokeError> {
        let _one_pass = self.refilling.lock().await;
        if self.dormant.load(Ordering::SeqCst) {
            return Ok(());
        }
        let settings = self.settings();
        while self.live_zygotes().len() < settings.zygotes as usize {
            if self.closed.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.start_zygote(true).await?;
        }
        let (dead, surplus): (Vec<Sandbox>, Vec<Sandbox>) = {
            let mut ready = self.ready.lock().expect("ready lock");
            let (alive, dead): (VecDeque<Sandbox>, VecDeque<Sandbox>) =
                ready.drain(..).partition(|s| s.is_alive());
            *ready = alive;
            let keep = settings.ready_clones as usize;
            let surplus = if ready.len() > keep {
                ready.drain(keep..).collect()
            } else {
                Vec::new()
            };
            (dead.into_iter().collect(), surplus)
        };
        for sandbox in dead.into_iter().chain(surplus) {
            sandbox.kill();
            self.spawn_teardown(sandbox);
        }
        // Scale out: requests keep finding the ready clones used up, so
        // the live zygotes (each forks one clone at a time) do not keep up.
        let live = self.live_zygotes().len();
        let misses = self.misses.swap(0, Ordering::Relaxed);
        if live > 0 && live < settings.max_instances as usize && misses >= 2 * live as u64 {
            tracing::info!(function = %self.name, zygotes = live + 1, "scaling out: starting another zygote");
            self.start_zygote(true).await?;
        }
        // Clone the missing ready clones concurrently: a zygote forks one at
        // a time, but each clone's setup (mounts, privilege drop) overlaps
        // with the next fork.
        loop {
            let missing = (settings.ready_clones as usize)
                .saturating_sub(self.ready.lock().expect("ready lock").len())
                .min(settings.burst as usize);
            if self.closed.load(Ordering::SeqCst) || missing == 0 {
                return Ok(());
            }
            let zygotes = self.live_zygotes();
            if zygotes.is_empty() {
                return Ok(());
            }
            let creations =
                (0..missing).map(|i| self.create_sandbox(zygotes[i % zygotes.len()].clone()));
            let mut first_error = None;
            for result in join_all(creations).await {
                match result {
                    Ok(sandbox) => self.ready.lock().expect("ready lock").push_back(sandbox),
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
    }

    /// Stops refilling, waits for in-flight invocations up to `grace`, then
    /// kills every zygote (and so every clone) and waits for the cgroups to
    /// empty.
    pub async fn close(&self, grace: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let deadline = Instant::now() + grace;
        while self.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.concurrency.close();
        // A refill pass already under way may still be cloning (and
        // creating cgroups); let it finish so everything it made is drained
        // below. Later passes see `closed` and return at once.
        let _no_refill = self.refilling.lock().await;
        let (ready, zygotes) = self.take_all();
        for sandbox in ready {
            sandbox.kill();
            let _ = sandbox.teardown().await;
        }
        for zygote in zygotes {
            zygote.kill();
        }
        for _ in 0..500 {
            let busy = !self.zygote_cgroup.is_empty().unwrap_or(true)
                || self
                    .free_slots
                    .lock()
                    .expect("slots lock")
                    .iter()
                    .any(|s| !s.cgroup.is_empty().unwrap_or(true));
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.publish_gauges();
    }

    /// Removes the pool's cgroups (after [`Self::close`]); used when a
    /// function is deleted or replaced by a reload.
    pub fn remove_cgroups(&self) {
        for slot in self.free_slots.lock().expect("slots lock").drain(..) {
            let _ = slot.cgroup.remove();
        }
        let _ = self.zygote_cgroup.remove();
    }

    /// Runs one invocation.
    pub async fn invoke(
        &self,
        payload: &[u8],
        request_id: String,
    ) -> Result<Invocation, InvokeError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(InvokeError::ShuttingDown);
        }
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
        if self.dormant.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
        let started = Instant::now();
        let settings = self.settings();
        let queue_timeout = Duration::from_millis(settings.queue_timeout_ms);
        self.queued.fetch_add(1, Ordering::SeqCst);
        let acquired = tokio::time::timeout(queue_timeout, self.concurrency.acquire()).await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let _permit = match acquired {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(InvokeError::ShuttingDown),
            Err(_) => {
                return Err(InvokeError::Overloaded {
                    function: self.name.to_string(),
                    max_concurrency: settings.max_concurrency,
                    queue_timeout_ms: settings.queue_timeout_ms,
                })
            }
        };
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let result = self.execute(payload, request_id, started).await;
        let still_running = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
        // Pure scale-to-zero: the zygote this request started goes away
        // as soon as nothing runs, so the next request is a true cold start.
        if still_running == 0 && settings.zygotes == 0 && settings.idle_ttl_ms == 0 {
            self.release_surplus_zygotes();
        }
        match &result {
            Err(InvokeError::Timeout { .. }) => self.metrics.timeouts.increment(1),
            Err(InvokeError::MemoryLimit { .. }) => self.metrics.oom_kills.increment(1),
            _ => {}
        }
        result
    }

    /// Checks a sandbox out, runs the invocation in it, hands it to teardown.
    async fn execute(
        &self,
        payload: &[u8],
        request_id: String,
        started: Instant,
    ) -> Result<Invocation, InvokeError> {
        let queue_deadline = started + Duration::from_millis(self.settings().queue_timeout_ms);
        let checkout_started = Instant::now();
        let (mut sandbox, kind, zygote_us) = self.checkout(queue_deadline).await?;
        // Waiting for another request's cold start is queueing too.
        let waited_us = (checkout_started.elapsed().as_micros() as u64)
            .saturating_sub(zygote_us + sandbox.create_us);
        let queue_us = (checkout_started - started).as_micros() as u64
            + if kind == StartKind::ReadyClone {
                0
            } else {
                waited_us
            };
        self.wake.notify_one();
        let timeout_ms = self.spec.limits.timeout_ms;
        let meta = InvokeMeta {
            request_id,
            function: self.name.to_string(),
            memory_mb: self.spec.limits.memory_mb,
            remaining_ms: timeout_ms,
        };
        let sent = Instant::now();
        let outcome = sandbox
            .run(
                &meta,
                payload,
                sent + Duration::from_millis(timeout_ms),
                self.max_response,
            )
            .await;
        let exchange_total = sent.elapsed().as_micros() as u64;
        let wake_us = sandbox.woke.as_ref().map_or(0, |w| w.wake_us);
        let (clone_us, setup_us) = match kind {
            StartKind::ReadyClone => (0, 0),
            _ => (
                sandbox.fork_us,
                sandbox
                    .create_us
                    .saturating_sub(sandbox.fork_us)
                    .saturating_sub(wake_us),
            ),
        };
        let oom_before = sandbox.slot.oom_seen;
        let oom_now = match &outcome {
            RunOutcome::NoResponse { .. } => sandbox.slot.cgroup.oom_kills().unwrap_or(oom_before),
            _ => oom_before,
        };
        let sandbox_id = sandbox.id;
        self.spawn_teardown(sandbox);
        let function = self.name.to_string();
        let (body, handler_us) = match outcome {
            RunOutcome::Result { body, handler_us } => (body, handler_us),
            RunOutcome::FunctionError { body, .. } => {
                return Err(InvokeError::FunctionError { function, body })
            }
            RunOutcome::Timeout => {
                return Err(InvokeError::Timeout {
                    function,
                    timeout_ms,
                })
            }
            RunOutcome::TooLarge { size } => {
                return Err(InvokeError::ResponseTooLarge {
                    function,
                    size,
                    limit: self.max_response,
                })
            }
            RunOutcome::NoResponse { .. } if oom_now > oom_before => {
                return Err(InvokeError::MemoryLimit {
                    function,
                    memory_mb: self.spec.limits.memory_mb,
                })
            }
            RunOutcome::NoResponse { detail } => {
                return Err(InvokeError::SandboxCrashed { function, detail })
            }
        };
        let timings = Timings {
            queue_us,
            zygote_us,
            wake_us,
            clone_us,
            setup_us,
            handler_us,
            exchange_us: exchange_total.saturating_sub(handler_us),
            total_us: started.elapsed().as_micros() as u64,
        };
        let phase = &self.metrics.phase;
        phase.queue.record(secs(timings.queue_us));
        phase.handler.record(secs(timings.handler_us));
        phase.exchange.record(secs(timings.exchange_us));
        phase.invoke_total.record(secs(timings.total_us));
        Ok(Invocation {
            body,
            start: kind,
            sandbox_id,
            timings,
        })
    }
}
