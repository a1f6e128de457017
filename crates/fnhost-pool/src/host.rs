//! The host: every function's pool, built from a validated config. Startup
//! detects the cgroup layout, removes what a previous run left in fnhost's
//! own cgroup subtree, builds the shared layers (host skeleton, runtime,
//! each function's code) and prewarms the pools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fnhost_config::{Config, FunctionSpec, Runtime};
use fnhost_layers::{HostLayer, Layer, LayerFile, LayerStore};
use fnhost_sandbox::cgroup::{CgroupLayout, CgroupLimits, CgroupTree};
use fnhost_zygote::spec::{BindSpec, ZygoteSpec};
use fnhost_zygote::{PYTHON_SHIM, PYTHON_SHIM_PATH, SHIM_LIB_NAME, SHIM_LIB_PATH};

use crate::error::InvokeError;
use crate::pool::{FunctionPool, Ids, Invocation, PoolStatus};

/// Size of a zygote's own /tmp (import-time scratch).
const ZYGOTE_TMP_BYTES: u64 = 16 << 20;
/// Extra memory a zygote cgroup gets on top of the function's limit: the
/// zygote is charged for the page tables of every clone it forks.
const ZYGOTE_MEMORY_HEADROOM: u64 = 256 << 20;
/// Process limit of a zygote cgroup (clones are born there on v1 before
/// they move to their own cgroup).
const ZYGOTE_PIDS: u64 = 4096;

