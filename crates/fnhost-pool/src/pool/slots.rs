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
        let n = self.next_slot.fetch_add(1, Ordering::Relaxed);
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

    /// Removes spare cgroups (beyond what the ready clones need) once the
    /// function has been idle for SCALE_IN_IDLE_MS: a burst grows the free
    /// list to its peak concurrency, and keeping hundreds of idle cgroups
    /// costs kernel memory and slows every walk of the hierarchy.
    pub(super) fn trim_idle_cgroups(&self) {
        let keep = self.settings().ready_clones as usize + 2;
        if self.in_flight.load(Ordering::SeqCst) > 0
            || now_ms().saturating_sub(self.last_used_ms()) < SCALE_IN_IDLE_MS
        {
            return;
        }
        let spare: Vec<B::Slot> = {
            let mut free = self.free_slots.lock().expect("slots lock");
            if free.len() <= keep {
                return;
            }
            let n = free.len();
            free.drain(keep..n).collect()
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
    pub fn remove_cgroups(&self) {
        for slot in self.free_slots.lock().expect("slots lock").drain(..) {
            let _ = slot.remove();
        }
        let _ = self.backend.remove_zygote_cgroup();
    }
}
