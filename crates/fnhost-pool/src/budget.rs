//! The host memory budget: all zygotes and sandboxes together stay under
//! `memory_budget_mb`. Usage is read from fnhost's own cgroup root (the
//! kernel's accounting, not an estimate). Before a pool starts a zygote or
//! clones a sandbox it asks for room; when there is none, idle zygotes of
//! *other* functions are hibernated (where `hibernate_after_ms` is set),
//! then evicted, least recently used first, and only then is the request
//! refused. The cgroup root also carries the budget as a hard
//! limit, so even a burst the estimates miss is contained inside fnhost.
//!
//! It also keeps the descriptors the daemon holds for zygotes and clones
//! within the share of its open-file limit set aside for them: every kept
//! zygote (warm or hibernated) and clone holds some. Past that a new zygote
//! stops the idle zygotes of the least recently used other function first,
//! so a host with more functions than descriptors answers with cold starts
//! instead of `EMFILE` errors. What is held is read from the
//! [`DescriptorLedger`] the pools report to, not by asking every pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use crate::ledger::{DescriptorLedger, LedgerShare};

/// Headroom kept on the hard cgroup limit above the soft budget, so the
/// budget (which refuses politely) trips before the kernel's OOM killer.
const HARD_LIMIT_HEADROOM: u64 = 256 << 20;

/// What a pool asks room for.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// A new zygote of about this many bytes.
    Zygote(u64),
    /// A new clone (small: page tables and the pages it touches).
    Clone,
}

/// A boxed future, for the budget's object-safe traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why memory could not be measured or limited; its message is the cause's.
pub type MeterError = Box<dyn std::error::Error + Send + Sync>;

/// A pool as the budget sees it: something holding idle memory that can
/// be hibernated or evicted on behalf of another function.
pub trait Reclaimable: Send + Sync {
    fn name(&self) -> &str;
    /// When it last served a request (a process-wide millisecond clock).
    fn last_used_ms(&self) -> u64;
    /// Whether [`Self::hibernate`] could free something now.
    fn can_hibernate(&self) -> bool;
    /// Hibernates its idle zygotes; returns how many went to sleep.
    fn hibernate(&self) -> BoxFuture<'_, usize>;
    /// Whether it holds warm processes and nothing runs.
    fn evictable(&self) -> bool;
    /// Descriptors the daemon holds for its zygotes and clones now, by
    /// [`ZYGOTE_DESCRIPTORS`] and [`CLONE_DESCRIPTORS`] (counted afresh; the
    /// budget reads what pools report to its [`DescriptorLedger`], and
    /// asks this only to choose a pool to stop at the cap).
    fn descriptors(&self) -> usize;
    /// Stops its idle zygotes and ready clones.
    fn evict_idle(&self) -> BoxFuture<'_, ()>;
}

/// Where the budget reads usage and sets its hard limit (fnhost's cgroup
/// root in production).
pub trait MemoryMeter: Send + Sync {
    /// Memory all sandboxes and zygotes use now, bytes.
    fn used(&self) -> Result<u64, MeterError>;
    /// Sets the kernel-enforced limit, bytes.
    fn set_hard_limit(&self, bytes: u64) -> Result<(), MeterError>;
}

/// Descriptors the daemon holds for one awake zygote: its control socket,
/// pidfd and output pipe (measured: 3). Each zygote says what it holds
/// now (`ZygoteHandle::descriptors`): 1, its pidfd, while it hibernates
/// with a snapshot (it keeps its userfaultfd and the daemon's ends of its
/// channel and output pipe itself, and the snapshot is reopened by name to
/// wake it), one more while mapped back to keep a sleeping pool's ready
/// clones.
pub const ZYGOTE_DESCRIPTORS: usize = 3;

/// Descriptors the daemon holds for a zygote hibernated with a snapshot:
/// its pidfd (see [`ZYGOTE_DESCRIPTORS`]).
pub const HIBERNATED_ZYGOTE_DESCRIPTORS: usize = 1;

