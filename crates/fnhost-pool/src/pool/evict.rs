//! Stopping a pool's processes: eviction of its idle zygotes and ready
//! clones (by the memory budget) and closing the pool (drain in-flight
//! invocations up to a grace period, then kill everything).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::backend::{Backend, CloneHandle, SlotHandle, ZygoteHandle};
use super::FunctionPool;

impl<B: Backend> FunctionPool<B> {
    /// True when the pool holds warm processes and nothing is running.
    pub fn evictable(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
            && (!self.zygotes.lock().expect("zygotes lock").is_empty()
                || !self.ready.lock().expect("ready lock").is_empty())
    }

    /// Takes every ready clone and zygote out of the pool.
    fn take_all(&self) -> (Vec<B::Clone>, Vec<Arc<B::Zygote>>) {
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
            let busy = !self.backend.zygotes_gone().unwrap_or(true)
                || self
                    .free_slots
                    .lock()
                    .expect("slots lock")
                    .iter()
                    .any(|s| !s.is_empty().unwrap_or(true));
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.publish_gauges();
    }
}
