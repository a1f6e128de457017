//! Getting a sandbox for a request: a ready clone, else a clone made on
//! demand from a warm zygote, else a cold start of one zygote shared by the
//! requests that arrive meanwhile. Also starting zygotes and cloning, each
//! after asking the memory budget for room.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::backend::{Backend, CloneHandle, SlotHandle, ZygoteHandle};
use super::{secs, Counted, FunctionPool, StartKind};
use crate::budget::{Need, NoRoom};
use crate::error::InvokeError;

impl<B: Backend> FunctionPool<B> {
    /// Gets a sandbox for one request. A cold start is shared: requests that
    /// arrive while a zygote is starting wait for it (at most until
    /// `deadline`, the end of their queue time) and clone from it.
    pub(super) async fn checkout(
        &self,
        deadline: Instant,
    ) -> Result<(B::Clone, StartKind, u64), InvokeError> {
        if let Some(sandbox) = self.take_ready() {
            return Ok((sandbox, StartKind::ReadyClone, 0));
        }
        if self.settings().ready_clones > 0 {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(sandbox) = self.take_refill_clone(deadline).await {
            return Ok((sandbox, StartKind::RefillClone, 0));
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
                        tokio::time::timeout_at(deadline, self.cold_start.lock()).await
                    else {
                        return Err(self.overloaded(&settings));
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
                Ok(sandbox) if sandbox.wake().is_some() && kind == StartKind::OnDemandClone => {
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

    /// The first live ready clone; dead ones met on the way are torn down.
    fn take_ready(&self) -> Option<B::Clone> {
        loop {
            let sandbox = self.ready.lock().expect("ready lock").pop_front()?;
            if sandbox.is_alive() {
                return Some(sandbox);
            }
            self.spawn_teardown(sandbox);
        }
    }

    /// When the refill is making clones that no other request is waiting
    /// for, waits for one of them (until `deadline`) and takes it. A zygote
    /// forks one clone at a time, so a clone made for this request would
    /// start only after those anyway. `None`: nothing to wait for, or the
    /// clone it waited for failed or went to another request; the caller
    /// then clones on demand.
    async fn take_refill_clone(&self, deadline: Instant) -> Option<B::Clone> {
        // One waiter per clone being made, at most.
        let _waiting = Counted::enter_below(&self.refill_waiters, &self.refill_cloning)?;
        loop {
            // Registered before looking, so a clone finished in between
            // still wakes this waiter.
            let refilled = self.refilled.notified();
            tokio::pin!(refilled);
            refilled.as_mut().enable();
            if let Some(sandbox) = self.take_ready() {
                return Some(sandbox);
            }
            if self.refill_cloning.load(Ordering::SeqCst) == 0 {
                return None;
            }
            if tokio::time::timeout_at(deadline, refilled).await.is_err() {
                return None;
            }
        }
    }

    fn over_budget(&self, e: NoRoom) -> InvokeError {
        let function = self.name.to_string();
        match e {
            NoRoom::Memory(e) => InvokeError::OverBudget {
                function,
                budget_mb: e.budget_mb,
                used_mb: e.used_mb,
            },
            NoRoom::Descriptors { limit } => InvokeError::DescriptorLimit { function, limit },
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
    pub(super) async fn start_zygote(&self, keep: bool) -> Result<Arc<B::Zygote>, InvokeError> {
        // Counts the zygote's descriptors until it is in the pool.
        let reservation = self
            .budget
            .reserve(&self.name, Need::Zygote(self.zygote_estimate()))
            .await
            .map_err(|e| self.over_budget(e))?;
        let id = self.ids.zygote.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.backend.start_zygote(id, self.wake.clone()).await;
        // `SandboxUnavailable`: it could not be placed; nothing started.
        if !matches!(result, Err(InvokeError::SandboxUnavailable { .. })) {
            self.metrics
                .zygote_start
                .record(started.elapsed().as_secs_f64());
            self.metrics.zygote_starts.increment(1);
        }
        let zygote = result?;
        if keep {
            self.zygotes
                .lock()
                .expect("zygotes lock")
                .push(zygote.clone());
        }
        // In the ledger before its reservation stops counting it.
        self.account_descriptors();
        drop(reservation);
        // Learn what a zygote of this function costs, for the budget.
        let live = self.live_zygotes().len().max(1) as u64;
        if let Ok(bytes) = self.backend.zygote_memory() {
            if bytes > 0 {
                self.zygote_bytes.store(bytes / live, Ordering::Relaxed);
                self.budget.learn_zygote_bytes(bytes / live);
            }
        }
        Ok(zygote)
    }

    /// Clones a sandbox from `zygote` into a free slot.
    pub(super) async fn create_sandbox(
        &self,
        zygote: Arc<B::Zygote>,
    ) -> Result<B::Clone, InvokeError> {
        self.budget
            .reserve(&self.name, Need::Clone)
            .await
            .map_err(|e| self.over_budget(e))?;
        let unavailable = |detail: String| InvokeError::SandboxUnavailable {
            function: self.name.to_string(),
            detail,
        };
        let slot = self.take_slot().map_err(|e| unavailable(e.to_string()))?;
        let id = self.ids.sandbox.fetch_add(1, Ordering::Relaxed);
        let cloned = self.backend.clone_sandbox(id, zygote, slot).await;
        // A wake-up takes back the zygote's descriptors.
        self.account_descriptors();
        match cloned {
            Ok(sandbox) => {
                if let Some(woke) = sandbox.wake() {
                    self.record_wake(&woke);
                }
                let times = sandbox.times();
                let phase = &self.metrics.phase;
                phase.clone.record(secs(times.fork_us));
                phase.cgroup_attach.record(secs(times.setup.cgroup_us));
                phase.user_namespace.record(secs(times.setup.userns_us));
                phase.mount.record(secs(times.setup.mount_us));
                phase.network.record(secs(times.setup.network_us));
                phase
                    .drop_privileges
                    .record(secs(times.setup.privileges_us));
                phase.seccomp.record(secs(times.setup.seccomp_us));
                Ok(sandbox)
            }
            Err((slot, error)) => {
                if error.wake_failed {
                    self.metrics.wakes_failed.increment(1);
                }
                // The clone may still be exiting; only reuse an empty cgroup.
                if slot.is_empty().unwrap_or(false) {
                    self.free_slots.lock().expect("slots lock").push(slot);
                }
                Err(unavailable(error.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use fnhost_config::PoolSettings;

    use super::super::fake::{self, spawn_invoke};
    use super::super::StartKind;

    fn warm(zygotes: u32, ready_clones: u32) -> PoolSettings {
        PoolSettings {
            zygotes,
            ready_clones,
            prewarm: true,
            ..fake::settings()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_takes_a_ready_clone() {
        let (pool, fake) = fake::pool(warm(1, 1));
        pool.refill_once().await.expect("refill");
        assert_eq!(fake.clones(), 1);
        let done = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(done.start, StartKind::ReadyClone);
        assert_eq!(fake.clones(), 1, "no clone made for the request");
        assert_eq!(pool.status().ready_clones, 0);
    }

    /// A request that finds the ready clone taken while the refill is
    /// making the next one waits for that one instead of cloning its own;
    /// a second request finds nobody's clone to wait for and clones.
    #[tokio::test(start_paused = true)]
    async fn a_request_during_a_refill_takes_the_clone_being_made() {
        let (pool, fake) = fake::pool(warm(1, 1));
        pool.refill_once().await.expect("refill");
        let first = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(first.start, StartKind::ReadyClone);
        fake.set_clone_delay(Duration::from_millis(50));
        fake.set_handler_delay(Duration::from_millis(10));
        let refill = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.refill_once().await })
        };
        // Let the refill start its clone.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let waiting = spawn_invoke(&pool);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let second = spawn_invoke(&pool);
        let waiting = waiting.await.expect("task").expect("invoke");
        let second = second.await.expect("task").expect("invoke");
        refill.await.expect("task").expect("refill");
        assert_eq!(waiting.start, StartKind::RefillClone);
        assert_eq!(second.start, StartKind::OnDemandClone);
        // Its wait is queue time: most of the refill clone's 50 ms.
        assert!(waiting.timings.queue_us >= 40_000, "{:?}", waiting.timings);
        assert_eq!(fake.clones(), 3, "ready, refill, one on demand");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_ready_clone_a_warm_zygote_clones_on_demand() {
        let (pool, fake) = fake::pool(warm(1, 0));
        pool.refill_once().await.expect("refill");
        let done = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(done.start, StartKind::OnDemandClone);
        assert_eq!((fake.started(), fake.clones()), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_share_one_cold_start() {
        let (pool, fake) = fake::pool(fake::settings());
        fake.set_start_delay(Duration::from_millis(500));
        fake.set_handler_delay(Duration::from_millis(100));
        let requests: Vec<_> = (0..3).map(|_| spawn_invoke(&pool)).collect();
        let mut kinds = Vec::new();
        for request in requests {
            kinds.push(request.await.expect("task").expect("invoke").start);
        }
        kinds.sort_by_key(|k| k.as_str());
        assert_eq!(
            kinds,
            [
                StartKind::ColdStart,
                StartKind::OnDemandClone,
                StartKind::OnDemandClone
            ]
        );
        assert_eq!(fake.started(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cold_start_slower_than_the_queue_time_refuses_the_waiters() {
        let (pool, fake) = fake::pool(PoolSettings {
            queue_timeout_ms: 100,
            ..fake::settings()
        });
        fake.set_start_delay(Duration::from_secs(2));
        let first = spawn_invoke(&pool);
        let second = spawn_invoke(&pool);
        assert!(first.await.expect("task").is_ok());
        assert!(matches!(
            second.await.expect("task"),
            Err(crate::InvokeError::Overloaded { .. })
        ));
        assert_eq!(fake.started(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zygote_dying_during_the_clone_is_replaced_and_the_request_retried() {
        let (pool, fake) = fake::pool(warm(1, 0));
        pool.refill_once().await.expect("refill");
        fake.kill_zygote_on_clone.store(true, Ordering::SeqCst);
        let done = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(done.start, StartKind::ColdStart);
        assert_eq!(fake.started(), 2);
        assert_eq!(fake.alive_zygotes(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_zygote_start_is_the_requests_error() {
        let (pool, fake) = fake::pool(fake::settings());
        fake.fail_starts.store(1, Ordering::SeqCst);
        assert!(matches!(
            pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
                .await,
            Err(crate::InvokeError::SandboxCrashed { .. })
        ));
        assert_eq!(pool.status().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_budget_evicts_another_idle_pool_then_refuses() {
        let meter = std::sync::Arc::new(fake::FakeMeter::default());
        meter.used.store(1 << 30, Ordering::SeqCst);
        let budget = crate::budget::MemoryBudget::new(1 << 30, meter);
        let (idle, _) = fake::pool_in(fake::spec("idle", warm(1, 1)), budget.clone());
        let (busy, fake) = fake::pool_in(fake::spec("busy", fake::settings()), budget);
        // Fill `idle` before the budget counts anything.
        idle.budget.set_limit(u64::MAX / 4);
        idle.refill_once().await.expect("refill");
        idle.budget.set_limit(1 << 30);
        match busy
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
        {
            Err(crate::InvokeError::OverBudget { budget_mb, .. }) => assert_eq!(budget_mb, 1024),
            other => panic!("expected OverBudget, got {other:?}"),
        }
        assert_eq!(idle.status().evictions, 1);
        assert_eq!((idle.status().zygotes, idle.status().ready_clones), (0, 0));
        assert_eq!(fake.started(), 0);
    }

    /// The descriptors a pool holds are counted per zygote and clone; when
    /// a new zygote would pass the cap, another function's idle zygote
    /// stops and the request is served cold, without an error; with nothing
    /// idle the request gets the descriptor error.
    #[tokio::test(start_paused = true)]
    async fn the_descriptor_limit_stops_another_idle_zygote_then_refuses() {
        use crate::budget::{Reclaimable, CLONE_DESCRIPTORS, ZYGOTE_DESCRIPTORS};
        let budget = fake::ample_budget();
        let (idle, _) = fake::pool_in(fake::spec("idle", warm(1, 1)), budget.clone());
        let keep_one = PoolSettings {
            zygotes: 1,
            ..fake::settings()
        };
        let (cold, fake) = fake::pool_in(fake::spec("cold", keep_one), budget.clone());
        idle.refill_once().await.expect("refill");
        assert_eq!(idle.descriptors(), ZYGOTE_DESCRIPTORS + CLONE_DESCRIPTORS);
        // Room for one zygote with a clone, held by `idle`.
        budget.set_descriptor_limit(ZYGOTE_DESCRIPTORS + CLONE_DESCRIPTORS);
        let done = cold
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("served after stopping the idle zygote");
        assert_eq!(done.start, super::super::StartKind::ColdStart);
        assert_eq!(idle.status().evictions, 1);
        assert_eq!(idle.descriptors(), 0);
        assert_eq!(fake.started(), 1);
        // `idle` asks now; `cold`'s zygote is the only one, but it is idle:
        // it stops in turn. Then with `cold` busy, nothing can stop.
        let _ = idle
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("served after stopping the other idle zygote");
        assert_eq!(cold.status().evictions, 1);
        fake.set_handler_delay(std::time::Duration::from_secs(10));
        let (blocker, _) = fake::pool_in(fake::spec("blocker", fake::settings()), budget.clone());
        budget.set_descriptor_limit(0);
        match blocker
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
        {
            Err(crate::InvokeError::DescriptorLimit { limit, .. }) => assert_eq!(limit, 0),
            other => panic!("expected the descriptor limit, got {other:?}"),
        }
    }

    /// The cap is checked against the ledger the pools report to: after
    /// every kind of change a pool makes, what it reported is what it
    /// holds, and a dropped pool leaves the sum.
    #[tokio::test(start_paused = true)]
    async fn the_descriptor_ledger_follows_what_pools_hold() {
        use crate::budget::Reclaimable;
        let budget = fake::ample_budget();
        let (warm_pool, _) = fake::pool_in(fake::spec("warm", warm(2, 2)), budget.clone());
        let (cold_pool, fake) = fake::pool_in(fake::spec("cold", fake::settings()), budget.clone());
        let held = || warm_pool.descriptors() + cold_pool.descriptors();
        let in_ledger = || budget.ledger_held();
        warm_pool.refill_once().await.expect("refill");
        assert!(warm_pool.descriptors() > 0);
        assert_eq!(in_ledger(), held());
        // A request in flight counts its clone; its zygote was cold-started.
        fake.set_handler_delay(Duration::from_secs(5));
        let running = fake::spawn_invoke(&cold_pool);
        fake::until(|| cold_pool.status().in_flight == 1 && fake.clones() == 1).await;
        assert!(cold_pool.descriptors() > 0);
        assert_eq!(in_ledger(), held());
        tokio::time::advance(Duration::from_secs(6)).await;
        running.await.expect("task").expect("invoke");
        assert_eq!(in_ledger(), held());
        // Requests served by ready clones, then an eviction.
        for _ in 0..3 {
            warm_pool
                .invoke(bytes::Bytes::from_static(b"x"), "r".into())
                .await
                .expect("invoke");
            assert_eq!(in_ledger(), held());
        }
        warm_pool.evict_idle().await;
        assert_eq!(warm_pool.descriptors(), 0);
        assert_eq!(in_ledger(), held());
        drop(cold_pool);
        assert_eq!(in_ledger(), warm_pool.descriptors());
    }
}
