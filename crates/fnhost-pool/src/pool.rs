//! The pool of one function: warm zygotes, pre-forked ready clones, pooled
//! cgroups, and the admission limit. A background task keeps the configured
//! number of zygotes and ready clones; a request takes a ready clone, or
//! clones on demand, or (with no zygote) cold-starts one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fnhost_config::FunctionSpec;
use fnhost_sandbox::cgroup::{Cgroup, CgroupLimits, CgroupTree};
use fnhost_zygote::protocol::InvokeMeta;
use fnhost_zygote::spec::ZygoteSpec;
use tokio::sync::{Notify, Semaphore};

use crate::error::InvokeError;
use crate::sandbox::{RunOutcome, Sandbox, Slot};
use crate::zygote::{StartError, Zygote};

/// How long a zygote may take to start its runtime and import the function.
const ZYGOTE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between refill attempts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a request got its sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    /// A pre-forked clone was waiting.
    ReadyClone,
    /// A warm zygote cloned a sandbox for this request.
    OnDemandClone,
    /// No zygote was running: one was started for this request.
    ColdStart,
}

impl StartKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadyClone => "ready-clone",
            Self::OnDemandClone => "on-demand-clone",
            Self::ColdStart => "cold-start",
        }
    }
}

/// Where the time of one invocation went, microseconds.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub queue_us: u64,
    /// Starting a zygote (cold starts only).
    pub zygote_us: u64,
    /// `clone3` in the zygote (for on-demand and cold starts: on this
    /// request's path; for ready clones: paid ahead of time).
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

/// Counters shared by every pool of a host.
#[derive(Debug, Default)]
pub struct Ids {
    sandbox: AtomicU64,
    zygote: AtomicU64,
}

/// A snapshot of a pool, for status pages and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub zygotes: usize,
    pub ready_clones: usize,
    pub free_cgroups: usize,
    pub in_flight: usize,
}

pub struct FunctionPool {
    pub spec: FunctionSpec,
    name: Arc<str>,
    zygote_spec: ZygoteSpec,
    tree: Arc<CgroupTree>,
    zygote_cgroup: Cgroup,
    limits: CgroupLimits,
    ids: Arc<Ids>,
    max_response: usize,
    zygotes: Mutex<Vec<Arc<Zygote>>>,
    ready: Mutex<VecDeque<Sandbox>>,
    free_slots: Arc<Mutex<Vec<Slot>>>,
    next_slot: AtomicU64,
    concurrency: Semaphore,
    wake: Arc<Notify>,
    cold_start: tokio::sync::Mutex<()>,
    closed: AtomicBool,
}

/// Runs futures concurrently on the current task; results come back in
/// input order.
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
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
    results.into_iter().map(|r| r.expect("every future completed")).collect()
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

