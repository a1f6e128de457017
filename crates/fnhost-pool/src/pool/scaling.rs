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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fnhost_config::PoolSettings;

    use super::super::fake::{self, until};
    use super::super::StartKind;
    use super::SCALE_IN_IDLE_MS;

    #[tokio::test(start_paused = true)]
    async fn scaled_out_zygotes_stop_after_the_function_idles() {
        let settings = PoolSettings {
            zygotes: 1,
            max_instances: 3,
            prewarm: true,
            ..fake::settings()
        };
        let (pool, fake) = fake::pool(settings);
        pool.refill_once().await.expect("refill");
        pool.start_zygote(true).await.expect("scale out");
        pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        pool.stop_idle_extra_zygotes();
        assert_eq!(pool.status().zygotes, 2, "not idle long enough");
        tokio::time::advance(Duration::from_millis(SCALE_IN_IDLE_MS)).await;
        pool.stop_idle_extra_zygotes();
        assert_eq!(pool.status().zygotes, 1);
        assert_eq!(fake.alive_zygotes(), 1, "the extra zygote was killed");
    }

    #[tokio::test(start_paused = true)]
    async fn scale_in_waits_for_idle_ttl_when_longer() {
        let settings = PoolSettings {
            zygotes: 1,
            idle_ttl_ms: 2 * SCALE_IN_IDLE_MS,
            prewarm: true,
            ..fake::settings()
        };
        let (pool, _fake) = fake::pool(settings);
        pool.refill_once().await.expect("refill");
        pool.start_zygote(true).await.expect("scale out");
        tokio::time::advance(Duration::from_millis(SCALE_IN_IDLE_MS)).await;
        pool.stop_idle_extra_zygotes();
        assert_eq!(pool.status().zygotes, 2);
        tokio::time::advance(Duration::from_millis(SCALE_IN_IDLE_MS)).await;
        pool.stop_idle_extra_zygotes();
        assert_eq!(pool.status().zygotes, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn scale_to_zero_releases_the_zygote_when_nothing_runs() {
        let (pool, fake) = fake::pool(fake::settings());
        let first = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(first.start, StartKind::ColdStart);
        assert_eq!(pool.status().zygotes, 0);
        let second = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(second.start, StartKind::ColdStart);
        assert_eq!(fake.started(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ready_clones_of_removed_zygotes_are_stopped() {
        let settings = PoolSettings {
            zygotes: 2,
            ready_clones: 4,
            prewarm: true,
            ..fake::settings()
        };
        let (pool, _fake) = fake::pool(settings);
        pool.refill_once().await.expect("refill");
        pool.update_settings(PoolSettings {
            zygotes: 1,
            idle_ttl_ms: 0,
            ..settings
        });
        tokio::time::advance(Duration::from_millis(SCALE_IN_IDLE_MS)).await;
        pool.stop_idle_extra_zygotes();
        assert_eq!(pool.status().zygotes, 1);
        // Ready clones alternate between the two zygotes.
        assert_eq!(pool.status().ready_clones, 2);
        until(|| pool.status().free_cgroups == 2).await;
    }
}
