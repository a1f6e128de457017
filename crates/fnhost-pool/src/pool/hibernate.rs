//! When a pool hibernates its zygotes (idle for `hibernate_after_ms`) and
//! what it records when one is woken; the per-zygote mechanics are the
//! backend's.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use fnhost_config::HibernateMode;
use tokio::time::Instant;

use super::backend::{Backend, Slept, Wake, ZygoteHandle};
use super::{now_ms, secs, FunctionPool};
use crate::budget::Need;

/// Pause before hibernating again after a hibernation failed.
const HIBERNATE_RETRY_MS: u64 = 60_000;

impl<B: Backend> FunctionPool<B> {
    /// Hibernates the pool's zygotes once the function has been idle for
    /// `hibernate_after_ms` (see [`Self::hibernate`]).
    pub(super) async fn hibernate_if_idle(&self) {
        let after = self.settings().hibernate_after_ms;
        if after > 0 && now_ms().saturating_sub(self.last_used_ms()) >= after {
            self.hibernate().await;
            self.keep_ready_while_asleep().await;
        }
    }

    /// Whether the memory budget may hibernate this pool instead of
    /// evicting it: hibernation is configured, nothing runs or waits, and
    /// a zygote is awake.
    pub fn can_hibernate(&self) -> bool {
        self.settings().hibernate_after_ms > 0
            && self.quiet()
            && !self.sleeping.load(Ordering::SeqCst)
            && self.live_zygotes().iter().any(|z| !z.is_asleep())
    }

    /// Open, with nothing running or waiting.
    fn quiet(&self) -> bool {
        !self.closed.load(Ordering::SeqCst)
            && self.in_flight.load(Ordering::SeqCst) == 0
            && self.queued.load(Ordering::SeqCst) == 0
    }

    /// Hibernates every awake zygote now: their ready clones are stopped
    /// (each holds pages of its zygote), then each zygote's memory goes to
    /// a snapshot (or the kernel reclaims the cgroup's). The pool stays
    /// dormant (no refill) until its next request, which wakes a zygote.
    /// Also the memory budget's gentler alternative to eviction (a wake-up
    /// is cheaper than a cold start). Returns how many zygotes went to
    /// sleep.
    pub async fn hibernate(&self) -> usize {
        let settings = self.settings();
        // A sleeping pool's memory is in its snapshots already, even where
        // a zygote was mapped back to keep ready clones.
        if settings.hibernate_after_ms == 0 || !self.quiet() || self.sleeping.load(Ordering::SeqCst)
        {
            return 0;
        }
        // After a failure, wait before trying again (a full disk must not
        // make the pool stop and refill its ready clones every second).
        let failed = self.hibernate_failed_ms.load(Ordering::Relaxed);
        if failed > 0 && now_ms().saturating_sub(failed) < HIBERNATE_RETRY_MS {
            return 0;
        }
        let sleepy: Vec<Arc<B::Zygote>> = self
            .live_zygotes()
            .into_iter()
            .filter(|z| !z.is_asleep())
            .collect();
        if sleepy.is_empty() {
            return 0;
        }
        // Not while a refill pass runs (it may be forking ready clones, or
        // waiting in the budget for room: the budget calls this from other
        // pools' refills, so waiting here could deadlock two pools).
        let Ok(_one_pass) = self.refilling.try_lock() else {
            return 0;
        };
        // No refill while asleep: it would fork ready clones (waking the
        // zygotes right away). The next request clears this.
        self.dormant.store(true, Ordering::SeqCst);
        self.stop_ready_clones_of(&sleepy);
        let mode = settings.hibernate_mode;
        let pass = Instant::now();
        // Reclaim acts on the cgroup all the pool's zygotes share: once.
        let mut reclaimed = match mode {
            HibernateMode::Reclaim => Some(self.backend.reclaim_zygotes().await),
            HibernateMode::Snapshot => None,
        };
        let mut slept = 0;
        let mut failed = false;
        for zygote in sleepy {
            // A request that arrived meanwhile keeps the pool awake.
            if !self.dormant.load(Ordering::SeqCst) {
                break;
            }
            let started = Instant::now();
            let outcome = match &mut reclaimed {
                None => {
                    self.backend
                        .hibernate_snapshot(&zygote, settings.hibernate_prefetch)
                        .await
                }
                Some(Ok(())) => Ok(zygote.mark_reclaimed().await.then_some(Slept::default())),
                // Reported once: the loop ends at the first failure.
                Some(failed @ Err(_)) => {
                    Err(std::mem::replace(failed, Ok(())).expect_err("matched a failure"))
                }
            };
            match outcome {
                Ok(Some(Slept {
                    snapshot_bytes,
                    dropped_bytes,
                })) => {
                    slept += 1;
                    let took = match mode {
                        HibernateMode::Snapshot => started.elapsed(),
                        HibernateMode::Reclaim => pass.elapsed(),
                    };
                    self.metrics.hibernations.increment(1);
                    self.metrics.hibernate.record(took.as_secs_f64());
                    tracing::info!(function = %self.name, zygote = zygote.id(), mode = mode.as_str(),
                        snapshot_mb = snapshot_bytes as f64 / 1048576.0, dropped_mb = dropped_bytes as f64 / 1048576.0,
                        took_ms = took.as_secs_f64() * 1e3, "zygote hibernated");
                }
                Ok(None) => {}
                Err(e) => {
                    self.metrics.hibernations_failed.increment(1);
                    tracing::warn!(function = %self.name, zygote = zygote.id(), mode = mode.as_str(), error = %e,
                        "cannot hibernate zygote; the pool stays warm");
                    // Refill again: the zygote may have been stopped (a
                    // hibernation that stalled), and its ready clones are.
                    self.hibernate_failed_ms
                        .store(now_ms().max(1), Ordering::Relaxed);
                    self.dormant.store(false, Ordering::SeqCst);
                    self.wake.notify_one();
                    failed = true;
                    break;
                }
            }
        }
        // Every zygote sleeps and no request came meanwhile (one clears
        // `dormant`, and its own `sleeping` check must not see a stale true).
        if slept > 0 && !failed {
            self.sleeping.store(true, Ordering::SeqCst);
            if !self.dormant.load(Ordering::SeqCst) {
                self.sleeping.store(false, Ordering::SeqCst);
            }
        }
        self.publish_gauges();
        slept
    }