/// Descriptors the daemon holds for one clone, ready or running (its
/// socket and pidfd).
pub const CLONE_DESCRIPTORS: usize = 2;

/// Bytes assumed for a zygote before any has been measured.
const DEFAULT_ZYGOTE_ESTIMATE: u64 = 32 << 20;

/// Bytes assumed for one new clone before it has touched anything.
const CLONE_ESTIMATE: u64 = 2 << 20;

/// Shared by every pool of a host.
pub struct MemoryBudget {
    limit: RwLock<u64>,
    /// Last measured cost of one zygote (any function), for functions that
    /// have not started one yet.
    zygote_estimate: std::sync::atomic::AtomicU64,
    meter: Arc<dyn MemoryMeter>,
    pools: RwLock<Vec<Weak<dyn Reclaimable>>>,
    /// Descriptors zygotes and clones may hold (`usize::MAX`: no cap).
    descriptor_limit: AtomicUsize,
    /// What the pools' zygotes and clones hold, as the pools report it.
    ledger: Arc<DescriptorLedger>,
    /// Zygote starts under way that were granted descriptors: their
    /// zygotes are in no pool yet.
    starting: Arc<AtomicUsize>,
    /// Held while a start is checked and counted, so that concurrent
    /// starts cannot all see the same room.
    claim: std::sync::Mutex<()>,
}

