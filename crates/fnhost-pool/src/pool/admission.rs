//! Admission: at most `max_concurrency` invocations of a function run at
//! once; the others queue up to `queue_timeout_ms`, then are refused as
//! overloaded. Owns the in-flight and queued counts and resizing the limit.

use std::sync::atomic::Ordering;
use std::time::Duration;

use fnhost_config::PoolSettings;
use tokio::time::Instant;

use super::backend::Backend;
use super::{now_ms, FunctionPool, Invocation};
use crate::error::InvokeError;

impl<B: Backend> FunctionPool<B> {
    /// Runs one invocation.
    pub async fn invoke(
        &self,
        payload: &[u8],
        request_id: String,
    ) -> Result<Invocation, InvokeError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(InvokeError::ShuttingDown);
        }
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
        if self.dormant.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
        let started = Instant::now();
        let settings = self.settings();
        let queue_timeout = Duration::from_millis(settings.queue_timeout_ms);
        self.queued.fetch_add(1, Ordering::SeqCst);
        let acquired = tokio::time::timeout(queue_timeout, self.concurrency.acquire()).await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let _permit = match acquired {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(InvokeError::ShuttingDown),
            Err(_) => return Err(self.overloaded(&settings)),
        };
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let result = self.execute(payload, request_id, started).await;
        let still_running = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.last_used_ms.store(now_ms(), Ordering::Relaxed);
        // Pure scale-to-zero: the zygote this request started goes away
        // as soon as nothing runs, so the next request is a true cold start.
        if still_running == 0 && settings.zygotes == 0 && settings.idle_ttl_ms == 0 {
            self.release_surplus_zygotes();
        }
        match &result {
            Err(InvokeError::Timeout { .. }) => self.metrics.timeouts.increment(1),
            Err(InvokeError::MemoryLimit { .. }) => self.metrics.oom_kills.increment(1),
            _ => {}
        }
        result
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
            pool.invoke(b"x", "r".into()).await,
            Err(InvokeError::ShuttingDown)
        ));
    }
}
