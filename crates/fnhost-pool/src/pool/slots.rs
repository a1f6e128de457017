//! The free list of slot cgroups: a clone takes one (or a new one is
//! created), teardown gives it back once empty, and spare ones are removed
//! after the function has been idle a while.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::backend::{Backend, BackendError, CloneHandle, SlotHandle};
use super::scaling::SCALE_IN_IDLE_MS;
use super::{now_ms, FunctionPool};

impl<B: Backend> FunctionPool<B> {
    /// A free slot, else a new one.
    pub(super) fn take_slot(&self) -> Result<B::Slot, BackendError> {
        if let Some(slot) = self.free_slots.lock().expect("slots lock").pop() {
            return Ok(slot);
        }
        let n = self.ids.slot.fetch_add(1, Ordering::Relaxed);
        self.backend.create_slot(n)
    }

    /// Tears `sandbox` down in the background; its slot goes back to the
    /// free list and the refill loop is woken.
    pub(super) fn spawn_teardown(&self, sandbox: B::Clone) {
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

    /// Removes every spare cgroup once the function has been idle for
    /// SCALE_IN_IDLE_MS: a burst grows the free list to its peak
    /// concurrency, and idle cgroups cost kernel memory and slow every walk
    /// of the hierarchy. Ready clones hold slots of their own, and a used
    /// one comes back to the free list for the refill, so an idle pool
    /// keeps exactly one cgroup per ready clone (its baseline).
    pub(super) fn trim_idle_cgroups(&self) {
        if self.in_flight.load(Ordering::SeqCst) > 0
            || now_ms().saturating_sub(self.last_used_ms()) < SCALE_IN_IDLE_MS
        {
            return;
        }
        let spare: Vec<B::Slot> = {
            let mut free = self.free_slots.lock().expect("slots lock");
            if free.is_empty() {
                return;
            }
            free.drain(..).collect()
        };
        let removed = spare.len();
        for slot in spare {
            if let Err(e) = slot.remove() {
                tracing::warn!(cgroup = slot.name(), error = %e, "cannot remove a spare cgroup");
            }
        }
        tracing::info!(function = %self.name, removed, "removed spare cgroups of an idle pool");
    }

    /// Removes the pool's cgroups (after [`Self::close`]); used when a
    /// function is deleted or replaced by a reload.
    /// `keep_zygote_cgroup`: a new pool of the same function (a reload that
    /// replaced this one) uses the same zygote cgroup.
    pub fn remove_cgroups(&self, keep_zygote_cgroup: bool) {
        for slot in self.free_slots.lock().expect("slots lock").drain(..) {
            let _ = slot.remove();
        }
        if !keep_zygote_cgroup {
            if let Err(e) = self.backend.remove_zygote_cgroup() {
                tracing::warn!(function = %self.name, error = %e, "cannot remove the function's cgroups; they go at shutdown");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use fnhost_config::PoolSettings;

    use super::super::fake::{self, spawn_invoke, until};
    use super::SCALE_IN_IDLE_MS;

    #[tokio::test(start_paused = true)]
    async fn slots_are_reused_and_spares_trimmed_after_idle() {
        let (pool, fake) = fake::pool(PoolSettings {
            zygotes: 1,
            max_concurrency: 8,
            prewarm: true,
            ..fake::settings()
        });
        pool.refill_once().await.expect("refill");
        fake.set_handler_delay(Duration::from_millis(100));
        let burst: Vec<_> = (0..6).map(|_| spawn_invoke(&pool)).collect();
        for request in burst {
            request.await.expect("task").expect("invoke");
        }
        until(|| pool.status().free_cgroups == 6).await;
        pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(fake.slots_created.load(Ordering::SeqCst), 6, "reused");
        until(|| pool.status().free_cgroups == 6).await;
        pool.trim_idle_cgroups();
        assert_eq!(pool.status().free_cgroups, 6, "not idle yet");
        tokio::time::advance(Duration::from_millis(SCALE_IN_IDLE_MS)).await;
        pool.trim_idle_cgroups();
        // Back to the baseline: no spare cgroup.
        assert_eq!(pool.status().free_cgroups, 0);
        assert_eq!(fake.slots_removed.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn remove_cgroups_removes_free_slots_and_the_zygote_cgroup() {
        let (pool, fake) = fake::pool(PoolSettings {
            zygotes: 1,
            prewarm: true,
            ..fake::settings()
        });
        pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        until(|| pool.status().free_cgroups == 1).await;
        pool.close(Duration::ZERO).await;
        pool.remove_cgroups(false);
        assert_eq!(pool.status().free_cgroups, 0);
        assert_eq!(fake.slots_removed.load(Ordering::SeqCst), 1);
        assert!(fake.zygote_cgroup_removed.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_pool_removes_the_cgroups_of_its_ready_clones_too() {
        let (pool, fake) = fake::pool(PoolSettings {
            zygotes: 1,
            ready_clones: 2,
            prewarm: true,
            ..fake::settings()
        });
        pool.refill_once().await.expect("refill");
        assert_eq!(pool.status().ready_clones, 2);
        pool.close(Duration::ZERO).await;
        pool.remove_cgroups(false);
        assert_eq!(
            fake.slots_removed.load(Ordering::SeqCst),
            2,
            "a retired pool leaves no slot cgroup behind"
        );
    }
}