    /// Keeps `hibernate_ready_clones` ready clones of a sleeping pool (see
    /// [`fnhost_config::PoolSettings::ready_clones_asleep`]): maps each
    /// zygote's snapshot back once it is in the page cache, then forks the
    /// clones from it. Their memory is that page cache plus their own few
    /// pages, so the next request is served at warm speed. Run from the
    /// refill loop only: the memory budget hibernates pools to make room,
    /// not to fork clones. Stops as soon as a request arrives (its own
    /// checkout and the refill take over).
    pub(super) async fn keep_ready_while_asleep(&self) {
        let keep = self.settings().ready_clones_asleep() as usize;
        let asleep = || self.sleeping.load(Ordering::SeqCst) && self.dormant.load(Ordering::SeqCst);
        if !asleep() || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(_one_pass) = self.refilling.try_lock() else {
            return;
        };
        self.trim_ready_clones(keep);
        if self.ready.lock().expect("ready lock").len() >= keep {
            return;
        }
        let mut zygotes = Vec::new();
        for zygote in self.live_zygotes() {
            if !asleep() {
                return;
            }
            let settled = self.backend.settle(&zygote).await;
            // Mapped back, it holds its snapshot open again.
            self.account_descriptors();
            match settled {
                Ok(Some(woke)) => {
                    self.record_wake(&woke);
                    zygotes.push(zygote);
                }
                Ok(None) => zygotes.push(zygote),
                // It was stopped; a request cold-starts a new one.
                Err(e) => {
                    self.metrics.wakes_failed.increment(1);
                    tracing::warn!(function = %self.name, zygote = zygote.id(), error = %e,
                        "cannot map a hibernated zygote back for its ready clones");
                }
            }
        }
        let mut next = 0;
        // Only while the budget has room as it is: a ready clone of a
        // sleeping function must never push another function out.
        while !zygotes.is_empty()
            && asleep()
            && self.ready.lock().expect("ready lock").len() < keep
            && self.budget.has_room(Need::Clone)
        {
            let zygote = zygotes[next % zygotes.len()].clone();
            next += 1;
            match self.create_sandbox(zygote).await {
                Ok(sandbox) => {
                    self.ready.lock().expect("ready lock").push_back(sandbox);
                    self.account_descriptors();
                }
                Err(e) => {
                    tracing::warn!(function = %self.name, error = %e,
                        "cannot keep a ready clone of the hibernated function; its next request makes one");
                    break;
                }
            }
        }
        // A request that arrived meanwhile finds the clone in `ready`.
        self.publish_gauges();
    }