/// Why the host could not start. Each names what to change.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot detect the cgroup layout: {0}")]
    CgroupDetect(#[source] fnhost_sandbox::cgroup::CgroupError),
    #[error("cannot clean up fnhost cgroups left by a previous run: {0}")]
    CgroupCleanup(#[source] fnhost_sandbox::cgroup::CgroupError),
    #[error("cannot create the cgroup of function '{function}': {source}")]
    Cgroup { function: String, source: fnhost_sandbox::cgroup::CgroupError },
    #[error("cannot create state directory {path}: {source} (set server.state_dir to a writable directory)")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open the layer store: {0}")]
    Store(#[source] fnhost_layers::LayerError),
    #[error("cannot build the built-in host layer: {0}")]
    HostLayer(#[source] fnhost_layers::LayerError),
    #[error(
        "cannot read the native zygote shim {path}: {source}; it is built next to the fnhost binary by \
         `cargo build --workspace` (or point FNHOST_SHIM_LIB at it)"
    )]
    ShimLib { path: PathBuf, source: std::io::Error },
    #[error("cannot build the runtime layer: {0}")]
    RuntimeLayer(#[source] fnhost_layers::LayerError),
    #[error("cannot import the code of function '{function}' from {path}: {source}")]
    CodeLayer { function: String, path: PathBuf, source: fnhost_layers::LayerError },
}

/// Where the daemon finds things that are not in the config.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Path of `libfnhost_shim.so`.
    pub shim_lib: PathBuf,
}

impl HostOptions {
    /// `FNHOST_SHIM_LIB`, else the shim next to the running executable (or
    /// one directory up, for test binaries in `target/*/deps`).
    pub fn locate() -> HostOptions {
        if let Some(path) = std::env::var_os("FNHOST_SHIM_LIB") {
            return HostOptions { shim_lib: PathBuf::from(path) };
        }
        let exe = std::env::current_exe().unwrap_or_default();
        let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let beside = dir.join(SHIM_LIB_NAME);
        let up = dir.parent().map(|d| d.join(SHIM_LIB_NAME));
        let shim_lib = match up {
            Some(up) if !beside.exists() && up.exists() => up,
            _ => beside,
        };
        HostOptions { shim_lib }
    }
}

/// Every function's pool.
pub struct Host {
    pools: BTreeMap<String, Arc<FunctionPool>>,
    tree: Arc<CgroupTree>,
    layout: String,
}

fn zygote_spec(
    spec: &FunctionSpec,
    staging: &Path,
    code: &Layer,
    runtime: &Layer,
    host: &HostLayer,
) -> ZygoteSpec {
    let mut env: BTreeMap<String, String> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
        ("HOME", "/tmp"),
        ("PYTHONUNBUFFERED", "1"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("LAMBDA_TASK_ROOT", "/var/task"),
        ("LAMBDA_RUNTIME_DIR", "/.fnhost/runtime"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), spec.name.clone());
    env.insert("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), spec.limits.memory_mb.to_string());
    env.extend(spec.env.clone());
    // fnhost's own variables win over user ones (the shim removes them
    // before function code runs).
    env.insert("FNHOST_HANDLER".into(), spec.handler.clone());
    env.insert("FNHOST_SHIM_LIB".into(), SHIM_LIB_PATH.into());
    let argv = match spec.runtime {
        Runtime::Python3 => vec![
            spec.python.display().to_string(),
            "-s".to_string(),
            "-B".to_string(),
            PYTHON_SHIM_PATH.to_string(),
        ],
    };
    ZygoteSpec {
        function: spec.name.clone(),
        staging: staging.to_path_buf(),
        layers: vec![code.path.clone(), runtime.path.clone(), host.skeleton.path.clone()],
        binds: host.binds.iter().map(|b| BindSpec { source: b.source.clone(), target: b.target.clone() }).collect(),
        tmp_bytes: ZYGOTE_TMP_BYTES,
        hostname: spec.name.clone(),
        argv,
        env: env.into_iter().collect(),
        cwd: PathBuf::from("/var/task"),
    }
}

impl Host {
    /// Builds everything and prewarms every pool (waiting for the first
    /// refill pass, so a started host serves its first request warm).
    pub async fn start(config: &Config, options: &HostOptions) -> Result<Host, HostError> {
        let layout = CgroupLayout::detect().map_err(HostError::CgroupDetect)?;
        let layout_text = layout.describe();
        let tree = Arc::new(CgroupTree::new(layout, &config.server.cgroup_root));
        let stale = tree.remove_stale().map_err(HostError::CgroupCleanup)?;
        if stale.cgroups_removed > 0 {
            tracing::warn!(cgroups = stale.cgroups_removed, processes = stale.processes_killed,
                "removed cgroups left by a previous run");
        }
        let state = &config.server.state_dir;
        let staging = state.join("run").join("root");
        std::fs::create_dir_all(&staging).map_err(|source| HostError::StateDir { path: staging.clone(), source })?;
        let store = LayerStore::open(&state.join("layers")).map_err(HostError::Store)?;
        let host_layer = store.host_layer(Path::new("/")).map_err(HostError::HostLayer)?;
        let shim = std::fs::read(&options.shim_lib)
            .map_err(|source| HostError::ShimLib { path: options.shim_lib.clone(), source })?;
        let runtime = store
            .import_files(&[
                LayerFile { path: PYTHON_SHIM_PATH.trim_start_matches('/').into(), contents: PYTHON_SHIM.into(), mode: 0o644 },
                LayerFile { path: SHIM_LIB_PATH.trim_start_matches('/').into(), contents: shim, mode: 0o755 },
            ])
            .map_err(HostError::RuntimeLayer)?;
        let ids = Arc::new(Ids::default());
        let mut pools = BTreeMap::new();
        for spec in &config.functions {
            let code = store.import_dir(&spec.code, Path::new("var/task")).map_err(|source| HostError::CodeLayer {
                function: spec.name.clone(),
                path: spec.code.clone(),
                source,
            })?;
            let zygote_limits = CgroupLimits::from_cpus(
                spec.limits.memory_bytes() + ZYGOTE_MEMORY_HEADROOM,
                spec.limits.cpu.max(1.0),
                ZYGOTE_PIDS,
            );
            let zygote_cgroup = tree
                .create(&format!("{}/zygote", spec.name), &zygote_limits)
                .map_err(|source| HostError::Cgroup { function: spec.name.clone(), source })?;
            let zspec = zygote_spec(spec, &staging, &code, &runtime, &host_layer);
            let pool = FunctionPool::new(
                spec.clone(),
                zspec,
                tree.clone(),
                zygote_cgroup,
                ids.clone(),
                config.server.max_response_bytes,
            );
            pools.insert(spec.name.clone(), pool);
        }
        let warmups = pools.values().map(|pool| {
            let pool = pool.clone();
            async move {
                if let Err(e) = pool.refill_once().await {
                    tracing::error!(function = pool.name(), error = %e, "prewarm failed; will retry in the background");
                }
            }
        });
        futures_join_all(warmups).await;
        for pool in pools.values() {
            tokio::spawn(pool.clone().maintain());
        }
        tracing::info!(cgroups = %layout_text, functions = pools.len(), "host started");
        Ok(Host { pools, tree, layout: layout_text })
    }

    pub fn cgroup_layout(&self) -> &str {
        &self.layout
    }

    pub fn function_names(&self) -> Vec<String> {
        self.pools.keys().cloned().collect()
    }

    pub fn status(&self) -> BTreeMap<String, PoolStatus> {
        self.pools.iter().map(|(name, pool)| (name.clone(), pool.status())).collect()
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<FunctionPool>> {
        self.pools.get(name)
    }

    /// Runs one invocation of `name`.
    pub async fn invoke(&self, name: &str, payload: &[u8], request_id: String) -> Result<Invocation, InvokeError> {
        let pool = self.pools.get(name).ok_or_else(|| InvokeError::NotFound {
            function: name.to_string(),
            defined: if self.pools.is_empty() {
                "none".to_string()
            } else {
                self.pools.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })?;
        pool.invoke(payload, request_id).await
    }

    /// Drains in-flight work (up to `grace`), kills every zygote and clone,
    /// and removes fnhost's cgroups.
    pub async fn shutdown(&self, grace: Duration) {
        futures_join_all(self.pools.values().cloned().map(|pool| async move { pool.close(grace).await })).await;
        match self.tree.remove_all() {
            Ok(report) => tracing::info!(cgroups = report.cgroups_removed, "cgroups removed"),
            Err(e) => tracing::warn!(error = %e, "could not remove every cgroup at shutdown"),
        }
    }
}

/// Runs futures concurrently and waits for all (a tiny `join_all`).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(futures: impl IntoIterator<Item = F>) {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for handle in handles {
        let _ = handle.await;
    }
}