impl FunctionPool {
    pub fn new(
        spec: FunctionSpec,
        zygote_spec: ZygoteSpec,
        tree: Arc<CgroupTree>,
        zygote_cgroup: Cgroup,
        ids: Arc<Ids>,
        max_response: usize,
    ) -> Arc<Self> {
        let limits = CgroupLimits::from_cpus(spec.limits.memory_bytes(), spec.limits.cpu, spec.limits.pids);
        Arc::new(FunctionPool {
            name: Arc::from(spec.name.as_str()),
            concurrency: Semaphore::new(spec.pool.max_concurrency as usize),
            spec,
            zygote_spec,
            tree,
            zygote_cgroup,
            limits,
            ids,
            max_response,
            zygotes: Mutex::new(Vec::new()),
            ready: Mutex::new(VecDeque::new()),
            free_slots: Arc::new(Mutex::new(Vec::new())),
            next_slot: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
            cold_start: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn status(&self) -> PoolStatus {
        PoolStatus {
            zygotes: self.live_zygotes().len(),
            ready_clones: self.ready.lock().expect("ready lock").len(),
            free_cgroups: self.free_slots.lock().expect("slots lock").len(),
            in_flight: self.spec.pool.max_concurrency as usize - self.concurrency.available_permits(),
        }
    }

    fn live_zygotes(&self) -> Vec<Arc<Zygote>> {
        let mut zygotes = self.zygotes.lock().expect("zygotes lock");
        zygotes.retain(|z| z.is_alive());
        zygotes.clone()
    }

    fn publish_gauges(&self) {
        let status = self.status();
        let f = self.name.to_string();
        metrics::gauge!("fnhost_pool_zygotes", "function" => f.clone()).set(status.zygotes as f64);
        metrics::gauge!("fnhost_pool_ready_clones", "function" => f.clone()).set(status.ready_clones as f64);
        metrics::gauge!("fnhost_pool_in_flight", "function" => f).set(status.in_flight as f64);
    }

    fn take_slot(&self) -> Result<Slot, String> {
        if let Some(slot) = self.free_slots.lock().expect("slots lock").pop() {
            return Ok(slot);
        }
        let n = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let rel = format!("{}/s{n}", self.name);
        let cgroup = self.tree.create(&rel, &self.limits).map_err(|e| e.to_string())?;
        let oom_seen = cgroup.oom_kills().unwrap_or(0);
        Ok(Slot { cgroup, oom_seen })
    }

    fn return_slot(&self, slot: Slot) {
        self.free_slots.lock().expect("slots lock").push(slot);
    }

    /// Starts a zygote; `keep` adds it to the pool's warm set.
    async fn start_zygote(&self, keep: bool) -> Result<Arc<Zygote>, InvokeError> {
        let id = self.ids.zygote.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let (dir, v1) = self
            .zygote_cgroup
            .clone_into_fd()
            .and_then(|dir| Ok((dir, self.zygote_cgroup.v1_procs_fds()?)))
            .map_err(|e| InvokeError::SandboxUnavailable { function: self.name.to_string(), detail: e.to_string() })?;
        let result = Zygote::start(
            id,
            self.name.clone(),
            &self.zygote_spec,
            dir.as_ref(),
            &v1,
            ZYGOTE_START_TIMEOUT,
            self.wake.clone(),
        )
        .await;
        let f = self.name.to_string();
        metrics::histogram!("fnhost_zygote_start_seconds", "function" => f.clone()).record(started.elapsed().as_secs_f64());
        metrics::counter!("fnhost_zygote_starts_total", "function" => f).increment(1);
        let zygote = result.map_err(|e| match e {
            StartError::Init { stage, error_type, message, trace } => {
                InvokeError::InitFailed { function: self.name.to_string(), stage, error_type, message, trace }
            }
            StartError::Failed(detail) => InvokeError::InitFailed {
                function: self.name.to_string(),
                stage: "sandbox".into(),
                error_type: "ZygoteStartFailed".into(),
                message: detail,
                trace: Vec::new(),
            },
        })?;
        tracing::info!(function = %self.name, zygote = id, pid = zygote.pid,
            start_ms = zygote.started_in.as_secs_f64() * 1e3, import_ms = zygote.import_us as f64 / 1e3, "zygote ready");
        if keep {
            self.zygotes.lock().expect("zygotes lock").push(zygote.clone());
        }
        Ok(zygote)
    }

    async fn create_sandbox(&self, zygote: Arc<Zygote>) -> Result<Sandbox, InvokeError> {
        let unavailable = |detail: String| InvokeError::SandboxUnavailable { function: self.name.to_string(), detail };
        let slot = self.take_slot().map_err(unavailable)?;
        let id = self.ids.sandbox.fetch_add(1, Ordering::Relaxed);
        match Sandbox::create(id, zygote, slot, self.spec.limits.writable_layer_bytes()).await {
            Ok(sandbox) => {
                let f = self.name.to_string();
                metrics::histogram!("fnhost_phase_seconds", "function" => f.clone(), "phase" => "clone").record(secs(sandbox.fork_us));
                metrics::histogram!("fnhost_phase_seconds", "function" => f.clone(), "phase" => "cgroup_attach").record(secs(sandbox.setup.cgroup_us));
                metrics::histogram!("fnhost_phase_seconds", "function" => f.clone(), "phase" => "mount").record(secs(sandbox.setup.mount_us));
                metrics::histogram!("fnhost_phase_seconds", "function" => f, "phase" => "drop_privileges").record(secs(sandbox.setup.privileges_us));
                Ok(sandbox)
            }
            Err((slot, detail)) => {
                // The clone may still be exiting; only reuse an empty cgroup.
                if slot.cgroup.is_empty().unwrap_or(false) {
                    self.return_slot(slot);
                }
                Err(unavailable(detail))
            }
        }
    }

    /// Gets a sandbox for one request.
    async fn checkout(&self) -> Result<(Sandbox, StartKind, u64), InvokeError> {
        loop {
            let Some(sandbox) = self.ready.lock().expect("ready lock").pop_front() else { break };
            if sandbox.is_alive() {
                return Ok((sandbox, StartKind::ReadyClone, 0));
            }
            self.spawn_teardown(sandbox);
        }
        for attempt in 0..2 {
            let zygote = self.live_zygotes().into_iter().min_by_key(Arc::strong_count);
            let (zygote, kind, zygote_us) = match zygote {
                Some(z) => (z, StartKind::OnDemandClone, 0),
                None => {
                    let _guard = self.cold_start.lock().await;
                    match self.live_zygotes().into_iter().next() {
                        Some(z) => (z, StartKind::OnDemandClone, 0),
                        None => {
                            let started = Instant::now();
                            let keep = self.spec.pool.zygotes > 0;
                            let z = self.start_zygote(keep).await?;
                            (z, StartKind::ColdStart, started.elapsed().as_micros() as u64)
                        }
                    }
                }
            };
            match self.create_sandbox(zygote.clone()).await {
                Ok(sandbox) => return Ok((sandbox, kind, zygote_us)),
                // A zygote that died under us: try once more with another.
                Err(e) if attempt == 0 && !zygote.is_alive() => {
                    tracing::warn!(function = %self.name, error = %e, "zygote died during clone; retrying");
                }
                Err(e) => return Err(e),
            }
        }
        Err(InvokeError::SandboxUnavailable { function: self.name.to_string(), detail: "no live zygote".into() })
    }

    fn spawn_teardown(&self, sandbox: Sandbox) {
        let free_slots = self.free_slots.clone();
        let wake = self.wake.clone();
        let name = self.name.to_string();
        tokio::spawn(async move {
            let started = Instant::now();
            let slot = sandbox.teardown().await;
            metrics::histogram!("fnhost_phase_seconds", "function" => name, "phase" => "teardown")
                .record(started.elapsed().as_secs_f64());
            if let Some(slot) = slot {
                free_slots.lock().expect("slots lock").push(slot);
                wake.notify_one();
            }
        });
    }

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
                Err(e) => {
                    tracing::warn!(function = %self.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "pool refill failed");
                    true
                }
            };
            self.publish_gauges();
            let wait = if failed { backoff } else { Duration::from_secs(1) };
            if failed {
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            tokio::select! {
                _ = self.wake.notified(), if !failed => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass: start missing zygotes, drop dead ready clones, pre-fork
    /// missing ready clones.
    pub async fn refill_once(&self) -> Result<(), InvokeError> {
        while self.live_zygotes().len() < self.spec.pool.zygotes as usize {
            if self.closed.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.start_zygote(true).await?;
        }
        let dead: Vec<Sandbox> = {
            let mut ready = self.ready.lock().expect("ready lock");
            let (alive, dead): (VecDeque<Sandbox>, VecDeque<Sandbox>) =
                ready.drain(..).partition(|s| s.is_alive());
            *ready = alive;
            dead.into_iter().collect()
        };
        for sandbox in dead {
            self.spawn_teardown(sandbox);
        }
        // Clone the missing ready clones concurrently: a zygote forks one at
        // a time, but each clone's setup (mounts, privilege drop) overlaps
        // with the next fork.
        let missing = (self.spec.pool.ready_clones as usize)
            .saturating_sub(self.ready.lock().expect("ready lock").len());
        if self.closed.load(Ordering::SeqCst) || missing == 0 {
            return Ok(());
        }
        let zygotes = self.live_zygotes();
        if zygotes.is_empty() {
            return Ok(());
        }
        let creations = (0..missing).map(|i| self.create_sandbox(zygotes[i % zygotes.len()].clone()));
        let mut first_error = None;
        for result in join_all(creations).await {
            match result {
                Ok(sandbox) => self.ready.lock().expect("ready lock").push_back(sandbox),
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops refilling, kills every zygote (and so every clone), and waits
    /// for in-flight invocations up to `grace`.
    pub async fn close(&self, grace: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        let max = self.spec.pool.max_concurrency;
        let _ = tokio::time::timeout(grace, self.concurrency.acquire_many(max)).await;
        self.concurrency.close();
        let ready: Vec<Sandbox> = self.ready.lock().expect("ready lock").drain(..).collect();
        for sandbox in ready {
            sandbox.kill();
            let _ = sandbox.teardown().await;
        }
        let zygotes: Vec<Arc<Zygote>> = self.zygotes.lock().expect("zygotes lock").drain(..).collect();
        for zygote in zygotes {
            zygote.kill();
        }
        // Wait (bounded) for the pool's cgroups to empty.
        for _ in 0..500 {
            let busy = !self.zygote_cgroup.is_empty().unwrap_or(true)
                || self.free_slots.lock().expect("slots lock").iter().any(|s| !s.cgroup.is_empty().unwrap_or(true));
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.publish_gauges();
    }

    /// Runs one invocation.
    pub async fn invoke(&self, payload: &[u8], request_id: String) -> Result<Invocation, InvokeError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(InvokeError::ShuttingDown);
        }
        let started = Instant::now();
        let queue_timeout = Duration::from_millis(self.spec.pool.queue_timeout_ms);
        let _permit = match tokio::time::timeout(queue_timeout, self.concurrency.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(InvokeError::ShuttingDown),
            Err(_) => {
                return Err(InvokeError::Overloaded {
                    function: self.name.to_string(),
                    max_concurrency: self.spec.pool.max_concurrency,
                    queue_timeout_ms: self.spec.pool.queue_timeout_ms,
                })
            }
        };
        let queue_us = started.elapsed().as_micros() as u64;
        let (mut sandbox, kind, zygote_us) = self.checkout().await?;
        self.wake.notify_one();
        let timeout_ms = self.spec.limits.timeout_ms;
        let meta = InvokeMeta {
            request_id,
            function: self.name.to_string(),
            memory_mb: self.spec.limits.memory_mb,
            remaining_ms: timeout_ms,
        };
        let sent = Instant::now();
        let outcome = sandbox.run(&meta, payload, sent + Duration::from_millis(timeout_ms), self.max_response).await;
        let exchange_total = sent.elapsed().as_micros() as u64;
        let (clone_us, setup_us) = match kind {
            StartKind::ReadyClone => (0, 0),
            _ => (sandbox.fork_us, sandbox.create_us.saturating_sub(sandbox.fork_us)),
        };
        let oom_before = sandbox.slot.oom_seen;
        let oom_now = match &outcome {
            RunOutcome::NoResponse { .. } => sandbox.slot.cgroup.oom_kills().unwrap_or(oom_before),
            _ => oom_before,
        };
        let sandbox_id = sandbox.id;
        self.spawn_teardown(sandbox);
        let function = self.name.to_string();
        let (body, handler_us) = match outcome {
            RunOutcome::Result { body, handler_us } => (body, handler_us),
            RunOutcome::FunctionError { body, .. } => return Err(InvokeError::FunctionError { function, body }),
            RunOutcome::Timeout => return Err(InvokeError::Timeout { function, timeout_ms }),
            RunOutcome::TooLarge { size } => {
                return Err(InvokeError::ResponseTooLarge { function, size, limit: self.max_response })
            }
            RunOutcome::NoResponse { .. } if oom_now > oom_before => {
                return Err(InvokeError::MemoryLimit { function, memory_mb: self.spec.limits.memory_mb })
            }
            RunOutcome::NoResponse { detail } => {
                return Err(InvokeError::SandboxCrashed { function, detail })
            }
        };
        let timings = Timings {
            queue_us,
            zygote_us,
            clone_us,
            setup_us,
            handler_us,
            exchange_us: exchange_total.saturating_sub(handler_us),
            total_us: started.elapsed().as_micros() as u64,
        };
        let f = &self.name;
        for (phase, us) in [
            ("queue", timings.queue_us),
            ("handler", timings.handler_us),
            ("exchange", timings.exchange_us),
            ("invoke_total", timings.total_us),
        ] {
            metrics::histogram!("fnhost_phase_seconds", "function" => f.to_string(), "phase" => phase).record(secs(us));
        }
        Ok(Invocation { body, start: kind, sandbox_id, timings })
    }
}
