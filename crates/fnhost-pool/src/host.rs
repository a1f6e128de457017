//! The host: every function's pool, built from a validated config. Startup
//! detects the cgroup layout, removes what a previous run left in fnhost's
//! own cgroup subtree, builds the shared layers (host skeleton, runtime,
//! each function's code) and prewarms the pools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fnhost_config::{Config, FunctionSpec, Runtime, ServerConfig};
use fnhost_layers::{HostLayer, Layer, LayerFile, LayerStore};
use fnhost_sandbox::cgroup::{CgroupLayout, CgroupLimits, CgroupTree};
use fnhost_zygote::exec::MAX_RESPONSE_ENV;
use fnhost_zygote::spec::{BindSpec, RuntimeEntry, ZygoteSpec};
use fnhost_zygote::{PYTHON_SHIM, PYTHON_SHIM_PATH, SHIM_LIB_NAME, SHIM_LIB_PATH};

use crate::budget::{default_budget_bytes, MemoryBudget};
use crate::error::InvokeError;
use crate::hibernation::SnapshotStore;
use crate::pool::{FunctionPool, Ids, Invocation, PoolShared, PoolStatus};
use crate::process::IdMap;

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
    Cgroup {
        function: String,
        source: fnhost_sandbox::cgroup::CgroupError,
    },
    #[error("cannot create state directory {path}: {source} (set server.state_dir to a writable directory)")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} has mode {mode:o}: sandboxes run in a user namespace as unprivileged host ids and must be \
         able to traverse it to reach server.state_dir (chmod o+x it, move server.state_dir, or set \
         server.user_namespace = false)"
    )]
    NotTraversable { path: PathBuf, mode: u32 },
    #[error("cannot open the layer store: {0}")]
    Store(#[source] fnhost_layers::LayerError),
    #[error("cannot build the built-in host layer: {0}")]
    HostLayer(#[source] fnhost_layers::LayerError),
    #[error(
        "cannot read the native zygote shim {path}: {source}; it is built next to the fnhost binary by \
         `cargo build --workspace` (or point FNHOST_SHIM_LIB at it)"
    )]
    ShimLib {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the runtime layer: {0}")]
    RuntimeLayer(#[source] fnhost_layers::LayerError),
    #[error("cannot import the code of function '{function}' from {path}: {source}")]
    CodeLayer {
        function: String,
        path: PathBuf,
        source: fnhost_layers::LayerError,
    },
    #[error("function '{function}' uses image {image}: {source}")]
    Image {
        function: String,
        image: String,
        source: fnhost_layers::LayerError,
    },
    #[error("cannot prepare the snapshot directory under {path}: {source} (set server.state_dir to a writable directory)")]
    SnapshotDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Hibernation(String),
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
            return HostOptions {
                shim_lib: PathBuf::from(path),
            };
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

/// Every function's pool, replaceable at run time (config reload, admin API).
pub struct Host {
    pools: RwLock<BTreeMap<String, Arc<FunctionPool>>>,
    tree: Arc<CgroupTree>,
    budget: Arc<MemoryBudget>,
    store: LayerStore,
    host_layer: HostLayer,
    runtime: Layer,
    staging: PathBuf,
    snapshots: Arc<SnapshotStore>,
    ids: Arc<Ids>,
    server: ServerConfig,
    layout: String,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Functions whose code, runtime or limits changed: new pools replaced
    /// the old ones, which drain their in-flight invocations.
    pub replaced: Vec<String>,
    /// Functions whose pool settings changed in place.
    pub resized: Vec<String>,
    pub unchanged: Vec<String>,
    /// `[server]` keys that only take effect after a restart.
    pub needs_restart: Vec<String>,
}

/// What a function's root is made of below its code and runtime layers.
struct RootLayers {
    /// Overlay lower dirs, topmost first.
    layers: Vec<PathBuf>,
    binds: Vec<BindSpec>,
    /// The image config's `Env`, applied under the function's own `env`.
    env: Vec<(String, String)>,
}

/// The built-in host layer (skeleton + read-only binds of host dirs), or,
/// for a function with an `image`, the mountpoints layer above the image's
/// layers and no binds at all.
fn root_layers(
    spec: &FunctionSpec,
    store: &LayerStore,
    host: &HostLayer,
) -> Result<RootLayers, HostError> {
    let Some(reference) = &spec.image else {
        return Ok(RootLayers {
            layers: vec![host.skeleton.path.clone()],
            binds: host.binds.clone(),
            env: Vec::new(),
        });
    };
    let image_err = |source| HostError::Image {
        function: spec.name.clone(),
        image: reference.clone(),
        source,
    };
    let image = store.image(reference).map_err(image_err)?;
    let mountpoints = store.mountpoints_layer().map_err(image_err)?;
    let mut layers = vec![mountpoints.path];
    layers.extend(image.layers.into_iter().map(|l| l.path));
    Ok(RootLayers {
        layers,
        binds: Vec::new(),
        env: image.config.env_pairs(),
    })
}

fn zygote_spec(
    spec: &FunctionSpec,
    staging: &Path,
    code: &Layer,
    runtime: &Layer,
    root: RootLayers,
    max_response_bytes: usize,
) -> ZygoteSpec {
    let mut env: BTreeMap<String, String> = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
        ("HOME", "/tmp"),
        ("LAMBDA_TASK_ROOT", "/var/task"),
        ("LAMBDA_RUNTIME_DIR", "/.fnhost/runtime"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), spec.name.clone());
    env.insert(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
        spec.limits.memory_mb.to_string(),
    );
    env.extend(root.env);
    env.extend(spec.env.clone());
    // fnhost's own variables win over user ones (config rejects FNHOST_*
    // names in `env`; the runtimes remove them before function code runs).
    env.insert(
        fnhost_zygote::forkserver::SECCOMP_ENV.into(),
        spec.seccomp.clone(),
    );
    let (argv, entry) = match spec.runtime {
        Runtime::Python3 => {
            for (k, v) in [("PYTHONUNBUFFERED", "1"), ("PYTHONDONTWRITEBYTECODE", "1")] {
                env.entry(k.into()).or_insert_with(|| v.into());
            }
            env.insert("FNHOST_HANDLER".into(), spec.handler.clone());
            env.insert("FNHOST_SHIM_LIB".into(), SHIM_LIB_PATH.into());
            let argv = [
                spec.python.display().to_string(),
                "-s".into(),
                "-B".into(),
                PYTHON_SHIM_PATH.into(),
            ];
            (argv.to_vec(), RuntimeEntry::Exec)
        }
        // The command runs once per invocation under fnhost's built-in fork server.
        Runtime::Exec => {
            env.insert(MAX_RESPONSE_ENV.into(), max_response_bytes.to_string());
            (spec.command.clone(), RuntimeEntry::CommandPerInvocation)
        }
        // The binary links fnhost-sdk and becomes the fork server itself.
        Runtime::Rust => (spec.command.clone(), RuntimeEntry::Exec),
    };
    ZygoteSpec {
        function: spec.name.clone(),
        staging: staging.to_path_buf(),
        layers: [code.path.clone(), runtime.path.clone()]
            .into_iter()
            .chain(root.layers)
            .collect(),
        binds: root.binds,
        tmp_bytes: ZYGOTE_TMP_BYTES,
        hostname: spec.name.clone(),
        argv,
        entry,
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
            tracing::warn!(
                cgroups = stale.cgroups_removed,
                processes = stale.processes_killed,
                "removed cgroups left by a previous run"
            );
        }
        let state = &config.server.state_dir;
        let staging = state.join("run").join("root");
        std::fs::create_dir_all(&staging).map_err(|source| HostError::StateDir {
            path: staging.clone(),
            source,
        })?;
        let store = LayerStore::open(&state.join("layers")).map_err(HostError::Store)?;
        if config.server.user_namespace {
            check_traversable(&staging)?;
            check_traversable(store.root())?;
        }
        let host_layer = store
            .host_layer(Path::new("/"))
            .map_err(HostError::HostLayer)?;
        let shim = std::fs::read(&options.shim_lib).map_err(|source| HostError::ShimLib {
            path: options.shim_lib.clone(),
            source,
        })?;
        let runtime = store
            .import_files(&[
                LayerFile {
                    path: PYTHON_SHIM_PATH.trim_start_matches('/').into(),
                    contents: PYTHON_SHIM.into(),
                    mode: 0o644,
                },
                LayerFile {
                    path: SHIM_LIB_PATH.trim_start_matches('/').into(),
                    contents: shim,
                    mode: 0o755,
                },
            ])
            .map_err(HostError::RuntimeLayer)?;
        let snapshots = SnapshotStore::open(state).map_err(|source| HostError::SnapshotDir {
            path: state.clone(),
            source,
        })?;
        let budget = MemoryBudget::new(budget_bytes(&config.server), tree.clone());
        let host = Host {
            pools: RwLock::new(BTreeMap::new()),
            tree,
            budget,
            store,
            host_layer,
            runtime,
            staging,
            snapshots: Arc::new(snapshots),
            ids: Arc::new(Ids::default()),
            server: config.server.clone(),
            layout: layout_text,
            reloading: tokio::sync::Mutex::new(()),
        };
        let mut pools = BTreeMap::new();
        for spec in &config.functions {
            pools.insert(spec.name.clone(), host.build_pool(spec)?);
        }
        prewarm(pools.values().cloned()).await;
        *host.pools.write().expect("pools lock") = pools;
        tracing::info!(cgroups = %host.layout, functions = config.functions.len(),
            memory_budget_mb = host.budget.limit() >> 20, "host started");
        Ok(host)
    }

    /// The zygote spec `spec` would run with: imports its code layer
    /// (content-addressed, so unchanged code is not copied again) and
    /// resolves its root layers.
    fn prepare(&self, spec: &FunctionSpec) -> Result<ZygoteSpec, HostError> {
        self.snapshots.check(spec).map_err(HostError::Hibernation)?;
        let code = self
            .store
            .import_dir(&spec.code, Path::new("var/task"))
            .map_err(|source| HostError::CodeLayer {
                function: spec.name.clone(),
                path: spec.code.clone(),
                source,
            })?;
        let root = root_layers(spec, &self.store, &self.host_layer)?;
        if let Some(map) = self.userns() {
            for layer in root.layers.iter().chain([&code.path, &self.runtime.path]) {
                self.store
                    .set_owner(layer, map.host_base, map.host_base)
                    .map_err(|source| HostError::CodeLayer {
                        function: spec.name.clone(),
                        path: layer.clone(),
                        source,
                    })?;
            }
        }
        Ok(zygote_spec(
            spec,
            &self.staging,
            &code,
            &self.runtime,
            root,
            self.server.max_response_bytes,
        ))
    }

    /// A pool for `spec`: code layer, zygote cgroup, zygote spec; its
    /// refill loop is started.
    fn build_pool(&self, spec: &FunctionSpec) -> Result<Arc<FunctionPool>, HostError> {
        let zspec = self.prepare(spec)?;
        self.build_pool_with(spec, zspec)
    }

    fn build_pool_with(
        &self,
        spec: &FunctionSpec,
        zspec: ZygoteSpec,
    ) -> Result<Arc<FunctionPool>, HostError> {
        let zygote_limits = CgroupLimits::from_cpus(
            spec.limits.memory_bytes() + ZYGOTE_MEMORY_HEADROOM,
            spec.limits.cpu.max(1.0),
            ZYGOTE_PIDS,
        );
        let zygote_cgroup = self
            .tree
            .create(&format!("{}/zygote", spec.name), &zygote_limits)
            .map_err(|source| HostError::Cgroup {
                function: spec.name.clone(),
                source,
            })?;
        if let Some(map) = self.userns() {
            // Clones move from <fn>/zygote to <fn>/sN: the common ancestor's
            // cgroup.procs must be writable by the namespace's root too.
            self.tree
                .delegate(&spec.name, map.host_base, map.host_base)
                .map_err(|source| HostError::Cgroup {
                    function: spec.name.clone(),
                    source,
                })?;
        }
        let shared = PoolShared {
            tree: self.tree.clone(),
            ids: self.ids.clone(),
            budget: self.budget.clone(),
            max_response: self.server.max_response_bytes,
            userns: self.userns(),
            snapshots: self.snapshots.clone(),
        };
        let pool = FunctionPool::new(spec.clone(), zspec, zygote_cgroup, shared);
        tokio::spawn(pool.clone().maintain());
        Ok(pool)
    }

    /// Applies a new, already validated config. Everything is built before
    /// anything is swapped, so a failure leaves the running config intact.
    /// In-flight invocations finish in the pools they started in.
    pub async fn reload(
        &self,
        config: &Config,
        grace: Duration,
    ) -> Result<ReloadReport, HostError> {
        let _one_at_a_time = self.reloading.lock().await;
        let current = self.pools.read().expect("pools lock").clone();
        let mut report = ReloadReport::default();
        let mut next = BTreeMap::new();
        let mut built = Vec::new();
        for spec in &config.functions {
            // Code or image content changes show up as different layers.
            let zspec = match self.prepare(spec) {
                Ok(z) => z,
                Err(e) => {
                    for pool in built {
                        retire(pool, Duration::ZERO);
                    }
                    return Err(e);
                }
            };
            let same_root = |pool: &FunctionPool| *pool.zygote_spec() == zspec;
            match current.get(&spec.name) {
                Some(pool) if pool.spec == *spec && same_root(pool) => {
                    report.unchanged.push(spec.name.clone());
                    next.insert(spec.name.clone(), pool.clone());
                }
                Some(pool) if same_except_pool(&pool.spec, spec) && same_root(pool) => {
                    report.resized.push(spec.name.clone());
                    next.insert(spec.name.clone(), pool.clone());
                }
                old => {
                    let pool = match self.build_pool_with(spec, zspec) {
                        Ok(pool) => pool,
                        Err(e) => {
                            for pool in built {
                                retire(pool, Duration::ZERO);
                            }
                            return Err(e);
                        }
                    };
                    if old.is_some() {
                        report.replaced.push(spec.name.clone());
                    } else {
                        report.added.push(spec.name.clone());
                    }
                    built.push(pool.clone());
                    next.insert(spec.name.clone(), pool);
                }
            }
        }
        for spec in &config.functions {
            if report.resized.contains(&spec.name) {
                next[&spec.name].update_settings(spec.pool);
            }
        }
        let retired: Vec<Arc<FunctionPool>> = current
            .iter()
            .filter(|(name, pool)| next.get(*name).is_none_or(|p| !Arc::ptr_eq(p, pool)))
            .map(|(_, pool)| pool.clone())
            .collect();
        report.removed = current
            .keys()
            .filter(|name| !next.contains_key(*name))
            .cloned()
            .collect();
        *self.pools.write().expect("pools lock") = next;
        for pool in retired {
            retire(pool, grace);
        }
        self.budget.set_limit(budget_bytes(&config.server));
        report.needs_restart = restart_only_changes(&self.server, &config.server);
        prewarm(built.into_iter()).await;
        tracing::info!(?report, "config reloaded");
        Ok(report)
    }

    fn userns(&self) -> Option<IdMap> {
        self.server.user_namespace.then_some(IdMap {
            host_base: self.server.userns_host_base,
            size: fnhost_config::USERNS_SIZE,
        })
    }

    pub fn cgroup_layout(&self) -> &str {
        &self.layout
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

    /// Runs one invocation of `name`; dropping the future cancels it (the
    /// sandbox is stopped).
    pub async fn invoke(
        &self,
        name: &str,
        payload: bytes::Bytes,
        request_id: String,
    ) -> Result<Invocation, InvokeError> {
        let Some(pool) = self.pool(name) else {
            let names = self.function_names();
            return Err(InvokeError::NotFound {
                function: name.to_string(),
                defined: if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                },
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
        match self.tree.remove_all() {
            Ok(report) => tracing::info!(cgroups = report.cgroups_removed, "cgroups removed"),
            Err(e) => tracing::warn!(error = %e, "could not remove every cgroup at shutdown"),
        }
    }
}

/// Sandboxes in a user namespace run as unprivileged host ids: every
/// directory above their layers and staging root must be searchable by
/// others (mode o+x).
fn check_traversable(path: &Path) -> Result<(), HostError> {
    use std::os::unix::fs::PermissionsExt;
    for dir in path.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)
            .map_err(|source| HostError::StateDir {
                path: dir.to_path_buf(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(HostError::NotTraversable {
                path: dir.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}

fn budget_bytes(server: &ServerConfig) -> u64 {
    match server.memory_budget_mb {
        0 => default_budget_bytes(),
        mb => mb << 20,
    }
}

/// True when two specs differ at most in their pool settings.
fn same_except_pool(a: &FunctionSpec, b: &FunctionSpec) -> bool {
    let mut b = b.clone();
    b.pool = a.pool;
    *a == b
}

/// `[server]` keys that changed but need a restart.
fn restart_only_changes(old: &ServerConfig, new: &ServerConfig) -> Vec<String> {
    let mut keys = Vec::new();
    let checks: [(&str, bool); 7] = [
        ("server.listen", old.listen != new.listen),
        ("server.state_dir", old.state_dir != new.state_dir),
        ("server.cgroup_root", old.cgroup_root != new.cgroup_root),
        (
            "server.max_payload_bytes",
            old.max_payload_bytes != new.max_payload_bytes,
        ),
        (
            "server.max_response_bytes",
            old.max_response_bytes != new.max_response_bytes,
        ),
        ("server.admin_listen", old.admin_listen != new.admin_listen),
        ("server.admin_token", old.admin_token != new.admin_token),
    ];
    for (key, changed) in checks {
        if changed {
            tracing::warn!(
                key,
                "changed in the reloaded config; takes effect after a restart"
            );
            keys.push(key.to_string());
        }
    }
    keys
}

/// Drains a pool that left the config, then removes its cgroups.
fn retire(pool: Arc<FunctionPool>, grace: Duration) {
    tokio::spawn(async move {
        pool.close(grace).await;
        pool.remove_cgroups();
        tracing::info!(function = pool.name(), "pool retired");
    });
}

/// First refill pass of new pools, concurrently; failures are retried by
/// each pool's refill loop.
async fn prewarm(pools: impl Iterator<Item = Arc<FunctionPool>>) {
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
