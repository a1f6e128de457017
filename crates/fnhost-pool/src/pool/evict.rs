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
        self.sleeping.store(false, Ordering::SeqCst);
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
            // Back to the free list, so that `remove_cgroups` removes it.
            if let Some(slot) = sandbox.teardown().await {
                self.free_slots.lock().expect("slots lock").push(slot);
            }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fnhost_config::PoolSettings;

    use super::super::fake::{self, spawn_invoke, until};
    use super::super::StartKind;
    use crate::error::InvokeError;

    fn warm() -> PoolSettings {
        PoolSettings {
            zygotes: 1,
            ready_clones: 2,
            prewarm: true,
            ..fake::settings()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_stops_everything_and_the_pool_sleeps_until_a_request() {
        let (pool, fake) = fake::pool(warm());
        pool.refill_once().await.expect("refill");
        assert!(pool.evictable());
        pool.evict_idle().await;
        let status = pool.status();
        assert_eq!(
            (status.zygotes, status.ready_clones, status.evictions),
            (0, 0, 1)
        );
        assert_eq!(fake.alive_zygotes(), 0);
        assert!(!pool.evictable());
        pool.refill_once().await.expect("refill");
        assert_eq!(fake.started(), 1, "dormant: no refill");
        let done = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(done.start, StartKind::ColdStart);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_pool_is_not_evictable() {
        let (pool, fake) = fake::pool(warm());
        pool.refill_once().await.expect("refill");
        fake.set_handler_delay(Duration::from_secs(1));
        let request = spawn_invoke(&pool);
        until(|| pool.status().in_flight == 1).await;
        assert!(!pool.evictable());
        request.await.expect("task").expect("invoke");
        assert!(pool.evictable());
    }

    #[tokio::test(start_paused = true)]
    async fn close_drains_in_flight_requests_then_kills_everything() {
        let (pool, fake) = fake::pool(warm());
        pool.refill_once().await.expect("refill");
        fake.set_handler_delay(Duration::from_secs(2));
        let request = spawn_invoke(&pool);
        until(|| pool.status().in_flight == 1).await;
        pool.close(Duration::from_secs(5)).await;
        assert!(request.is_finished(), "close waited for the request");
        assert!(request.await.expect("task").is_ok());
        let status = pool.status();
        assert_eq!((status.zygotes, status.ready_clones), (0, 0));
        assert_eq!(fake.alive_zygotes(), 0);
        assert!(matches!(
            pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
                .await,
            Err(InvokeError::ShuttingDown)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn close_gives_up_waiting_after_the_grace_period() {
        let (pool, fake) = fake::pool(PoolSettings {
            zygotes: 1,
            ..fake::settings()
        });
        fake.set_handler_delay(Duration::from_secs(60));
        let request = spawn_invoke(&pool);
        until(|| pool.status().in_flight == 1).await;
        pool.close(Duration::from_secs(1)).await;
        assert_eq!(pool.status().in_flight, 1, "still running at the grace end");
        assert_eq!(fake.alive_zygotes(), 0);
        request.abort();
    }
}
