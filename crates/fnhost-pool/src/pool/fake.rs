//! A fake [`Backend`] for the pool's unit tests: zygotes, clones and slots
//! are flags and counters in memory, runs answer from a script, and every
//! delay is a tokio sleep (so paused time drives it). No root needed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fnhost_config::{FunctionSpec, NetworkMode, PoolSettings, Runtime};
use fnhost_zygote::protocol::InvokeMeta;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::backend::{
    Backend, BackendError, CloneFailed, CloneHandle, CloneTimes, RunOutcome, Slept, SlotHandle,
    Wake, ZygoteHandle,
};
use super::{FunctionPool, Ids, PoolParts};
use crate::budget::{MemoryBudget, MemoryMeter, MeterError};
use crate::error::InvokeError;

/// What the fake did and will do; shared by the backend and the test.
#[derive(Default)]
pub struct Fake {
    pub zygotes_started: AtomicU64,
    pub clones_made: AtomicU64,
    pub slots_created: AtomicU64,
    /// Clones being created right now, and the most at once.
    pub cloning: AtomicU64,
    pub most_cloning_at_once: AtomicU64,
    /// Every zygote ever started, in order.
    pub zygotes: Mutex<Vec<Arc<FakeZygote>>>,
    /// How long starting a zygote, cloning and a handler take.
    pub start_delay: Mutex<Duration>,
    pub clone_delay: Mutex<Duration>,
    pub handler_delay: Mutex<Duration>,
    /// The next zygote starts fail.
    pub fail_starts: AtomicU64,
    /// The next clone kills its zygote and fails.
    pub kill_zygote_on_clone: AtomicBool,
    /// Outcomes of the next runs (else the payload is echoed back); an
    /// `oom` entry also counts an OOM kill in the clone's slot.
    pub script: Mutex<VecDeque<(RunOutcome, bool)>>,
    /// Slot cgroups removed.
    pub slots_removed: AtomicU64,
    /// Clones killed (timeouts, cancellations, surplus).
    pub clones_killed: AtomicU64,
    pub zygote_cgroup_removed: AtomicBool,
    /// Reads of the function's memory usage (each a cgroup file read in
    /// production).
    pub memory_reads: AtomicU64,
}

impl Fake {
    pub fn started(&self) -> u64 {
        self.zygotes_started.load(Ordering::SeqCst)
    }

    pub fn clones(&self) -> u64 {
        self.clones_made.load(Ordering::SeqCst)
    }

    pub fn set_handler_delay(&self, d: Duration) {
        *self.handler_delay.lock().expect("fake lock") = d;
    }

    pub fn set_start_delay(&self, d: Duration) {
        *self.start_delay.lock().expect("fake lock") = d;
    }

    pub fn set_clone_delay(&self, d: Duration) {
        *self.clone_delay.lock().expect("fake lock") = d;
    }

    pub fn push_outcome(&self, outcome: RunOutcome, oom: bool) {
        self.script
            .lock()
            .expect("fake lock")
            .push_back((outcome, oom));
    }

    /// Zygotes started and still alive.
    pub fn alive_zygotes(&self) -> usize {
        let zygotes = self.zygotes.lock().expect("fake lock");
        zygotes.iter().filter(|z| z.is_alive()).count()
    }
}

pub struct FakeBackend(pub Arc<Fake>);

pub struct FakeZygote {
    id: u64,
    alive: AtomicBool,
    asleep: AtomicBool,
    /// Measurements of its snapshot's page cache (each an open and a
    /// `cachestat` in production).
    pub cache_reads: AtomicU64,
}

pub struct FakeClone {
    id: u64,
    zygote: Arc<FakeZygote>,
    slot: FakeSlot,
    alive: AtomicBool,
    fake: Arc<Fake>,
    woke: bool,
}

pub struct FakeSlot {
    name: String,
    oom_seen: u64,
    oom_kills: Arc<AtomicU64>,
    fake: Arc<Fake>,
}

impl Backend for FakeBackend {
    type Zygote = FakeZygote;
    type Clone = FakeClone;
    type Slot = FakeSlot;

    async fn start_zygote(
        &self,
        id: u64,
        _exited: Arc<Notify>,
    ) -> Result<Arc<FakeZygote>, InvokeError> {
        let delay = *self.0.start_delay.lock().expect("fake lock");
        tokio::time::sleep(delay).await;
        self.0.zygotes_started.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .0
            .fail_starts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if fail.is_ok() {
            return Err(InvokeError::SandboxCrashed {
                function: "fake".into(),
                detail: "start failed".into(),
            });
        }
        let zygote = Arc::new(FakeZygote {
            id,
            alive: AtomicBool::new(true),
            asleep: AtomicBool::new(false),
            cache_reads: AtomicU64::new(0),
        });
        self.0
            .zygotes
            .lock()
            .expect("fake lock")
            .push(zygote.clone());
        Ok(zygote)
    }

