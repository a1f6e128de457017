//! The seam between a pool's logic and real processes: what a pool does
//! with zygotes, clones and cgroup slots, as traits. `real.rs` implements
//! them with processes and cgroups; unit tests use a fake, without root.

use std::future::Future;
use std::sync::Arc;

use fnhost_snapshot::WakeStats;
use fnhost_zygote::protocol::{InvokeMeta, SetupTimes};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::InvokeError;

/// A backend failure, with its cause kept as the source; its message is
/// the cause's own.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// Everything a pool needs from the processes and cgroups of one function.
pub trait Backend: Send + Sync + 'static {
    type Zygote: ZygoteHandle;
    type Clone: CloneHandle<Zygote = Self::Zygote, Slot = Self::Slot>;
    type Slot: SlotHandle;

    /// Starts zygote `id` and waits until it has imported the function;
    /// `exited` is notified when it exits. Errors are already the
    /// invocation's: `InitFailed` (it started and failed, a start the pool
    /// records) or `SandboxUnavailable` (it could not be placed in its
    /// cgroup; nothing was started).
    fn start_zygote(
        &self,
        id: u64,
        exited: Arc<Notify>,
    ) -> impl Future<Output = Result<Arc<Self::Zygote>, InvokeError>> + Send;

    /// Clones sandbox `id` from `zygote` into `slot` and waits until it is
    /// set up; on failure the slot comes back with the error.
    fn clone_sandbox(
        &self,
        id: u64,
        zygote: Arc<Self::Zygote>,
        slot: Self::Slot,
    ) -> impl Future<Output = Result<Self::Clone, (Self::Slot, CloneFailed)>> + Send;

    /// Creates the `n`th slot cgroup of the function, with its limits.
    fn create_slot(&self, n: u64) -> Result<Self::Slot, BackendError>;

    /// Memory the function's cgroups use now, bytes.
    fn memory_usage(&self) -> Result<u64, BackendError>;

    /// Memory the zygote cgroup (all the function's zygotes) uses, bytes.
    fn zygote_memory(&self) -> Result<u64, BackendError>;

    /// Whether the zygote cgroup has no process left.
    fn zygotes_gone(&self) -> Result<bool, BackendError>;

    /// Removes the zygote cgroup and the function's cgroup directory (the
    /// pool is closed and its slots removed).
    fn remove_zygote_cgroup(&self) -> Result<(), BackendError>;

    /// Asks the kernel to reclaim the memory of the zygote cgroup.
    fn reclaim_zygotes(&self) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Maps a hibernated zygote's snapshot back ahead of any request, so
    /// that ready clones can be forked from it while its memory stays in
    /// the page cache; `Ok(None)`: it was not asleep. A failure stops it.
    fn settle(
        &self,
        zygote: &Self::Zygote,
    ) -> impl Future<Output = Result<Option<Wake>, BackendError>> + Send;

    /// Hibernates `zygote` into a snapshot; `Ok(None)`: it already sleeps.
    fn hibernate_snapshot(
        &self,
        zygote: &Self::Zygote,
        prefetch: bool,
    ) -> impl Future<Output = Result<Option<Slept>, BackendError>> + Send;
}

/// A running zygote.
pub trait ZygoteHandle: Send + Sync + 'static {
    fn id(&self) -> u64;
    fn is_alive(&self) -> bool;
    fn is_asleep(&self) -> bool;
    /// Descriptors the daemon holds for it now.
    fn descriptors(&self) -> usize {
        crate::budget::ZYGOTE_DESCRIPTORS
    }
    /// Data bytes of its snapshot while it hibernates.
    fn snapshot_bytes(&self) -> u64;
    /// Of those, bytes in the page cache now (reclaimable, charged to the
    /// daemon rather than to the function).
    fn snapshot_cached_bytes(&self) -> u64 {
        0
    }
    /// Of its snapshot's bytes, those mapped from its sharing group's base.
    fn snapshot_shared_bytes(&self) -> u64 {
        0
    }
    fn kill(&self);
    /// Marks it hibernated after its cgroup's memory was reclaimed;
    /// `false`: it already sleeps.
    fn mark_reclaimed(&self) -> impl Future<Output = bool> + Send;
}

/// A clone set up and waiting for its one invocation.
pub trait CloneHandle: Send + Sync + 'static {
    type Zygote: ZygoteHandle;
    type Slot: SlotHandle;

    fn id(&self) -> u64;
    /// The zygote it was cloned from.
    fn zygote(&self) -> &Arc<Self::Zygote>;
    fn slot(&self) -> &Self::Slot;
    fn times(&self) -> CloneTimes;
    /// Set when its zygote hibernated and was woken for it.
    fn wake(&self) -> Option<Wake>;
    fn is_alive(&self) -> bool;
    fn kill(&self);
    /// Sends the invocation and waits for the answer until `deadline`.
    fn run(
        &mut self,
        meta: &InvokeMeta,
        payload: &[u8],
        deadline: Instant,
        max_response: usize,
    ) -> impl Future<Output = RunOutcome> + Send;
    /// Waits until the clone is gone; its slot comes back unless its
    /// cgroup could not be emptied.
    fn teardown(self) -> impl Future<Output = Option<Self::Slot>> + Send;
}

/// A pooled cgroup for one clone at a time.
pub trait SlotHandle: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn is_empty(&self) -> Result<bool, BackendError>;
    fn remove(&self) -> Result<(), BackendError>;
    /// OOM kills counted when the slot was last released.
    fn oom_seen(&self) -> u64;
    /// OOM kills the cgroup has counted so far.
    fn oom_kills(&self) -> Result<u64, BackendError>;
}

/// How an invocation inside a clone ended: the daemon handle's own type,
/// pure data the pool maps to results and errors.
pub use fnhost_zygote::daemon::RunOutcome;

/// Where the time of creating one clone went, microseconds.
#[derive(Debug, Clone, Default)]
pub struct CloneTimes {
    /// `clone3` in the zygote.
    pub fork_us: u64,
    /// From the clone request to the clone's `Ready` (including a wake-up).
    pub create_us: u64,
    /// The clone's own setup steps.
    pub setup: SetupTimes,
}

/// A hibernated zygote woken for a clone.
#[derive(Debug, Clone, Default)]
pub struct Wake {
    pub wake_us: u64,
    /// Restore statistics, when the zygote slept in a snapshot.
    pub restore: Option<WakeStats>,
}

/// What hibernating one zygote freed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Slept {
    pub snapshot_bytes: u64,
    pub dropped_bytes: u64,
}

/// Why a clone could not be created.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct CloneFailed {
    /// The zygote hibernated and could not be woken (it was stopped).
    pub wake_failed: bool,
    #[source]
    pub source: BackendError,
}
