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
    pub(super) async fn execute(
        &self,
        payload: &[u8],
        request_id: String,
        started: Instant,
    ) -> Result<Invocation, InvokeError> {
        let queue_deadline = started + Duration::from_millis(self.settings().queue_timeout_ms);
        let checkout_started = Instant::now();
        let (mut sandbox, kind, zygote_us) = self.checkout(queue_deadline).await?;
        let times = sandbox.times();
        // Waiting for another request's cold start is queueing too.
        let waited_us = (checkout_started.elapsed().as_micros() as u64)
            .saturating_sub(zygote_us + times.create_us);
        let queue_us = (checkout_started - started).as_micros() as u64
            + if kind == StartKind::ReadyClone {
                0
            } else {
                waited_us
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
        let outcome = sandbox
            .run(
                &meta,
                payload,
                sent + Duration::from_millis(timeout_ms),
                self.max_response,
            )
            .await;
        let exchange_total = sent.elapsed().as_micros() as u64;
        let wake_us = sandbox.wake().map_or(0, |w| w.wake_us);
        let (clone_us, setup_us) = match kind {
            StartKind::ReadyClone => (0, 0),
            _ => (
                times.fork_us,
                times
                    .create_us
                    .saturating_sub(times.fork_us)
                    .saturating_sub(wake_us),
            ),
        };
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
        Ok(Invocation {
            body,
            start: kind,
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
            RunOutcome::Result { body, handler_us } => Ok((body, handler_us)),
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