    pub(super) fn record_wake(&self, woke: &Wake) {
        let m = &self.metrics;
        m.wakes.increment(1);
        m.wake.record(secs(woke.wake_us));
        if let Some(stats) = &woke.restore {
            m.wake_faults.increment(stats.faults);
            m.wake_prefetched_pages.increment(stats.prefetched_pages);
            m.wake_copied_pages.increment(stats.copied_pages);
        }
        let restore = woke.restore.clone().unwrap_or_default();
        tracing::info!(function = %self.name, wake_ms = woke.wake_us as f64 / 1e3,
            restore_ms = restore.duration.as_secs_f64() * 1e3, prefetch_ms = restore.read.as_secs_f64() * 1e3,
            mapped_mib = restore.mapped_bytes as f64 / f64::from(1 << 20),
            prefetched = restore.prefetched_pages, "zygote woken");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fnhost_config::PoolSettings;

    use super::super::backend::{CloneHandle, ZygoteHandle};
    use super::super::fake::{self, spawn_invoke, until};
    use super::super::StartKind;

    /// Hibernates after 1 s and keeps no ready clone asleep: a request
    /// wakes the zygote itself.
    fn sleepy() -> PoolSettings {
        PoolSettings {
            zygotes: 1,
            ready_clones: 1,
            prewarm: true,
            hibernate_after_ms: 1000,
            hibernate_ready_clones: 0,
            ..fake::settings()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hibernated_pool_keeps_a_ready_clone_and_its_next_request_is_a_wake() {
        let (pool, fake) = fake::pool(PoolSettings {
            ready_clones: 2,
            hibernate_ready_clones: 1,
            ..sleepy()
        });
        pool.refill_once().await.expect("refill");
        assert_eq!(pool.status().ready_clones, 2);
        tokio::time::advance(Duration::from_millis(1000)).await;
        pool.hibernate_if_idle().await;
        let status = pool.status();
        assert_eq!(
            (status.hibernated, status.ready_clones),
            (1, 1),
            "asleep with one clone forked from the mapped snapshot"
        );
        assert!(
            pool.live_zygotes().iter().all(|z| !z.is_asleep()),
            "mapped back for the clone"
        );
        // Its memory is in the snapshot already: nothing to hibernate again,
        // by the refill loop or by the budget.
        assert!(!pool.can_hibernate());
        assert_eq!(pool.hibernate().await, 0);
        let clones = fake.clones();
        pool.hibernate_if_idle().await;
        assert_eq!(fake.clones(), clones, "kept, not forked again");
        let done = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(done.start, StartKind::Wake, "served by the kept clone");
        assert_eq!(fake.clones(), clones, "no clone on the request's path");
        assert_eq!(pool.status().hibernated, 0);
        let done = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_ne!(done.start, StartKind::Wake, "awake now");
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_clone_that_died_is_torn_down_and_replaced_while_asleep() {
        let (pool, fake) = fake::pool(PoolSettings {
            hibernate_ready_clones: 1,
            ..sleepy()
        });
        pool.refill_once().await.expect("refill");
        tokio::time::advance(Duration::from_millis(1000)).await;
        pool.hibernate_if_idle().await;
        assert_eq!(pool.status().ready_clones, 1);
        let clones = fake.clones();
        pool.ready.lock().expect("ready lock")[0].kill();
        pool.hibernate_if_idle().await;
        let status = pool.status();
        assert_eq!((status.hibernated, status.ready_clones), (1, 1), "replaced");
        assert_eq!(fake.clones(), clones + 1);
        // The dead clone's slot came back (free, or reused by its
        // replacement): every slot made is accounted for.
        until(|| {
            let s = pool.status();
            (s.free_cgroups + s.ready_clones) as u64
                == fake.slots_created.load(std::sync::atomic::Ordering::SeqCst)
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn reclaim_mode_keeps_no_ready_clone_asleep() {
        let (pool, _fake) = fake::pool(PoolSettings {
            hibernate_ready_clones: 1,
            hibernate_mode: fnhost_config::HibernateMode::Reclaim,
            ..sleepy()
        });
        pool.refill_once().await.expect("refill");
        tokio::time::advance(Duration::from_millis(1000)).await;
        pool.hibernate_if_idle().await;
        let status = pool.status();
        assert_eq!((status.hibernated, status.ready_clones), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pool_hibernates_and_the_next_request_wakes_it() {
        let (pool, _fake) = fake::pool(sleepy());
        pool.refill_once().await.expect("refill");
        pool.hibernate_if_idle().await;
        assert_eq!(pool.status().hibernated, 0, "not idle long enough");
        tokio::time::advance(Duration::from_millis(1000)).await;
        pool.hibernate_if_idle().await;
        let status = pool.status();
        assert_eq!((status.hibernated, status.ready_clones), (1, 0));
        pool.refill_once().await.expect("refill");
        assert_eq!(pool.status().ready_clones, 0, "no refill while asleep");
        let done = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(done.start, StartKind::Wake);
        assert_eq!(pool.status().hibernated, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_refill_never_wakes_a_hibernated_zygote_the_request_does() {
        let (pool, _fake) = fake::pool(sleepy());
        pool.refill_once().await.expect("refill");
        tokio::time::advance(Duration::from_millis(1000)).await;
        pool.hibernate_if_idle().await;
        assert_eq!(pool.status().hibernated, 1);
        // A request arrived (the pool is no longer dormant) and the refill
        // loop runs before the request's own clone: it must leave the
        // zygote asleep for the request to wake.
        pool.dormant
            .store(false, std::sync::atomic::Ordering::SeqCst);
        pool.refill_once().await.expect("refill");
        assert_eq!(
            (pool.status().hibernated, pool.status().ready_clones),
            (1, 0)
        );
        let done = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(done.start, StartKind::Wake);
    }

    /// The gauge of a sleeping pool's snapshot page cache is measured at
    /// most once a minute (each measurement opens and walks every
    /// snapshot), again at once when its snapshots change; the admin API's
    /// status always measures.
    #[tokio::test(start_paused = true)]
    async fn the_page_cache_gauge_is_measured_once_a_minute_while_asleep() {
        let (pool, fake) = fake::pool(sleepy());
        pool.refill_once().await.expect("refill");
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(pool.hibernate().await > 0);
        let zygote = fake.zygotes.lock().expect("zygotes")[0].clone();
        let reads = || zygote.cache_reads.load(std::sync::atomic::Ordering::SeqCst);
        let after_hibernating = reads();
        assert!(after_hibernating > 0, "measured when its snapshot appeared");
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(10)).await;
            pool.publish_gauges();
        }
        assert_eq!(reads(), after_hibernating, "not again within the minute");
        tokio::time::advance(Duration::from_secs(11)).await;
        pool.publish_gauges();
        assert_eq!(reads(), after_hibernating + 1, "again after a minute");
        assert_eq!(pool.status().snapshot_cached_bytes, 1 << 20);
        assert_eq!(reads(), after_hibernating + 2, "the status measures afresh");
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_or_unconfigured_pool_does_not_hibernate() {
        let (pool, fake) = fake::pool(sleepy());
        pool.refill_once().await.expect("refill");
        assert!(pool.can_hibernate());
        fake.set_handler_delay(Duration::from_secs(1));
        let request = spawn_invoke(&pool);
        until(|| pool.status().in_flight == 1).await;
        assert!(!pool.can_hibernate());
        assert_eq!(pool.hibernate().await, 0);
        request.await.expect("task").expect("invoke");

        let (never, _fake) = fake::pool(PoolSettings {
            hibernate_after_ms: 0,
            ..sleepy()
        });
        never.refill_once().await.expect("refill");
        assert!(!never.can_hibernate());
        assert_eq!(never.hibernate().await, 0);
    }
}
