//! Running one admitted invocation in a sandbox and turning how it ended
//! into an [`Invocation`] or an [`InvokeError`], with its timings and
//! phase metrics.

use std::time::Duration;

use fnhost_zygote::protocol::InvokeMeta;
use tokio::time::Instant;

use super::backend::{Backend, CloneHandle, RunOutcome, SlotHandle};
use super::{secs, FunctionPool, StartKind};
use crate::error::InvokeError;

/// Where the time of one invocation went, microseconds.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub queue_us: u64,
    /// Starting a zygote (cold starts only).
    pub zygote_us: u64,
    /// Waking a hibernated zygote (wake-ups only).
    pub wake_us: u64,
    /// `clone3` in the zygote (on-demand and cold starts; a ready clone paid
    /// it ahead of time).
    pub clone_us: u64,
    /// The clone's own setup: cgroup attach, mounts, privilege drop.
    pub setup_us: u64,
    pub handler_us: u64,
    /// Sending the payload and receiving the result, minus the handler.
    pub exchange_us: u64,
    pub total_us: u64,
}

/// A successful invocation.
#[derive(Debug)]
pub struct Invocation {
    pub body: Vec<u8>,
    pub start: StartKind,
    pub sandbox_id: u64,
    pub timings: Timings,
}

impl<B: Backend> FunctionPool<B> {
    /// Checks a sandbox out, runs the invocation in it, hands it to teardown.
    /// `woke_pool`: the request found the function hibernated (its start
    /// is reported as `wake`). `caller_gone` resolves when the caller
    /// stopped waiting: the sandbox is then killed (or, if it had not
    /// started, given back unused).
    pub(super) async fn execute(
        &self,
        payload: &[u8],
        request_id: String,
        started: Instant,
        woke_pool: bool,
        mut caller_gone: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<Invocation, InvokeError> {
        let queue_deadline = started + Duration::from_millis(self.settings().queue_timeout_ms);
        let checkout_started = Instant::now();
        // Never cut short: a clone hand-off stopped halfway would leave the
        // zygote's control channel out of step.
        let (mut sandbox, kind, zygote_us) = self.checkout(queue_deadline).await?;
        let cancelled = || InvokeError::Cancelled {
            function: self.name.to_string(),
        };
        let still_waiting = matches!(
            caller_gone.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        );
        if !still_waiting {
            // Unused: it can serve the next request.
            self.ready.lock().expect("ready lock").push_front(sandbox);
            self.wake.notify_one();
            return Err(cancelled());
        }
        let times = sandbox.times();
        // Waiting for another request's cold start is queueing too.
        let waited_us = (checkout_started.elapsed().as_micros() as u64)
            .saturating_sub(zygote_us + times.create_us);
        let queue_us = (checkout_started - started).as_micros() as u64
            + match kind {
                StartKind::ReadyClone => 0,
                // All of its checkout was waiting for the refill's clone.
                StartKind::RefillClone => checkout_started.elapsed().as_micros() as u64,
                _ => waited_us,
            };
        self.wake.notify_one();
        let timeout_ms = self.spec.limits.timeout_ms;
        let meta = InvokeMeta {
            request_id,
            function: self.name.to_string(),
            memory_mb: self.spec.limits.memory_mb,
            remaining_ms: timeout_ms,
        };
        let sent = Instant::now();
        let run = sandbox.run(
            &meta,
            payload,
            sent + Duration::from_millis(timeout_ms),
            self.max_response,
        );
        let outcome = tokio::select! {
            outcome = run => Some(outcome),
            _ = &mut caller_gone => None,
        };
        let Some(outcome) = outcome else {
            sandbox.kill();
            self.spawn_teardown(sandbox);
            return Err(cancelled());
        };
        let exchange_total = sent.elapsed().as_micros() as u64;
        let wake_us = sandbox.wake().map_or(0, |w| w.wake_us);
        let (clone_us, setup_us) = match kind {
            StartKind::ReadyClone | StartKind::RefillClone => (0, 0),
            _ => (
                times.fork_us,
                times
                    .create_us
                    .saturating_sub(times.fork_us)
                    .saturating_sub(wake_us),
            ),
        };
        if let Some(faults) = outcome.page_faults() {
            self.metrics.faults_ready.record(faults.ready as f64);
            self.metrics
                .faults_invocation
                .record(faults.invocation as f64);
        }
        let oom_before = sandbox.slot().oom_seen();
        let oom_now = match &outcome {
            RunOutcome::NoResponse { .. } => sandbox.slot().oom_kills().unwrap_or(oom_before),
            _ => oom_before,
        };
        let sandbox_id = sandbox.id();
        self.spawn_teardown(sandbox);
        let (body, handler_us) = self.map_outcome(outcome, oom_now > oom_before)?;
        let timings = Timings {
            queue_us,
            zygote_us,
            wake_us,
            clone_us,
            setup_us,
            handler_us,
            exchange_us: exchange_total.saturating_sub(handler_us),
            total_us: started.elapsed().as_micros() as u64,
        };
        let phase = &self.metrics.phase;
        phase.queue.record(secs(timings.queue_us));
        phase.handler.record(secs(timings.handler_us));
        phase.exchange.record(secs(timings.exchange_us));
        phase.invoke_total.record(secs(timings.total_us));
        let start = match kind {
            StartKind::ReadyClone | StartKind::RefillClone | StartKind::OnDemandClone
                if woke_pool =>
            {
                StartKind::Wake
            }
            kind => kind,
        };
        Ok(Invocation {
            body,
            start,
            sandbox_id,
            timings,
        })
    }

    /// The function's result and handler time, or the error a user sees;
    /// `oom_killed`: the slot's cgroup counted an OOM kill during the run.
    fn map_outcome(
        &self,
        outcome: RunOutcome,
        oom_killed: bool,
    ) -> Result<(Vec<u8>, u64), InvokeError> {
        let function = self.name.to_string();
        match outcome {
            RunOutcome::Result {
                body, handler_us, ..
            } => Ok((body, handler_us)),
            RunOutcome::FunctionError { body, .. } => {
                Err(InvokeError::FunctionError { function, body })
            }
            RunOutcome::Timeout => Err(InvokeError::Timeout {
                function,
                timeout_ms: self.spec.limits.timeout_ms,
            }),
            RunOutcome::TooLarge { size } => Err(InvokeError::ResponseTooLarge {
                function,
                size,
                limit: self.max_response,
            }),
            RunOutcome::NoResponse { .. } if oom_killed => Err(InvokeError::MemoryLimit {
                function,
                memory_mb: self.spec.limits.memory_mb,
            }),
            RunOutcome::NoResponse { detail } => {
                Err(InvokeError::SandboxCrashed { function, detail })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fnhost_config::PoolSettings;

    use super::super::fake::{self, until};
    use super::RunOutcome;
    use crate::error::InvokeError;

    fn one_slot() -> PoolSettings {
        PoolSettings {
            zygotes: 1,
            max_concurrency: 1,
            prewarm: true,
            ..fake::settings()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_result_comes_back_with_its_timings() {
        let (pool, fake) = fake::pool(one_slot());
        pool.refill_once().await.expect("refill");
        fake.set_handler_delay(Duration::from_millis(50));
        let done = pool
            .invoke(bytes::Bytes::from_static(b"echo me"), "r".into())
            .await
            .expect("invoke");
        assert_eq!(done.body, b"echo me");
        assert_eq!(done.timings.handler_us, 7);
        assert_eq!(done.timings.queue_us, 0);
        assert!(done.timings.total_us >= 50_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_past_its_timeout_is_a_timeout() {
        let (pool, fake) = fake::pool(one_slot());
        fake.set_handler_delay(Duration::from_secs(10));
        match pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
        {
            Err(InvokeError::Timeout { timeout_ms, .. }) => {
                assert_eq!(timeout_ms, pool.spec.limits.timeout_ms)
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_over_the_limit_is_too_large() {
        let (pool, _fake) = fake::pool(one_slot());
        match pool
            .invoke(bytes::Bytes::from_static(&[0u8; 2048]), "r".into())
            .await
        {
            Err(InvokeError::ResponseTooLarge { size, limit, .. }) => {
                assert_eq!((size, limit), (2048, 1024))
            }
            other => panic!("expected ResponseTooLarge, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_function_error_keeps_its_body() {
        let (pool, fake) = fake::pool(one_slot());
        fake.push_outcome(
            RunOutcome::FunctionError {
                body: b"boom".to_vec(),
                handler_us: 1,
                page_faults: None,
            },
            false,
        );
        match pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
        {
            Err(InvokeError::FunctionError { body, .. }) => assert_eq!(body, b"boom"),
            other => panic!("expected FunctionError, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_response_is_an_oom_only_when_the_slot_counted_a_new_kill() {
        let (pool, fake) = fake::pool(one_slot());
        let died = || RunOutcome::NoResponse {
            detail: "channel closed".into(),
        };
        fake.push_outcome(died(), true);
        match pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
        {
            Err(InvokeError::MemoryLimit { memory_mb, .. }) => {
                assert_eq!(memory_mb, pool.spec.limits.memory_mb)
            }
            other => panic!("expected MemoryLimit, got {other:?}"),
        }
        // The same slot again: its earlier kill is not counted twice.
        until(|| pool.status().free_cgroups == 1).await;
        fake.push_outcome(died(), false);
        match pool
            .invoke(bytes::Bytes::from_static(b"x"), "r".into())
            .await
        {
            Err(InvokeError::SandboxCrashed { detail, .. }) => assert_eq!(detail, "channel closed"),
            other => panic!("expected SandboxCrashed, got {other:?}"),
        }
    }
}
