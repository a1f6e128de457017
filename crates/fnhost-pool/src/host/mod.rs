//! The host: every function's pool, built from a validated config (see
//! `startup.rs`), replaceable at run time (`reload.rs`). This file is the
//! registry: the function -> pool map, lookup, status, invoke routing and
//! shutdown.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fnhost_config::ServerConfig;
use fnhost_layers::{HostLayer, Layer, LayerStore};
use fnhost_sandbox::cgroup::CgroupTree;
use fnhost_zygote::clone_request::SANDBOX_ID;
use fnhost_zygote::daemon::{IdMap, SnapshotStore};

use crate::budget::MemoryBudget;
use crate::error::InvokeError;
use crate::pool::{FunctionPool, Ids, Invocation, PoolStatus};
use crate::telemetry::Labels;

mod id_ranges;
mod reload;
mod startup;

pub use reload::ReloadReport;
pub use startup::{HostError, HostOptions};

/// Every function's pool, replaceable at run time (config reload, admin API).
pub struct Host {
    pools: RwLock<BTreeMap<String, Arc<FunctionPool>>>,
    tree: Arc<CgroupTree>,
    budget: Arc<MemoryBudget>,
    store: LayerStore,
    host_layer: HostLayer,
    runtime: Layer,
    /// The runtime layer holds `fnhost-reaper`.
    reaper: bool,
    staging: PathBuf,
    snapshots: Arc<SnapshotStore>,
    ids: Arc<Ids>,
    server: ServerConfig,
    layout: String,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Pools replaced or removed by a reload, still draining.
    retiring: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Whether pool metrics carry a `function` label; fixed for the
    /// daemon's lifetime so one scrape never mixes both.
    labels: Labels,
    /// Each function's own range of host ids.
    id_ranges: std::sync::Mutex<id_ranges::IdRanges>,
}

impl Host {
    /// The first host id of `function`'s own range.
    fn range_base(&self, function: &str) -> Result<u32, HostError> {
        let n = self
            .id_ranges
            .lock()
            .expect("id ranges lock")
            .range_of(function)
            .map_err(|source| HostError::IdRanges {
                function: function.to_owned(),
                source,
            })?;
        // Config validation keeps base + ranges * size below 2^32.
        Ok(self.server.userns_host_base + n * fnhost_config::USERNS_SIZE)
    }

    /// The user namespace of `function`'s zygotes: its own id range.
    pub(super) fn userns(&self, function: &str) -> Result<Option<IdMap>, HostError> {
        if !self.server.user_namespace {
            return Ok(None);
        }
        Ok(Some(IdMap {
            host_base: self.range_base(function)?,
            size: fnhost_config::USERNS_SIZE,
        }))
    }

    /// The unprivileged uid and gid `function`'s zygote runtime (and so its
    /// import-time code) runs as, in the zygote's namespace: the sandbox id
    /// inside a user namespace; without one, that id of the function's own
    /// range on the host. Never root, never an id that owns the layers.
    pub(super) fn runtime_ids(&self, function: &str) -> Result<(u32, u32), HostError> {
        let id = if self.server.user_namespace {
            SANDBOX_ID
        } else {
            self.range_base(function)? + SANDBOX_ID
        };
        Ok((id, id))
    }

    pub fn cgroup_layout(&self) -> &str {
        &self.layout
    }

    pub fn function_count(&self) -> usize {
        self.pools.read().expect("pools lock").len()
    }

    pub fn function_names(&self) -> Vec<String> {
        self.pools
            .read()
            .expect("pools lock")
            .keys()
            .cloned()
            .collect()
    }

    pub fn status(&self) -> BTreeMap<String, PoolStatus> {
        let pools = self.pools.read().expect("pools lock").clone();
        pools
            .iter()
            .map(|(name, pool)| (name.clone(), pool.status()))
            .collect()
    }

    pub fn pool(&self, name: &str) -> Option<Arc<FunctionPool>> {
        self.pools.read().expect("pools lock").get(name).cloned()
    }

    /// Memory budget in force and in use, bytes.
    pub fn memory(&self) -> (u64, u64) {
        (self.budget.limit(), self.budget.used())
    }

    /// Records the dispatcher's share of one invocation of `name`.
    pub fn record_dispatch(&self, name: &str, seconds: f64) {
        if let Some(pool) = self.pool(name) {
            pool.record_dispatch(seconds);
        }
    }

    /// Runs one invocation of `name`.
    pub async fn invoke(
        &self,
        name: &str,
        payload: bytes::Bytes,
        request_id: String,
    ) -> Result<Invocation, InvokeError> {
        let Some(pool) = self.pool(name) else {
            return Err(InvokeError::NotFound {
                function: name.to_string(),
            });
        };
        pool.invoke(payload, request_id).await
    }

    /// Drains in-flight work (up to `grace`), kills every zygote and clone,
    /// and removes fnhost's cgroups.
    pub async fn shutdown(&self, grace: Duration) {
        let pools: Vec<Arc<FunctionPool>> = self
            .pools
            .read()
            .expect("pools lock")
            .values()
            .cloned()
            .collect();
        futures_join_all(
            pools
                .into_iter()
                .map(|pool| async move { pool.close(grace).await }),
        )
        .await;
        // Pools a reload retired are still closing: removing every cgroup
        // under them would race their own cleanup.
        let retiring = std::mem::take(&mut *self.retiring.lock().expect("retiring lock"));
        for task in retiring {
            let _ = task.await;
        }
        match self.tree.remove_all() {
            Ok(report) => tracing::info!(cgroups = report.cgroups_removed, "cgroups removed"),
            Err(e) => tracing::warn!(error = %e, "could not remove every cgroup at shutdown"),
        }
    }
}

/// First refill pass of new pools, concurrently; failures are retried by
/// each pool's refill loop.
pub(super) async fn prewarm(pools: impl Iterator<Item = Arc<FunctionPool>>) {
    let warmups = pools.filter(|pool| pool.settings().prewarm).map(|pool| async move {
        if let Err(e) = pool.refill_once().await {
            tracing::error!(function = pool.name(), error = %e, "prewarm failed; will retry in the background");
        }
    });
    futures_join_all(warmups).await;
}

/// Runs futures concurrently and waits for all (a tiny `join_all`).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl IntoIterator<Item = F>,
) {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for handle in handles {
        let _ = handle.await;
    }
}