    async fn clone_sandbox(
        &self,
        id: u64,
        zygote: Arc<FakeZygote>,
        slot: FakeSlot,
    ) -> Result<FakeClone, (FakeSlot, CloneFailed)> {
        let fake = &self.0;
        let now = fake.cloning.fetch_add(1, Ordering::SeqCst) + 1;
        fake.most_cloning_at_once.fetch_max(now, Ordering::SeqCst);
        let delay = *fake.clone_delay.lock().expect("fake lock");
        tokio::time::sleep(delay).await;
        fake.cloning.fetch_sub(1, Ordering::SeqCst);
        if fake.kill_zygote_on_clone.swap(false, Ordering::SeqCst) {
            zygote.kill();
        }
        if !zygote.is_alive() {
            let failed = CloneFailed {
                wake_failed: false,
                source: "the zygote has exited".into(),
            };
            return Err((slot, failed));
        }
        let woke = zygote.asleep.swap(false, Ordering::SeqCst);
        fake.clones_made.fetch_add(1, Ordering::SeqCst);
        Ok(FakeClone {
            id,
            zygote,
            slot,
            alive: AtomicBool::new(true),
            fake: fake.clone(),
            woke,
        })
    }

    fn create_slot(&self, n: u64) -> Result<FakeSlot, BackendError> {
        self.0.slots_created.fetch_add(1, Ordering::SeqCst);
        Ok(FakeSlot {
            name: format!("fake/s{n}"),
            oom_seen: 0,
            oom_kills: Arc::new(AtomicU64::new(0)),
            fake: self.0.clone(),
        })
    }

    fn memory_usage(&self) -> Result<u64, BackendError> {
        self.0.memory_reads.fetch_add(1, Ordering::SeqCst);
        Ok(0)
    }

    fn zygote_memory(&self) -> Result<u64, BackendError> {
        Ok(0)
    }

    fn zygotes_gone(&self) -> Result<bool, BackendError> {
        Ok(self.0.alive_zygotes() == 0)
    }

    fn remove_zygote_cgroup(&self) -> Result<(), BackendError> {
        self.0.zygote_cgroup_removed.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn reclaim_zygotes(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn settle(&self, zygote: &FakeZygote) -> Result<Option<Wake>, BackendError> {
        if !zygote.is_alive() {
            return Err("the zygote has exited".into());
        }
        Ok(zygote
            .asleep
            .swap(false, Ordering::SeqCst)
            .then(Wake::default))
    }

    async fn hibernate_snapshot(
        &self,
        zygote: &FakeZygote,
        _prefetch: bool,
    ) -> Result<Option<Slept>, BackendError> {
        if zygote.asleep.swap(true, Ordering::SeqCst) {
            return Ok(None);
        }
        Ok(Some(Slept {
            snapshot_bytes: 1 << 20,
            dropped_bytes: 1 << 20,
        }))
    }
}

impl ZygoteHandle for FakeZygote {
    fn id(&self) -> u64 {
        self.id
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn is_asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }

    fn snapshot_bytes(&self) -> u64 {
        if self.is_asleep() {
            1 << 20
        } else {
            0
        }
    }

    fn snapshot_cached_bytes(&self) -> u64 {
        self.cache_reads.fetch_add(1, Ordering::SeqCst);
        self.snapshot_bytes()
    }

    fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }

    async fn mark_reclaimed(&self) -> bool {
        !self.asleep.swap(true, Ordering::SeqCst)
    }
}

impl CloneHandle for FakeClone {
    type Zygote = FakeZygote;
    type Slot = FakeSlot;

    fn id(&self) -> u64 {
        self.id
    }

    fn zygote(&self) -> &Arc<FakeZygote> {
        &self.zygote
    }

    fn slot(&self) -> &FakeSlot {
        &self.slot
    }

    fn times(&self) -> CloneTimes {
        CloneTimes::default()
    }

    fn wake(&self) -> Option<Wake> {
        self.woke.then(Wake::default)
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst) && self.zygote.is_alive()
    }

