//! The production [`Backend`]: real zygote processes, clones and cgroups.
//! The only file of the pool naming the concrete process and cgroup types
//! (`fnhost_zygote::daemon`'s handles, `Cgroup`, `CgroupTree`, ...), so moving
//! them only changes paths here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fnhost_config::FunctionSpec;
use fnhost_sandbox::cgroup::{names, Cgroup, CgroupError, CgroupLimits, CgroupTree};
use fnhost_zygote::protocol::InvokeMeta;
use fnhost_zygote::spec::ZygoteSpec;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::backend::{
    Backend, BackendError, CloneFailed, CloneHandle, CloneTimes, RunOutcome, Slept, SlotHandle,
    Wake, ZygoteHandle,
};
use super::{FunctionPool, Ids, PoolParts};
use crate::budget::{MemoryBudget, MemoryMeter, MeterError};
use crate::error::InvokeError;
use crate::telemetry::Labels;
use fnhost_zygote::daemon::{self, CloneError, IdMap, Placement, Slot, SnapshotStore};

/// The daemon's handles on a real zygote and on one real clone.
type RealZygote = daemon::ZygoteHandle;
type RealClone = daemon::CloneHandle;

/// How long a zygote may take to start its runtime and import the function.
const ZYGOTE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// What every pool of a host shares.
#[derive(Clone)]
pub struct PoolShared {
    pub tree: Arc<CgroupTree>,
    pub ids: Arc<Ids>,
    pub budget: Arc<MemoryBudget>,
    pub max_response: usize,
    /// The user namespace mapping, when sandboxes run in one.
    pub userns: Option<IdMap>,
    pub snapshots: Arc<SnapshotStore>,
    /// Whether pool metrics carry a `function` label.
    pub labels: Labels,
}

/// The processes and cgroups of one function.
pub struct RealBackend {
    name: Arc<str>,
    zygote_spec: ZygoteSpec,
    tree: Arc<CgroupTree>,
    /// `<function>.zygote`, created when the first zygote starts: a
    /// function never invoked costs no cgroup (each costs kernel memory
    /// that grows with the host, see [`names`]).
    zygote_cgroup: Mutex<Option<Cgroup>>,
    zygote_limits: CgroupLimits,
    /// Limits of each slot cgroup.
    limits: CgroupLimits,
    /// Every slot cgroup this backend created and may not have removed yet:
    /// a function has no cgroup above its members to read its total from.
    /// One found gone is dropped when the total is next read.
    slots: Mutex<Vec<Cgroup>>,
    writable_bytes: u64,
    userns: Option<IdMap>,
    snapshots: Arc<SnapshotStore>,
}

impl FunctionPool<RealBackend> {
    /// A pool whose zygotes start from `zygote_spec` in a cgroup of their
    /// own with `zygote_limits`.
    pub fn new(
        spec: FunctionSpec,
        zygote_spec: ZygoteSpec,
        zygote_limits: CgroupLimits,
        shared: PoolShared,
    ) -> Arc<Self> {
        let PoolShared {
            tree,
            ids,
            budget,
            max_response,
            userns,
            snapshots,
            labels,
        } = shared;
        let backend = RealBackend {
            name: Arc::from(spec.name.as_str()),
            zygote_spec,
            tree,
            zygote_cgroup: Mutex::new(None),
            zygote_limits,
            slots: Mutex::new(Vec::new()),
            limits: CgroupLimits::from_cpus(
                spec.limits.memory_bytes(),
                spec.limits.cpu,
                spec.limits.pids,
            ),
            writable_bytes: spec.limits.writable_layer_bytes(),
            userns,
            snapshots,
        };
        FunctionPool::with_backend(PoolParts {
            spec,
            backend,
            ids,
            budget,
            max_response,
            labels,
        })
    }

    /// What this pool's zygotes are started from.
    pub fn zygote_spec(&self) -> &ZygoteSpec {
        &self.backend.zygote_spec
    }
}