/// Room granted by [`MemoryBudget::reserve`]; a zygote's keeps its
/// descriptors counted until dropped, once the zygote is in its pool (or
/// failed to start).
#[derive(Debug)]
pub struct Reservation {
    starting: Option<Arc<AtomicUsize>>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(starting) = &self.starting {
            starting.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Why room could not be made.
#[derive(Debug)]
pub enum NoRoom {
    /// The memory budget is used and nothing idle could be freed.
    Memory(OverBudget),
    /// Zygotes and clones hold the descriptors set aside for them and no
    /// zygote is idle to stop.
    Descriptors { limit: usize },
}

/// The memory budget was used and nothing idle could be freed.
#[derive(Debug)]
pub struct OverBudget {
    pub budget_mb: u64,
    pub used_mb: u64,
}

/// 80% of the host's memory, for `memory_budget_mb = 0`.
pub fn default_budget_bytes() -> u64 {
    let total_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(4 << 20);
    total_kb * 1024 / 10 * 8
}

impl MemoryBudget {
    pub fn new<M: MemoryMeter + 'static>(limit_bytes: u64, meter: Arc<M>) -> Arc<Self> {
        let budget = Arc::new(MemoryBudget {
            limit: RwLock::new(0),
            zygote_estimate: std::sync::atomic::AtomicU64::new(DEFAULT_ZYGOTE_ESTIMATE),
            meter,
            pools: RwLock::new(Vec::new()),
            descriptor_limit: AtomicUsize::new(usize::MAX),
            ledger: Arc::default(),
            starting: Arc::new(AtomicUsize::new(0)),
            claim: std::sync::Mutex::new(()),
        });
        budget.set_limit(limit_bytes);
        budget
    }

    /// Sets the budget and the hard limit on fnhost's cgroup root.
    pub fn set_limit(&self, bytes: u64) {
        *self.limit.write().expect("budget lock") = bytes;
        if let Err(e) = self
            .meter
            .set_hard_limit(bytes.saturating_add(HARD_LIMIT_HEADROOM))
        {
            tracing::warn!(error = %e, "cannot set the memory budget as a cgroup limit; relying on admission only");
        }
        metrics::gauge!("fnhost_memory_budget_bytes").set(bytes as f64);
    }

    /// Caps the descriptors kept zygotes and clones may hold at `limit`.
    pub fn set_descriptor_limit(&self, limit: usize) {
        self.descriptor_limit.store(limit, Ordering::Relaxed);
        metrics::gauge!("fnhost_sandbox_descriptor_limit").set(limit as f64);
    }

    pub fn descriptor_limit(&self) -> usize {
        self.descriptor_limit.load(Ordering::Relaxed)
    }

    /// Records the measured cost of a zygote.
    pub fn learn_zygote_bytes(&self, bytes: u64) {
        self.zygote_estimate
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// What a zygote of a function never measured is assumed to cost.
    pub fn zygote_estimate(&self) -> u64 {
        self.zygote_estimate
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        *self.limit.read().expect("budget lock")
    }

    /// Memory fnhost's sandboxes and zygotes use now.
    pub fn used(&self) -> u64 {
        let used = self.meter.used().unwrap_or(0);
        metrics::gauge!("fnhost_memory_used_bytes").set(used as f64);
        used
    }

    /// A pool's entry in the descriptor ledger: it reports what its
    /// zygotes and clones hold after each change (see
    /// [`LedgerShare::report`]).
    pub fn ledger_share(&self) -> LedgerShare {
        LedgerShare::new(self.ledger.clone())
    }

    /// What the pools reported to the ledger, all together.
    #[cfg(test)]
    pub(crate) fn ledger_held(&self) -> usize {
        self.ledger.held()
    }

    /// Makes the budget aware of a pool (for eviction).
    pub fn register(&self, pool: Weak<dyn Reclaimable>) {
        let mut pools = self.pools.write().expect("budget pools lock");
        pools.retain(|p| p.strong_count() > 0);
        pools.push(pool);
    }

    /// Whether `need` fits as things stand, without hibernating or
    /// evicting anything (for what is nice to have, not needed).
    pub fn has_room(&self, need: Need) -> bool {
        let bytes = match need {
            Need::Zygote(b) => b,
            Need::Clone => CLONE_ESTIMATE,
        };
        self.used().saturating_add(bytes) <= self.limit()
    }

    /// Whether one more zygote fits under the descriptor cap as things
    /// stand, without stopping anything (for a refill, not a request).
    pub fn has_zygote_descriptors(&self) -> bool {
        self.zygote_room(self.descriptor_limit()).is_ok()
    }

    /// Whether one more zygote fits under `limit`; if not, the descriptors
    /// held now.
    fn zygote_room(&self, limit: usize) -> Result<(), usize> {
        if limit == usize::MAX {
            return Ok(());
        }
        let held = self.descriptors_held();
        metrics::gauge!("fnhost_sandbox_descriptors").set(held as f64);
        if held + ZYGOTE_DESCRIPTORS <= limit {
            Ok(())
        } else {
            Err(held)
        }
    }

    /// Descriptors the pools' zygotes and clones hold, and zygotes being
    /// started will.
    fn descriptors_held(&self) -> usize {
        self.ledger.held() + self.starting.load(Ordering::SeqCst) * ZYGOTE_DESCRIPTORS
    }

    /// The pools registered and still alive.
    fn live_pools(&self) -> Vec<Arc<dyn Reclaimable>> {
        let pools = self.pools.read().expect("budget pools lock");
        pools.iter().filter_map(Weak::upgrade).collect()
    }

    /// Makes room under the descriptor cap for one more zygote, stopping
    /// the idle zygotes of other functions (least recently used first). The
    /// clone a request waits for is counted already, in its pool's
    /// in-flight requests.
    async fn reserve_zygote_descriptors(&self, requester: &str) -> Result<Reservation, NoRoom> {
        let limit = self.descriptor_limit();
        if limit == usize::MAX {
            return Ok(Reservation { starting: None });
        }
        loop {
            let held = {
                let _claim = self.claim.lock().unwrap_or_else(|e| e.into_inner());
                match self.zygote_room(limit) {
                    Ok(()) => {
                        self.starting.fetch_add(1, Ordering::SeqCst);
                        return Ok(Reservation {
                            starting: Some(self.starting.clone()),
                        });
                    }
                    Err(held) => held,
                }
            };
            let victim = self
                .live_pools()
                .into_iter()
                .filter(|p| p.name() != requester && p.descriptors() > 0 && p.evictable())
                .min_by_key(|p| p.last_used_ms());
            let Some(victim) = victim else {
                return Err(NoRoom::Descriptors { limit });
            };
            tracing::info!(
                function = victim.name(),
                for_function = requester,
                held,
                limit,
                "descriptors for sandboxes used up (the daemon's open-file limit): stopping idle zygotes"
            );
            victim.evict_idle().await;
        }
    }

    /// Makes room for `need` on behalf of `requester`, evicting idle zygotes
    /// of other functions (least recently used first) if necessary.
    pub async fn reserve(&self, requester: &str, need: Need) -> Result<Reservation, NoRoom> {
        let (bytes, reservation) = match need {
            Need::Zygote(b) => (b, self.reserve_zygote_descriptors(requester).await?),
            Need::Clone => (CLONE_ESTIMATE, Reservation { starting: None }),
        };
        loop {
            let used = self.used();
            let limit = self.limit();
            if used.saturating_add(bytes) <= limit {
                return Ok(reservation);
            }
            let others: Vec<Arc<dyn Reclaimable>> = self
                .live_pools()
                .into_iter()
                .filter(|p| p.name() != requester)
                .collect();
            // Hibernating (where configured) frees most of a zygote and
            // keeps the function a wake-up away: try it before evicting.
            let sleeper = others
                .iter()
                .filter(|p| p.can_hibernate())
                .min_by_key(|p| p.last_used_ms());
            if let Some(pool) = sleeper {
                tracing::warn!(
                    function = pool.name(),
                    for_function = requester,
                    used_mb = used >> 20,
                    budget_mb = limit >> 20,
                    "memory budget reached: hibernating idle zygotes"
                );
                if pool.hibernate().await > 0 {
                    continue;
                }
            }
            let victim = others
                .into_iter()
                .filter(|p| p.evictable())
                .min_by_key(|p| p.last_used_ms());
            let Some(victim) = victim else {
                return Err(NoRoom::Memory(OverBudget {
                    budget_mb: limit >> 20,
                    used_mb: used >> 20,
                }));
            };
            tracing::warn!(
                function = victim.name(),
                for_function = requester,
                used_mb = used >> 20,
                budget_mb = limit >> 20,
                "memory budget reached: evicting idle zygotes"
            );
            victim.evict_idle().await;
            // Freed memory is uncharged as the processes exit.
            for _ in 0..50 {
                if self.used().saturating_add(bytes) <= limit {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;

    const MIB: u64 = 1 << 20;

    /// Memory use the test sets; pools give theirs back through it.
    #[derive(Default)]
    struct Meter(AtomicU64);

    impl MemoryMeter for Meter {
        fn used(&self) -> Result<u64, MeterError> {
            Ok(self.0.load(Ordering::SeqCst))
        }

        fn set_hard_limit(&self, _bytes: u64) -> Result<(), MeterError> {
            Ok(())
        }
    }

    /// A pool holding `held` bytes, freed by hibernation or eviction.
    struct TestPool {
        name: &'static str,
        last_used_ms: u64,
        hibernatable: bool,
        evictable: AtomicBool,
        held: u64,
        meter: Arc<Meter>,
        hibernated: AtomicUsize,
        /// One zygote until evicted.
        zygotes: AtomicUsize,
        /// Reported like a real pool's: after each change.
        share: LedgerShare,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl TestPool {
        fn release(&self) {
            self.meter.0.fetch_sub(self.held, Ordering::SeqCst);
            self.evictable.store(false, Ordering::SeqCst);
        }
    }

    impl Reclaimable for TestPool {
        fn name(&self) -> &str {
            self.name
        }

        fn last_used_ms(&self) -> u64 {
            self.last_used_ms
        }

        fn can_hibernate(&self) -> bool {
            self.hibernatable && self.hibernated.load(Ordering::SeqCst) == 0
        }

        fn hibernate(&self) -> BoxFuture<'_, usize> {
            Box::pin(async move {
                self.log
                    .lock()
                    .expect("log")
                    .push(format!("hibernate {}", self.name));
                self.hibernated.fetch_add(1, Ordering::SeqCst);
                self.release();
                1
            })
        }

        fn evictable(&self) -> bool {
            self.evictable.load(Ordering::SeqCst)
        }

        fn evict_idle(&self) -> BoxFuture<'_, ()> {
            Box::pin(async move {
                self.log
                    .lock()
                    .expect("log")
                    .push(format!("evict {}", self.name));
                self.release();
                self.zygotes.store(0, Ordering::SeqCst);
                self.share.report(self.descriptors());
            })
        }

        fn descriptors(&self) -> usize {
            self.zygotes.load(Ordering::SeqCst) * ZYGOTE_DESCRIPTORS
        }
    }

    struct World {
        budget: Arc<MemoryBudget>,
        meter: Arc<Meter>,
        log: Arc<Mutex<Vec<String>>>,
        pools: Vec<Arc<TestPool>>,
    }

    impl World {
        /// A 1000 MiB budget, `used_mb` in use.
        fn new(used_mb: u64) -> World {
            let meter = Arc::new(Meter::default());
            meter.0.store(used_mb * MIB, Ordering::SeqCst);
            World {
                budget: MemoryBudget::new(1000 * MIB, meter.clone()),
                meter,
                log: Arc::default(),
                pools: Vec::new(),
            }
        }

        fn add(
            &mut self,
            name: &'static str,
            last_used_ms: u64,
            hibernatable: bool,
            evictable: bool,
        ) {
            let pool = Arc::new(TestPool {
                name,
                last_used_ms,
                hibernatable,
                evictable: AtomicBool::new(evictable),
                held: 100 * MIB,
                meter: self.meter.clone(),
                hibernated: AtomicUsize::new(0),
                zygotes: AtomicUsize::new(1),
                share: self.budget.ledger_share(),
                log: self.log.clone(),
            });
            pool.share.report(pool.descriptors());
            let weak: Weak<dyn Reclaimable> = Arc::downgrade(&pool) as _;
            self.budget.register(weak);
            self.pools.push(pool);
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().expect("log").clone()
        }

        /// Reserves `need` for `requester`, which must be granted.
        async fn grant(&self, requester: &str, need: Need) -> Reservation {
            self.budget.reserve(requester, need).await.expect("room")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn room_that_is_free_is_granted_without_touching_pools() {
        let mut world = World::new(500);
        world.add("a", 1, true, true);
        world.grant("b", Need::Zygote(100 * MIB)).await;
        assert!(world.log().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_pools_are_hibernated_before_any_is_evicted() {
        let mut world = World::new(950);
        world.add("old", 1, false, true);
        world.add("sleepy", 2, true, true);
        world.grant("new", Need::Zygote(100 * MIB)).await;
        assert_eq!(world.log(), ["hibernate sleepy"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_pool_is_evicted_first() {
        let mut world = World::new(950);
        world.add("recent", 20, false, true);
        world.add("old", 10, false, true);
        world.add("busy", 1, false, false);
        world.grant("new", Need::Zygote(100 * MIB)).await;
        assert_eq!(world.log(), ["evict old"]);
        world.grant("new", Need::Zygote(200 * MIB)).await;
        assert_eq!(world.log(), ["evict old", "evict recent"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_requester_is_never_its_own_victim() {
        let mut world = World::new(950);
        world.add("me", 1, true, true);
        match world.budget.reserve("me", Need::Zygote(100 * MIB)).await {
            Err(NoRoom::Memory(OverBudget { budget_mb, used_mb })) => {
                assert_eq!((budget_mb, used_mb), (1000, 950))
            }
            other => panic!("expected OverBudget, got {other:?}"),
        }
        assert!(world.log().is_empty());
        assert_eq!(world.pools.len(), 1);
    }

    /// Room under the descriptor cap for `zygotes` one-zygote pools plus a
    /// new zygote.
    fn descriptors_for(zygotes: usize) -> usize {
        (zygotes + 1) * ZYGOTE_DESCRIPTORS
    }

    #[tokio::test(start_paused = true)]
    async fn below_the_descriptor_limit_nothing_is_stopped() {
        let mut world = World::new(500);
        world.add("a", 1, true, true);
        world.add("b", 2, true, true);
        world.budget.set_descriptor_limit(descriptors_for(2));
        world.grant("new", Need::Zygote(MIB)).await;
        assert!(world.log().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_descriptor_limit_the_least_recently_used_idle_zygotes_stop() {
        // Memory is plentiful: only descriptors decide.
        let mut world = World::new(500);
        world.add("recent", 30, true, true);
        world.add("busy", 1, true, false);
        world.add("old", 10, true, true);
        world.budget.set_descriptor_limit(descriptors_for(2));
        world.grant("new", Need::Zygote(MIB)).await;
        // Stopped, not hibernated: a hibernated zygote holds descriptors too.
        assert_eq!(world.log(), ["evict old"]);
        // A clone is not held to the cap.
        world.budget.set_descriptor_limit(descriptors_for(0));
        world.grant("new", Need::Clone).await;
        assert_eq!(world.log(), ["evict old"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zygote_being_started_holds_its_descriptors_until_dropped() {
        let world = World::new(500);
        world.budget.set_descriptor_limit(descriptors_for(0));
        let first = world.grant("a", Need::Zygote(MIB)).await;
        assert!(!world.budget.has_zygote_descriptors());
        assert!(matches!(
            world.budget.reserve("b", Need::Zygote(MIB)).await,
            Err(NoRoom::Descriptors { .. })
        ));
        drop(first);
        assert!(world.budget.has_zygote_descriptors());
        world.grant("b", Need::Zygote(MIB)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_descriptor_limit_with_nothing_idle_the_request_is_refused() {
        let mut world = World::new(500);
        world.add("me", 1, true, true);
        world.add("busy", 2, true, false);
        world.budget.set_descriptor_limit(descriptors_for(1));
        match world.budget.reserve("me", Need::Zygote(MIB)).await {
            Err(NoRoom::Descriptors { limit }) => assert_eq!(limit, descriptors_for(1)),
            other => panic!("expected the descriptor limit, got {other:?}"),
        }
        // The requester is never its own victim, a busy pool never one.
        assert!(world.log().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_pools_descriptors_are_free_again() {
        let mut world = World::new(500);
        world.add("busy", 1, true, false);
        world.budget.set_descriptor_limit(descriptors_for(1));
        assert!(world.budget.has_zygote_descriptors());
        world.add("gone", 2, true, false);
        assert!(!world.budget.has_zygote_descriptors());
        world.pools.pop();
        assert!(world.budget.has_zygote_descriptors());
        assert!(world.log().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_idle_is_over_budget() {
        let mut world = World::new(999);
        world.add("busy", 1, false, false);
        assert!(world.budget.reserve("new", Need::Clone).await.is_err());
        assert!(world.budget.reserve("new", Need::Zygote(MIB)).await.is_ok());
        assert!(world.log().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_pools_are_forgotten() {
        let mut world = World::new(950);
        world.add("gone", 1, false, true);
        world.pools.clear();
        assert!(world
            .budget
            .reserve("new", Need::Zygote(100 * MIB))
            .await
            .is_err());
        assert!(world.log().is_empty());
    }
}
