//! Scaling a pool's zygotes: scale-in of the zygotes above `zygotes` after
//! the function has been idle (`idle_ttl_ms`), pure scale-to-zero, and
//! stopping the ready clones of zygotes taken out. Scale-out on misses is
//! decided in the refill pass (`refill.rs`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::backend::{Backend, CloneHandle, ZygoteHandle};
use super::{now_ms, FunctionPool};

/// Least idle time before a zygote added by scale-out is stopped.
pub(super) const SCALE_IN_IDLE_MS: u64 = 30_000;

impl<B: Backend> FunctionPool<B> {
    /// Drops the pool's hold on zygotes above `zygotes` (with `idle_ttl_ms =
    /// 0`, as soon as nothing runs): each dies when its last sandbox is torn
    /// down, so the next request is a true cold start.
    pub(super) fn release_surplus_zygotes(&self) {
        self.remove_surplus_zygotes(false);
    }

    /// Stops zygotes above the configured count once the function has been
    /// idle for `idle_ttl_ms`, with the ready clones they hold.
    pub(super) fn stop_idle_extra_zygotes(&self) {
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

    /// Takes the zygotes above `zygotes` out of the pool with the ready
    /// clones they hold; `kill` stops them now rather than when their last
    /// sandbox is torn down.
    fn remove_surplus_zygotes(&self, kill: bool) {
        let keep = self.settings().zygotes as usize;
        let surplus: Vec<Arc<B::Zygote>> = {
            let mut zygotes = self.zygotes.lock().expect("zygotes lock");
            let n = zygotes.len();
            zygotes.drain(keep.min(n)..).collect()
        };
        self.stop_ready_clones_of(&surplus);
        if kill {
            for zygote in surplus {
                tracing::info!(function = %self.name, zygote = zygote.id(), "stopping idle zygote (idle_ttl_ms)");
                zygote.kill();
            }
        }
    }

    /// Stops the ready clones forked by any of `zygotes`.
    pub(super) fn stop_ready_clones_of(&self, zygotes: &[Arc<B::Zygote>]) {
        let stale: Vec<B::Clone> = {
            let mut ready = self.ready.lock().expect("ready lock");
            let (keep, stale): (VecDeque<B::Clone>, VecDeque<B::Clone>) = ready
                .drain(..)
                .partition(|s| !zygotes.iter().any(|z| Arc::ptr_eq(z, s.zygote())));
            *ready = keep;
            stale.into_iter().collect()
        };
        for sandbox in stale {
            sandbox.kill();
            self.spawn_teardown(sandbox);
        }
    }
}