    fn kill(&self) {
        if self.alive.swap(false, Ordering::SeqCst) {
            self.fake.clones_killed.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn run(
        &mut self,
        _meta: &InvokeMeta,
        payload: &[u8],
        deadline: Instant,
        max_response: usize,
    ) -> RunOutcome {
        let delay = *self.fake.handler_delay.lock().expect("fake lock");
        if tokio::time::timeout_at(deadline, tokio::time::sleep(delay))
            .await
            .is_err()
        {
            self.kill();
            return RunOutcome::Timeout;
        }
        let scripted = self.fake.script.lock().expect("fake lock").pop_front();
        match scripted {
            Some((outcome, oom)) => {
                if oom {
                    self.slot.oom_kills.fetch_add(1, Ordering::SeqCst);
                }
                outcome
            }
            None if payload.len() > max_response => RunOutcome::TooLarge {
                size: payload.len(),
            },
            None => RunOutcome::Result {
                body: payload.to_vec(),
                handler_us: 7,
                page_faults: None,
            },
        }
    }

    async fn teardown(self) -> Option<FakeSlot> {
        let mut slot = self.slot;
        slot.oom_seen = slot.oom_kills.load(Ordering::SeqCst);
        Some(slot)
    }
}

impl SlotHandle for FakeSlot {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_empty(&self) -> Result<bool, BackendError> {
        Ok(true)
    }

    fn remove(&self) -> Result<(), BackendError> {
        self.fake.slots_removed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn oom_seen(&self) -> u64 {
        self.oom_seen
    }

    fn oom_kills(&self) -> Result<u64, BackendError> {
        Ok(self.oom_kills.load(Ordering::SeqCst))
    }
}

/// A budget meter whose usage the test sets.
#[derive(Default)]
pub struct FakeMeter {
    pub used: AtomicU64,
}

impl MemoryMeter for FakeMeter {
    fn used(&self) -> Result<u64, MeterError> {
        Ok(self.used.load(Ordering::SeqCst))
    }

    fn set_hard_limit(&self, _bytes: u64) -> Result<(), MeterError> {
        Ok(())
    }
}

/// A function spec with these pool settings.
pub fn spec(name: &str, pool: PoolSettings) -> FunctionSpec {
    FunctionSpec {
        name: name.into(),
        runtime: Runtime::Python3,
        code: "/var/empty".into(),
        handler: "main.handler".into(),
        command: Vec::new(),
        image: None,
        python: "/usr/bin/python3".into(),
        node: "/usr/bin/node".into(),
        seccomp: "default".into(),
        limits: fnhost_config::Limits::default(),
        pool,
        network: NetworkMode::default(),
        env: Default::default(),
        detailed_metrics: false,
    }
}

/// A memory budget no test fills, for pools that share one.
pub fn ample_budget() -> Arc<MemoryBudget> {
    MemoryBudget::new(u64::MAX / 4, Arc::new(FakeMeter::default()))
}

/// A pool on a fake backend with an ample budget; the refill loop is not
/// running (tests call `refill_once` or spawn `maintain`).
pub fn pool(pool: PoolSettings) -> (Arc<FunctionPool<FakeBackend>>, Arc<Fake>) {
    pool_in(spec("f", pool), ample_budget())
}

/// A pool of `spec` sharing `budget`.
pub fn pool_in(
    spec: FunctionSpec,
    budget: Arc<MemoryBudget>,
) -> (Arc<FunctionPool<FakeBackend>>, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let pool = FunctionPool::with_backend(PoolParts {
        spec,
        backend: FakeBackend(fake.clone()),
        ids: Arc::new(Ids::default()),
        budget,
        max_response: 1024,
        labels: crate::telemetry::Labels::PerFunction,
    });
    (pool, fake)
}

/// Pool settings for tests: nothing warm, no prewarm, unless changed.
pub fn settings() -> PoolSettings {
    PoolSettings {
        zygotes: 0,
        ready_clones: 0,
        max_concurrency: 4,
        queue_timeout_ms: 1000,
        idle_ttl_ms: 0,
        max_instances: 4,
        prewarm: false,
        burst: 4,
        hibernate_after_ms: 0,
        ..PoolSettings::default()
    }
}

/// Lets other tasks run until `cond` holds (paused time does not move).
pub async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never held");
}

/// Starts an invocation on its own task.
pub fn spawn_invoke(
    pool: &Arc<FunctionPool<FakeBackend>>,
) -> tokio::task::JoinHandle<Result<super::Invocation, InvokeError>> {
    let pool = pool.clone();
    tokio::spawn(async move {
        pool.invoke(bytes::Bytes::from_static(b"hello"), "req".into())
            .await
    })
}