impl RealBackend {
    /// The zygote cgroup, created on first use.
    fn zygote_cgroup(&self) -> Result<Cgroup, CgroupError> {
        let mut slot = self.zygote_cgroup.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cgroup) = &*slot {
            return Ok(cgroup.clone());
        }
        let cgroup = self
            .tree
            .create(&names::zygote(&self.name), &self.zygote_limits)?;
        *slot = Some(cgroup.clone());
        Ok(cgroup)
    }

    /// The zygote cgroup if one was created.
    fn existing_zygote_cgroup(&self) -> Option<Cgroup> {
        self.zygote_cgroup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Backend for RealBackend {
    type Zygote = RealZygote;
    type Clone = RealClone;
    type Slot = Slot;

    async fn start_zygote(
        &self,
        id: u64,
        exited: Arc<Notify>,
    ) -> Result<Arc<RealZygote>, InvokeError> {
        let (dir, v1) = self
            .zygote_cgroup()
            .and_then(|cgroup| Ok((cgroup.clone_into_fd()?, cgroup.v1_procs_fds()?)))
            .map_err(|e| InvokeError::SandboxUnavailable {
                function: self.name.to_string(),
                detail: e.to_string(),
            })?;
        let placement = Placement {
            cgroup_dir: dir.as_ref(),
            v1_procs: &v1,
            userns: self.userns,
        };
        let result = RealZygote::start(
            id,
            self.name.clone(),
            &self.zygote_spec,
            placement,
            ZYGOTE_START_TIMEOUT,
            exited,
        )
        .await;
        let zygote = result.map_err(|e| InvokeError::init_failed(&self.name, e))?;
        tracing::info!(function = %self.name, zygote = id, pid = zygote.pid,
            start_ms = zygote.started_in.as_secs_f64() * 1e3, import_ms = zygote.import_us as f64 / 1e3, "zygote ready");
        Ok(zygote)
    }

    async fn clone_sandbox(
        &self,
        id: u64,
        zygote: Arc<RealZygote>,
        slot: Slot,
    ) -> Result<RealClone, (Slot, CloneFailed)> {
        if zygote.is_asleep() {
            // The clone is moved into its cgroups after the wake-up; the
            // first cgroup migration after an idle period
            // waits for an RCU grace period, paid here during the restore.
            if let Some(cgroup) = self.existing_zygote_cgroup() {
                let pid = zygote.pid;
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = cgroup.prime_migration_lock(pid) {
                        tracing::debug!(error = %e, "cannot prime the cgroup migration lock");
                    }
                });
            }
        }
        RealClone::create(id, zygote, slot, self.writable_bytes)
            .await
            .map_err(|(slot, error)| {
                let wake_failed = matches!(error, CloneError::WakeFailed(_));
                let source = Box::new(error);
                (
                    slot,
                    CloneFailed {
                        wake_failed,
                        source,
                    },
                )
            })
    }

    fn create_slot(&self, n: u64) -> Result<Slot, BackendError> {
        let cgroup = self
            .tree
            .create(&names::slot(&self.name, n), &self.limits)?;
        let oom_seen = cgroup.oom_kills().unwrap_or(0);
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cgroup.clone());
        Ok(Slot { cgroup, oom_seen })
    }

    /// The zygote cgroup's charge plus every live slot's.
    fn memory_usage(&self) -> Result<u64, BackendError> {
        let mut total = self.zygote_memory()?;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut error = None;
        slots.retain(|slot| match slot.memory_current() {
            Ok(bytes) => {
                total += bytes;
                true
            }
            Err(e) if e.is_not_found() => false,
            Err(e) => {
                error.get_or_insert(e);
                true
            }
        });
        match error {
            Some(e) => Err(e.into()),
            None => Ok(total),
        }
    }

    fn zygote_memory(&self) -> Result<u64, BackendError> {
        match self.existing_zygote_cgroup() {
            Some(cgroup) => Ok(cgroup.memory_current()?),
            None => Ok(0),
        }
    }

    fn zygotes_gone(&self) -> Result<bool, BackendError> {
        match self.existing_zygote_cgroup() {
            Some(cgroup) => Ok(cgroup.is_empty()?),
            None => Ok(true),
        }
    }

    fn remove_zygote_cgroup(&self) -> Result<(), BackendError> {
        let taken = self
            .zygote_cgroup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(cgroup) = taken {
            cgroup.remove()?;
        }
        Ok(())
    }

    /// The kernel reclaims synchronously (for a while when little can go):
    /// off the runtime's threads.
    async fn reclaim_zygotes(&self) -> Result<(), BackendError> {
        let Some(cgroup) = self.existing_zygote_cgroup() else {
            return Ok(());
        };
        match tokio::task::spawn_blocking(move || cgroup.reclaim()).await {
            Ok(result) => result.map_err(Into::into),
            Err(e) => Err(e.into()),
        }
    }

    async fn settle(&self, zygote: &RealZygote) -> Result<Option<Wake>, BackendError> {
        let woken = zygote.settle().await?;
        Ok(woken.map(|w| Wake {
            wake_us: w.wake_us,
            restore: w.restore,
        }))
    }

    async fn hibernate_snapshot(
        &self,
        zygote: &RealZygote,
        prefetch: bool,
    ) -> Result<Option<Slept>, BackendError> {
        let path = self.snapshots.path(&self.name, zygote.id);
        let base = match self.zygote_spec.share_group {
            // The error names the base file.
            Some(group) => Some(self.snapshots.shared_base(group)?),
            None => None,
        };
        let slept = zygote.hibernate_snapshot(path, prefetch, base).await?;
        Ok(slept.map(|h| Slept {
            snapshot_bytes: h.snapshot_bytes,
            dropped_bytes: h.dropped_bytes,
        }))
    }
}

