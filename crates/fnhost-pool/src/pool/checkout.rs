//! Getting a sandbox for a request: a ready clone, else a clone made on
//! demand from a warm zygote, else a cold start of one zygote shared by the
//! requests that arrive meanwhile. Also starting zygotes and cloning, each
//! after asking the memory budget for room.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::backend::{Backend, CloneHandle, SlotHandle, ZygoteHandle};
use super::{secs, FunctionPool, StartKind};
use crate::budget::{Need, OverBudget};
use crate::error::InvokeError;

impl<B: Backend> FunctionPool<B> {
    /// Gets a sandbox for one request. A cold start is shared: requests that
    /// arrive while a zygote is starting wait for it (at most until
    /// `deadline`, the end of their queue time) and clone from it.
    pub(super) async fn checkout(
        &self,
        deadline: Instant,
    ) -> Result<(B::Clone, StartKind, u64), InvokeError> {
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

    fn over_budget(&self, e: OverBudget) -> InvokeError {
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
    pub(super) async fn start_zygote(&self, keep: bool) -> Result<Arc<B::Zygote>, InvokeError> {
        self.budget
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
        match self.backend.clone_sandbox(id, zygote, slot).await {
            Ok(sandbox) => {
                if let Some(woke) = sandbox.wake() {
                    self.record_wake(&woke);
                }
                let times = sandbox.times();
                let phase = &self.metrics.phase;
                phase.clone.record(secs(times.fork_us));
                phase.cgroup_attach.record(secs(times.setup.cgroup_us));
                phase.mount.record(secs(times.setup.mount_us));
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
