//! Keeping a pool warm: the background loop and its refill pass (start the
//! missing zygotes, scale out on misses, pre-fork the missing ready clones
//! at most `burst` at a time), with exponential backoff after failures.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::backend::{Backend, CloneHandle, ZygoteHandle};
use super::{Counted, FunctionPool};
use crate::error::InvokeError;

/// Longest pause between refill attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the loop of a pool whose every zygote hibernates looks at it
/// (a request wakes it at once): one pass a second per pool is 10,000
/// cgroup reads a second on a host of 10,000 hibernated functions.
const ASLEEP_POLL: Duration = Duration::from_secs(10);

/// Runs futures concurrently on the current task; results come back in
/// input order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, fut) in pending.iter_mut().enumerate() {
            if results[i].is_none() {
                match fut.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => results[i] = Some(out),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future completed"))
        .collect()
}

impl<B: Backend> FunctionPool<B> {
    /// Keeps the configured warm zygotes and ready clones until the pool is
    /// closed. Failures back off exponentially (a function whose import
    /// fails must not spin).
    pub async fn maintain(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        while !self.closed.load(Ordering::SeqCst) {
            let failed = match self.refill_once().await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    false
                }
                // Out of budget is not a fault of this pool: wait quietly.
                Err(InvokeError::OverBudget { .. }) => true,
                Err(e) => {
                    tracing::warn!(function = %self.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "pool refill failed");
                    true
                }
            };
            self.stop_idle_extra_zygotes();
            self.hibernate_if_idle().await;
            self.trim_idle_cgroups();
            self.publish_gauges();
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            } else if self.at_rest() {
                // Nothing runs and nothing is to be started: no timer until
                // a request, a settings change or close wakes the pool (a
                // host of 10,000 mostly idle functions must not poll them).
                self.wake.notified().await;
            } else {
                let every = if self.asleep() {
                    ASLEEP_POLL
                } else {
                    Duration::from_secs(1)
                };
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(every) => {}
                }
            }
        }
    }

    /// True when the pool holds no process or cgroup and is not to start
    /// any: no zygote, ready clone, free slot, invocation or waiter, and
    /// either dormant or scaled to zero.
    fn at_rest(&self) -> bool {
        let settings = self.settings();
        let idle_by_choice = self.dormant.load(Ordering::SeqCst) || settings.zygotes == 0;
        idle_by_choice
            && self.live_zygotes().is_empty()
            && self.ready.lock().expect("ready lock").is_empty()
            && self.free_slots.lock().expect("slots lock").is_empty()
            && self.in_flight.load(Ordering::SeqCst) == 0
            && self.queued.load(Ordering::SeqCst) == 0
    }

    /// True when the pool hibernates (every zygote asleep, or mapped back
    /// for the ready clones a sleeping pool keeps) and nothing runs.
    fn asleep(&self) -> bool {
        let zygotes = self.live_zygotes();
        let ready = self.ready.lock().expect("ready lock").len();
        let sleeping = self.sleeping.load(Ordering::SeqCst)
            && ready >= self.settings().ready_clones_asleep() as usize;
        !zygotes.is_empty()
            && (sleeping || (ready == 0 && zygotes.iter().all(|z| z.is_asleep())))
            && self.in_flight.load(Ordering::SeqCst) == 0
    }

    /// Stops dead ready clones and those beyond `keep` (a lowered
    /// setting); their slots come back through teardown.
    pub(super) fn trim_ready_clones(&self, keep: usize) {
        let gone: Vec<B::Clone> = {
            let mut ready = self.ready.lock().expect("ready lock");
            let (alive, mut gone): (VecDeque<B::Clone>, VecDeque<B::Clone>) =
                ready.drain(..).partition(|s| s.is_alive());
            *ready = alive;
            if ready.len() > keep {
                gone.extend(ready.drain(keep..));
            }
            gone.into()
        };
        for sandbox in gone {
            sandbox.kill();
            self.spawn_teardown(sandbox);
        }
    }

    /// One pass: start missing zygotes, drop dead ready clones, pre-fork
    /// missing ready clones (at most `burst` at once).
    pub async fn refill_once(&self) -> Result<(), InvokeError> {
        let _one_pass = self.refilling.lock().await;
        if self.dormant.load(Ordering::SeqCst) {
            return Ok(());
        }
        let settings = self.settings();
        while self.live_zygotes().len() < settings.zygotes as usize {
            if self.closed.load(Ordering::SeqCst) {
                return Ok(());
            }
            if !self.budget.has_zygote_descriptors() {
                // A refill never stops another function's zygote for
                // descriptors (a request does): the pool waits for one.
                tracing::info!(function = %self.name, "no descriptors left for a zygote: the pool waits for a request");
                self.dormant.store(true, Ordering::SeqCst);
                return Ok(());
            }
            self.start_zygote(true).await?;
        }
        self.trim_ready_clones(settings.ready_clones as usize);
        // Scale out: requests keep finding the ready clones used up, so
        // the live zygotes (each forks one clone at a time) do not keep up.
        let live = self.live_zygotes().len();
        let misses = self.misses.swap(0, Ordering::Relaxed);
        if live > 0 && live < settings.max_instances as usize && misses >= 2 * live as u64 {
            tracing::info!(function = %self.name, zygotes = live + 1, "scaling out: starting another zygote");
            self.start_zygote(true).await?;
        }
        // Clone the missing ready clones concurrently: a zygote forks one at
        // a time, but each clone's setup (mounts, privilege drop) overlaps
        // with the next fork.
        loop {
            let missing = (settings.ready_clones as usize)
                .saturating_sub(self.ready.lock().expect("ready lock").len())
                .min(settings.burst as usize);
            if self.closed.load(Ordering::SeqCst) || missing == 0 {
                return Ok(());
            }
            // A hibernated zygote is woken by a request, never by the
            // refill: the request that wakes it is served by the wake-up
            // (and says so), and the refill follows once it is awake.
            let zygotes: Vec<_> = self
                .live_zygotes()
                .into_iter()
                .filter(|z| !z.is_asleep())
                .collect();
            if zygotes.is_empty() {
                return Ok(());
            }
            // Each clone is ready as soon as it is made: a request waiting
            // for one (see `checkout`) takes the first that is.
            let creations = (0..missing).map(|i| {
                let zygote = zygotes[i % zygotes.len()].clone();
                async move {
                    let cloning = Counted::enter(&self.refill_cloning);
                    let result = self.create_sandbox(zygote).await;
                    let error = match result {
                        Ok(sandbox) => {
                            self.ready.lock().expect("ready lock").push_back(sandbox);
                            self.account_descriptors();
                            None
                        }
                        Err(e) => Some(e),
                    };
                    drop(cloning);
                    self.refilled.notify_waiters();
                    error
                }
            });
            let mut first_error = None;
            for error in join_all(creations).await.into_iter().flatten() {
                first_error = first_error.or(Some(error));
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use fnhost_config::PoolSettings;

    use super::super::fake;
    use super::super::StartKind;

    #[tokio::test(start_paused = true)]
    async fn a_refill_reaches_the_configured_counts_at_most_burst_at_a_time() {
        let (pool, fake) = fake::pool(PoolSettings {
            zygotes: 2,
            ready_clones: 5,
            burst: 2,
            prewarm: true,
            ..fake::settings()
        });
        fake.set_clone_delay(Duration::from_millis(10));
        pool.refill_once().await.expect("refill");
        let status = pool.status();
        assert_eq!((status.zygotes, status.ready_clones), (2, 5));
        assert_eq!(fake.most_cloning_at_once.load(Ordering::SeqCst), 2);
        // Converged: another pass starts and clones nothing.
        pool.refill_once().await.expect("refill");
        assert_eq!((fake.started(), fake.clones()), (2, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dormant_pool_is_not_refilled_until_its_next_request() {
        let (pool, fake) = fake::pool(PoolSettings {
            zygotes: 1,
            ready_clones: 1,
            prewarm: false,
            ..fake::settings()
        });
        pool.refill_once().await.expect("refill");
        assert_eq!(fake.started(), 0);
        pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        pool.refill_once().await.expect("refill");
        assert_eq!(pool.status().ready_clones, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lower_settings_drop_surplus_ready_clones() {
        let more = PoolSettings {
            zygotes: 1,
            ready_clones: 3,
            prewarm: true,
            ..fake::settings()
        };
        let (pool, _fake) = fake::pool(more);
        pool.refill_once().await.expect("refill");
        pool.update_settings(PoolSettings {
            ready_clones: 1,
            ..more
        });
        pool.refill_once().await.expect("refill");
        assert_eq!(pool.status().ready_clones, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn misses_scale_out_up_to_max_instances() {
        let (pool, fake) = fake::pool(PoolSettings {
            zygotes: 1,
            ready_clones: 1,
            max_instances: 2,
            prewarm: true,
            ..fake::settings()
        });
        pool.refill_once().await.expect("refill");
        let kinds = [
            pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
                .await
                .expect("invoke")
                .start,
            pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
                .await
                .expect("invoke")
                .start,
            pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
                .await
                .expect("invoke")
                .start,
        ];
        assert_eq!(
            kinds,
            [
                StartKind::ReadyClone,
                StartKind::OnDemandClone,
                StartKind::OnDemandClone
            ]
        );
        // Two misses for one zygote: one more zygote.
        pool.refill_once().await.expect("refill");
        assert_eq!(pool.status().zygotes, 2);
        for _ in 0..6 {
            pool.ready.lock().expect("ready lock").clear();
            pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
                .await
                .expect("invoke");
        }
        pool.refill_once().await.expect("refill");
        assert_eq!(pool.status().zygotes, 2, "max_instances holds");
        assert_eq!(fake.started(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pool_parks_its_loop_until_a_request() {
        let (pool, fake) = fake::pool(PoolSettings {
            zygotes: 1,
            prewarm: false,
            ..fake::settings()
        });
        let refill = tokio::spawn(pool.clone().maintain());
        tokio::time::sleep(Duration::from_secs(60)).await;
        // One pass (and gauge update) at start, then no polling.
        assert_eq!(fake.memory_reads.load(Ordering::SeqCst), 1);
        pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("invoke");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(pool.status().zygotes, 1, "awake again: keeps its zygote");
        assert!(
            fake.memory_reads.load(Ordering::SeqCst) > 2,
            "polling again"
        );
        pool.close(Duration::ZERO).await;
        refill.await.expect("refill loop ends when closed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_refill_loop_retries_a_failed_start() {
        let (pool, fake) = fake::pool(PoolSettings {
            zygotes: 1,
            prewarm: true,
            ..fake::settings()
        });
        fake.fail_starts.store(2, Ordering::SeqCst);
        let refill = tokio::spawn(pool.clone().maintain());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(fake.started(), 3);
        assert_eq!(pool.status().zygotes, 1);
        pool.close(Duration::ZERO).await;
        refill.await.expect("refill loop ends when closed");
    }
}