impl ZygoteHandle for RealZygote {
    fn id(&self) -> u64 {
        self.id
    }

    fn is_alive(&self) -> bool {
        RealZygote::is_alive(self)
    }

    fn is_asleep(&self) -> bool {
        RealZygote::is_asleep(self)
    }

    fn descriptors(&self) -> usize {
        RealZygote::descriptors(self)
    }

    fn snapshot_bytes(&self) -> u64 {
        RealZygote::snapshot_bytes(self)
    }

    fn snapshot_cached_bytes(&self) -> u64 {
        RealZygote::snapshot_cached_bytes(self)
    }

    fn snapshot_shared_bytes(&self) -> u64 {
        RealZygote::snapshot_shared_bytes(self)
    }

    fn kill(&self) {
        RealZygote::kill(self)
    }

    async fn mark_reclaimed(&self) -> bool {
        RealZygote::mark_reclaimed(self).await
    }
}

impl CloneHandle for RealClone {
    type Zygote = RealZygote;
    type Slot = Slot;

    fn id(&self) -> u64 {
        self.id
    }

    fn zygote(&self) -> &Arc<RealZygote> {
        &self.zygote
    }

    fn slot(&self) -> &Slot {
        &self.slot
    }

    fn times(&self) -> CloneTimes {
        CloneTimes {
            fork_us: self.fork_us,
            create_us: self.create_us,
            setup: self.setup.clone(),
        }
    }

    fn wake(&self) -> Option<Wake> {
        self.woke.as_ref().map(|w| Wake {
            wake_us: w.wake_us,
            restore: w.restore.clone(),
        })
    }

    fn is_alive(&self) -> bool {
        RealClone::is_alive(self)
    }

    fn kill(&self) {
        RealClone::kill(self)
    }

    async fn run(
        &mut self,
        meta: &InvokeMeta,
        payload: &[u8],
        deadline: Instant,
        max_response: usize,
    ) -> RunOutcome {
        RealClone::run(self, meta, payload, deadline.into_std(), max_response).await
    }

    async fn teardown(self) -> Option<Slot> {
        RealClone::teardown(self).await
    }
}

impl SlotHandle for Slot {
    fn name(&self) -> &str {
        self.cgroup.name()
    }

    fn is_empty(&self) -> Result<bool, BackendError> {
        Ok(self.cgroup.is_empty()?)
    }

    fn remove(&self) -> Result<(), BackendError> {
        Ok(self.cgroup.remove()?)
    }

    fn oom_seen(&self) -> u64 {
        self.oom_seen
    }

    fn oom_kills(&self) -> Result<u64, BackendError> {
        Ok(self.cgroup.oom_kills()?)
    }
}

/// The budget measures fnhost's whole cgroup root.
impl MemoryMeter for CgroupTree {
    fn used(&self) -> Result<u64, MeterError> {
        Ok(self.memory_usage("")?)
    }

    fn set_hard_limit(&self, bytes: u64) -> Result<(), MeterError> {
        Ok(self.set_root_memory_limit(bytes)?)
    }
}
