//! Admission: at most `max_concurrency` invocations of a function run at
//! once; the others queue up to `queue_timeout_ms`, then are refused as
//! overloaded. Owns the in-flight and queued counts and resizing the limit.
//!
//! An admitted invocation runs on a task of its own, so that a caller that
//! goes away (an HTTP client disconnecting drops the request future) never
//! cuts a clone hand-off in half: the task sees the caller gone, kills the
//! sandbox and tears it down, and the counts and the permit come back when
//! it ends. Every count is held by a guard, restored however a future ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fnhost_config::PoolSettings;
use tokio::time::Instant;

use super::backend::Backend;
use super::{now_ms, Counted, FunctionPool, Invocation};
use crate::error::InvokeError;

impl<B: Backend> FunctionPool<B> {
    /// Runs one invocation. Dropping the returned future before it ends
    /// cancels the invocation: its sandbox is killed and torn down.
    pub async fn invoke(
        self: &Arc<Self>,
        payload: Bytes,
        request_id: String,
    ) -> Result<Invocation, InvokeError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(InvokeError::ShuttingDown);
        }
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
        if self.dormant.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
        // The first request to a hibernated function is its wake-up, even
        // when a ready clone kept while it slept serves it.
        let woke_pool = self.sleeping.swap(false, Ordering::SeqCst);
        let started = Instant::now();
        let settings = self.settings();
        let queue_timeout = Duration::from_millis(settings.queue_timeout_ms);
        let acquired = {
            let _queued = Counted::enter(&self.queued);
            tokio::time::timeout(queue_timeout, self.concurrency.clone().acquire_owned()).await
        };
        let permit = match acquired {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(InvokeError::ShuttingDown),
            Err(_) => return Err(self.overloaded(&settings)),
        };
        // Dropped with this future: the task then cancels the invocation.
        let (caller, caller_gone) = tokio::sync::oneshot::channel::<()>();
        let pool = self.clone();
        let task = tokio::spawn(async move {
            let _permit = permit;
            let result = {
                let _in_flight = Counted::enter(&pool.in_flight);
                pool.account_descriptors();
                pool.execute(&payload, request_id, started, woke_pool, caller_gone)
                    .await
            };
            pool.after_invocation(&settings, &result);
            result
        });
        let result = task.await.unwrap_or_else(|e| {
            Err(InvokeError::SandboxCrashed {
                function: self.name.to_string(),
                detail: format!("the invocation task failed: {e}"),
            })
        });
        drop(caller);
        result
    }

    /// Bookkeeping once an invocation has ended, however it ended.
    fn after_invocation(&self, settings: &PoolSettings, result: &Result<Invocation, InvokeError>) {
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
        // Pure scale-to-zero: the zygote this request started goes away
        // as soon as nothing runs, so the next request is a true cold start.
        let idle = self.in_flight.load(Ordering::SeqCst) == 0;
        if idle && settings.zygotes == 0 && settings.idle_ttl_ms == 0 {
            self.release_surplus_zygotes();
        }
        self.account_descriptors();
        match result {
            Err(InvokeError::Timeout { .. }) => self.metrics.timeouts.increment(1),
            Err(InvokeError::MemoryLimit { .. }) => self.metrics.oom_kills.increment(1),
            Err(InvokeError::Cancelled { .. }) => self.metrics.cancelled.increment(1),
            _ => {}
        }
    }

    /// The answer to a request that found no room within its queue time.
    pub(super) fn overloaded(&self, settings: &PoolSettings) -> InvokeError {
        InvokeError::Overloaded {
            function: self.name.to_string(),
            max_concurrency: settings.max_concurrency,
            queue_timeout_ms: settings.queue_timeout_ms,
        }
    }

    /// Makes the semaphore stand for `max` permits: more at once, fewer as
    /// running invocations release theirs.
    pub(super) fn resize_concurrency(&self, max: u32) {
        let previous = self.permits.swap(max, Ordering::SeqCst);
        if max > previous {
            self.concurrency.add_permits((max - previous) as usize);
        } else {
            let surplus = previous - max;
            let semaphore = self.concurrency.clone();
            tokio::spawn(async move {
                if let Ok(permits) = semaphore.acquire_many(surplus).await {
                    permits.forget();
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fake::{self, spawn_invoke, until};
    use crate::error::InvokeError;

    fn one_at_a_time() -> fnhost_config::PoolSettings {
        fnhost_config::PoolSettings {
            max_concurrency: 1,
            queue_timeout_ms: 1000,
            ..fake::settings()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_limit_is_refused_after_its_queue_time() {
        let (pool, fake) = fake::pool(one_at_a_time());
        fake.set_handler_delay(Duration::from_secs(2));
        let first = spawn_invoke(&pool);
        until(|| pool.status().in_flight == 1).await;
        let second = spawn_invoke(&pool);
        until(|| pool.status().queued == 1).await;
        match second.await.expect("task") {
            Err(InvokeError::Overloaded {
                max_concurrency,
                queue_timeout_ms,
                ..
            }) => assert_eq!((max_concurrency, queue_timeout_ms), (1, 1000)),
            other => panic!("expected Overloaded, got {other:?}"),
        }
        assert_eq!(pool.status().queued, 0);
        assert!(first.await.expect("task").is_ok());
        assert_eq!(pool.status().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permit_freed_within_the_queue_time_is_used() {
        let (pool, fake) = fake::pool(one_at_a_time());
        fake.set_handler_delay(Duration::from_millis(400));
        let first = spawn_invoke(&pool);
        until(|| pool.status().in_flight == 1).await;
        let second = spawn_invoke(&pool);
        assert!(first.await.expect("task").is_ok());
        assert!(second.await.expect("task").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn raising_max_concurrency_admits_more_at_once() {
        let (pool, fake) = fake::pool(one_at_a_time());
        fake.set_handler_delay(Duration::from_secs(2));
        pool.update_settings(fnhost_config::PoolSettings {
            max_concurrency: 2,
            ..one_at_a_time()
        });
        let first = spawn_invoke(&pool);
        let second = spawn_invoke(&pool);
        until(|| pool.status().in_flight == 2).await;
        assert!(first.await.expect("task").is_ok());
        assert!(second.await.expect("task").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn lowering_max_concurrency_refuses_what_no_longer_fits() {
        let two = fnhost_config::PoolSettings {
            max_concurrency: 2,
            ..one_at_a_time()
        };
        let (pool, fake) = fake::pool(two);
        pool.update_settings(one_at_a_time());
        fake.set_handler_delay(Duration::from_secs(2));
        let first = spawn_invoke(&pool);
        until(|| pool.status().in_flight == 1).await;
        let second = spawn_invoke(&pool);
        assert!(matches!(
            second.await.expect("task"),
            Err(InvokeError::Overloaded {
                max_concurrency: 1,
                ..
            })
        ));
        assert!(first.await.expect("task").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_pool_refuses_requests() {
        let (pool, _fake) = fake::pool(fake::settings());
        pool.close(Duration::from_secs(1)).await;
        assert!(matches!(
            pool.invoke(bytes::Bytes::from_static(b"x"), "r".into())
                .await,
            Err(InvokeError::ShuttingDown)
        ));
    }

    fn on_demand() -> fnhost_config::PoolSettings {
        fnhost_config::PoolSettings {
            zygotes: 1,
            prewarm: true,
            ..fake::settings()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_gone_mid_run_stops_its_sandbox_and_gives_everything_back() {
        let (pool, fake) = fake::pool(on_demand());
        pool.refill_once().await.expect("refill");
        fake.set_handler_delay(Duration::from_millis(2500));
        let request = spawn_invoke(&pool);
        until(|| pool.status().in_flight == 1 && fake.clones() == 1).await;
        request.abort();
        until(|| pool.status().in_flight == 0).await;
        assert_eq!(
            fake.clones_killed.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the running sandbox was killed"
        );
        until(|| pool.status().free_cgroups == 1).await;
        // The permit came back: a request that needs it is admitted.
        assert!(pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_gone_while_queued_leaves_no_count_behind() {
        let (pool, fake) = fake::pool(one_at_a_time());
        fake.set_handler_delay(Duration::from_millis(500));
        let first = spawn_invoke(&pool);
        until(|| pool.status().in_flight == 1).await;
        let second = spawn_invoke(&pool);
        until(|| pool.status().queued == 1).await;
        second.abort();
        until(|| pool.status().queued == 0).await;
        assert!(first.await.expect("task").is_ok());
        assert_eq!(pool.status().in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_gone_during_the_clone_leaves_it_ready_for_the_next() {
        let (pool, fake) = fake::pool(on_demand());
        pool.refill_once().await.expect("refill");
        fake.set_clone_delay(Duration::from_millis(500));
        let request = spawn_invoke(&pool);
        until(|| fake.cloning.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
        request.abort();
        // The hand-off is finished, not cut in half, and the clone kept.
        tokio::time::sleep(Duration::from_secs(1)).await;
        until(|| pool.status().ready_clones == 1 && pool.status().in_flight == 0).await;
        assert_eq!(
            fake.clones_killed.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        let next = pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
            .expect("served");
        assert_eq!(next.start, super::super::StartKind::ReadyClone);
    }
}
