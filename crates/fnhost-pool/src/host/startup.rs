//! Starting a host: detecting the cgroup layout and removing what a
//! previous run left in fnhost's own cgroup subtree, opening the layer and
//! snapshot stores, building the shared layers (host skeleton, runtime,
//! each function's code) and each function's zygote spec and pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use fnhost_config::{Config, FavorDynmodsMode, FunctionSpec, ServerConfig};
use fnhost_layers::{HostLayer, ImportBatch, Layer, LayerFile, LayerStore};
use fnhost_sandbox::cgroup::{CgroupLayout, CgroupLimits, CgroupTree};
use fnhost_sandbox::mount::Bind;
use fnhost_zygote::daemon::SnapshotStore;
use fnhost_zygote::reap::{REAPER_NAME, REAPER_PATH};
use fnhost_zygote::runtime::{self, FileContents, RootParts};
use fnhost_zygote::spec::ZygoteSpec;
use fnhost_zygote::SHIM_LIB_NAME;

use super::{prewarm, Host};
use crate::budget::{default_budget_bytes, MemoryBudget};
use crate::pool::{FunctionPool, Ids, PoolShared};
use crate::telemetry::Labels;

/// Extra memory a zygote cgroup gets on top of the function's limit: the
/// zygote is charged for the page tables of every clone it forks.
const ZYGOTE_MEMORY_HEADROOM: u64 = 256 << 20;
/// Most threads importing code layers at start.
const PREPARE_THREADS: usize = 8;
/// Process limit of a zygote cgroup (clones are born there on v1 before
/// they move to their own cgroup).
const ZYGOTE_PIDS: u64 = 4096;
/// CPU weight of a zygote cgroup (a tenth of the default 100): where the
/// refill forks the next ready clone while an invocation runs, the
/// invocation gets the CPU first. On 2 cores this took a sequential
/// client's ready-clone p50 from 2.2–2.5 to 1.3–1.7 ms (node no-op, v1
/// cpu.shares 1024 vs 64). An idle host gives the zygote all the CPU.
const ZYGOTE_CPU_WEIGHT: u16 = 10;

/// Why the host could not start. Each names what to change.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot detect the cgroup layout: {0}")]
    CgroupDetect(#[source] fnhost_sandbox::cgroup::CgroupError),
    #[error("{0}")]
    FavorDynmods(#[source] fnhost_sandbox::cgroup::CgroupError),
    #[error("cannot clean up fnhost cgroups left by a previous run: {0}")]
    CgroupCleanup(#[source] fnhost_sandbox::cgroup::CgroupError),
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
    #[error("function '{function}': {source}")]
    IdRanges {
        function: String,
        source: super::id_ranges::RangesExhausted,
    },
    #[error(transparent)]
    UsernsForbidden(fnhost_sandbox::userns_support::UsernsForbidden),
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
    #[error(
        "cannot put the {built} code layers built at start-up in place in the layer store \
         (under server.state_dir): {source}; check its free space and permissions"
    )]
    CodeLayers {
        built: usize,
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
}

/// Where the daemon finds things that are not in the config.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Path of `libfnhost_shim.so`.
    pub shim_lib: PathBuf,
    /// Path of the `fnhost-reaper` binary (optional: without it, each
    /// zygote's init stays resident as the whole fnhost binary).
    pub reaper: PathBuf,
    /// Descriptors zygotes and clones may hold (what the daemon's open-file
    /// limit leaves them), set before any zygote starts; `None`: no cap.
    pub sandbox_descriptors: Option<usize>,
}

impl HostOptions {
    /// `FNHOST_SHIM_LIB` and `FNHOST_REAPER`, else the files next to the
    /// running executable (or one directory up, for test binaries in
    /// `target/*/deps`).
    pub fn locate() -> HostOptions {
        HostOptions {
            shim_lib: beside_executable("FNHOST_SHIM_LIB", SHIM_LIB_NAME),
            reaper: beside_executable("FNHOST_REAPER", REAPER_NAME),
            sandbox_descriptors: None,
        }
    }
}

/// `$env` if set, else `name` next to the running executable, else one
/// directory up if it is there.
fn beside_executable(env: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    let beside = dir.join(name);
    match dir.parent().map(|d| d.join(name)) {
        Some(up) if !beside.exists() && up.exists() => up,
        _ => beside,
    }
}

/// What a function's root is made of below its code and runtime layers.
struct RootLayers {
    /// Overlay lower dirs, topmost first.
    layers: Vec<PathBuf>,
    binds: Vec<Bind>,
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

/// The runtime layer: every runtime's files (see `fnhost_zygote::runtime`).
/// The runtime layer, and whether it holds `fnhost-reaper`.
fn runtime_layer(store: &LayerStore, options: &HostOptions) -> Result<(Layer, bool), HostError> {
    let files = runtime::layer_files();
    let shim = if files.iter().any(|f| f.contents == FileContents::ShimLib) {
        std::fs::read(&options.shim_lib).map_err(|source| HostError::ShimLib {
            path: options.shim_lib.clone(),
            source,
        })?
    } else {
        Vec::new()
    };
    let mut files: Vec<LayerFile> = files
        .into_iter()
        .map(|file| LayerFile {
            path: file.path.trim_start_matches('/').into(),
            contents: match file.contents {
                FileContents::Text(text) => text.into(),
                FileContents::ShimLib => shim.clone(),
            },
            mode: file.mode,
        })
        .collect();
    let reaper = match std::fs::read(&options.reaper) {
        Ok(contents) => {
            files.push(LayerFile {
                path: REAPER_PATH.trim_start_matches('/').into(),
                contents,
                mode: 0o755,
            });
            true
        }
        Err(e) => {
            tracing::warn!(path = %options.reaper.display(), error = %e,
                "fnhost-reaper not found: every zygote's init stays resident as the whole fnhost \
                 binary (about 0.5 MiB more per zygote); install it next to fnhost (cargo build \
                 --workspace builds it) or set FNHOST_REAPER");
            false
        }
    };
    let layer = store
        .import_files(&files)
        .map_err(HostError::RuntimeLayer)?;
    Ok((layer, reaper))
}

/// Applies `server.cgroup_favordynmods` (see
/// [`fnhost_sandbox::cgroup::favordynmods`]).
fn favor_dynmods(
    layout: &CgroupLayout,
    mountinfo: &str,
    mode: FavorDynmodsMode,
) -> Result<(), HostError> {
    use fnhost_sandbox::cgroup::favordynmods::{favor_dynmods, FavorDynmods};
    if mode == FavorDynmodsMode::Keep {
        return Ok(());
    }
    match favor_dynmods(layout, mountinfo, &fnhost_sandbox::syscall::LinuxSyscall) {
        Ok(FavorDynmods::Enabled) => {
            tracing::info!(
                "remounted the cgroup2 filesystem with favordynmods: cgroup migrations no longer \
                 wait for an RCU grace period (server.cgroup_favordynmods = \"keep\" leaves it alone)"
            );
            Ok(())
        }
        Ok(FavorDynmods::AlreadySet) => Ok(()),
        Ok(FavorDynmods::NoCgroup2) => {
            if mode == FavorDynmodsMode::On {
                tracing::warn!("server.cgroup_favordynmods = \"on\", but the host has no cgroup2 filesystem; going on without it");
            }
            Ok(())
        }
        Err(e) if mode == FavorDynmodsMode::Auto => {
            tracing::warn!(error = %e, "cold starts, on-demand clones and wake-ups may each wait for an RCU grace period");
            Ok(())
        }
        Err(e) => Err(HostError::FavorDynmods(e)),
    }
}

impl Host {
    /// Builds everything and prewarms every pool (waiting for the first
    /// refill pass, so a started host serves its first request warm).
    pub async fn start(config: &Config, options: &HostOptions) -> Result<Host, HostError> {
        let started = std::time::Instant::now();
        // Read once: the layout and the cgroup2 mount's options.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| {
            HostError::CgroupDetect(fnhost_sandbox::cgroup::CgroupError::ReadMountinfo { source })
        })?;
        let layout = CgroupLayout::from_mountinfo(&mountinfo).map_err(HostError::CgroupDetect)?;
        let layout_text = layout.describe();
        favor_dynmods(&layout, &mountinfo, config.server.cgroup_favordynmods)?;
        let tree = Arc::new(CgroupTree::new(layout, &config.server.cgroup_root));
        let stale = tree.remove_stale().map_err(HostError::CgroupCleanup)?;
        if stale.cgroups_removed > 0 {
            tracing::warn!(
                cgroups = stale.cgroups_removed,
                processes = stale.processes_killed,
                "removed cgroups left by a previous run"
            );
        }
        // From here on cgroups exist (the memory budget's limit on the
        // root, zygotes of pools already built): a start that fails removes
        // them, as a shutdown would.
        let result = Self::start_in(config, options, tree.clone(), layout_text, started).await;
        if result.is_err() {
            if let Err(e) = tree.remove_all() {
                tracing::warn!(error = %e, "could not remove every cgroup of the failed start");
            }
        }
        result
    }

    /// [`Self::start`] once the cgroup tree is known and clean.
    async fn start_in(
        config: &Config,
        options: &HostOptions,
        tree: Arc<CgroupTree>,
        layout_text: String,
        started: std::time::Instant,
    ) -> Result<Host, HostError> {
        let state = &config.server.state_dir;
        let staging = state.join("run").join("root");
        std::fs::create_dir_all(&staging).map_err(|source| HostError::StateDir {
            path: staging.clone(),
            source,
        })?;
        let store = LayerStore::open(&state.join("layers")).map_err(HostError::Store)?;
        fnhost_sandbox::userns_support::check(Path::new("/proc/sys"))
            .map_err(HostError::UsernsForbidden)?;
        if config.server.user_namespace {
            check_traversable(&staging)?;
            check_traversable(store.root())?;
        }
        let host_layer = store
            .host_layer(Path::new("/"))
            .map_err(HostError::HostLayer)?;
        let (runtime, reaper) = runtime_layer(&store, options)?;
        let snapshots = SnapshotStore::open(state).map_err(|source| HostError::SnapshotDir {
            path: state.clone(),
            source,
        })?;
        let budget = MemoryBudget::new(budget_bytes(&config.server), tree.clone());
        if let Some(limit) = options.sandbox_descriptors {
            budget.set_descriptor_limit(limit);
        }
        let host = Host {
            pools: RwLock::new(BTreeMap::new()),
            tree,
            budget,
            store,
            host_layer,
            runtime,
            reaper,
            staging,
            snapshots: Arc::new(snapshots),
            ids: Arc::new(Ids::default()),
            server: config.server.clone(),
            layout: layout_text,
            reloading: tokio::sync::Mutex::new(()),
            retiring: std::sync::Mutex::new(Vec::new()),
            id_ranges: std::sync::Mutex::new(super::id_ranges::IdRanges::new(
                config.server.userns_ranges,
            )),
            labels: Labels::for_host(config.functions.len(), config.server.function_metrics_max),
        };
        let stores_ms = started.elapsed().as_millis() as u64;
        let zspecs = host.prepare_all(&config.functions)?;
        let prepare_ms = started.elapsed().as_millis() as u64 - stores_ms;
        let mut pools = BTreeMap::new();
        for (spec, zspec) in config.functions.iter().zip(zspecs) {
            pools.insert(spec.name.clone(), host.build_pool_with(spec, zspec)?);
        }
        let pools_ms = started.elapsed().as_millis() as u64 - stores_ms - prepare_ms;
        prewarm(pools.values().cloned()).await;
        *host.pools.write().expect("pools lock") = pools;
        tracing::info!(cgroups = %host.layout, functions = config.functions.len(),
            memory_budget_mb = host.budget.limit() >> 20, stores_ms, prepare_ms, pools_ms,
            total_ms = started.elapsed().as_millis() as u64, "host started");
        Ok(host)
    }

    /// The zygote spec `spec` would run with: imports its code layer
    /// (content-addressed, so unchanged code is not copied again) and
    /// resolves its root layers.
    pub(super) fn prepare(&self, spec: &FunctionSpec) -> Result<ZygoteSpec, HostError> {
        self.prepare_in(spec, None)
    }

    /// [`Self::prepare`], importing the code layer into `batch` if given
    /// (the layer is then in place only once the batch is finished).
    fn prepare_in(
        &self,
        spec: &FunctionSpec,
        batch: Option<&ImportBatch<'_>>,
    ) -> Result<ZygoteSpec, HostError> {
        let prefix = Path::new("var/task");
        let code = match batch {
            Some(batch) => batch.import_dir(&spec.code, prefix),
            None => self.store.import_dir(&spec.code, prefix),
        }
        .map_err(|source| HostError::CodeLayer {
            function: spec.name.clone(),
            path: spec.code.clone(),
            source,
        })?;
        let root = root_layers(spec, &self.store, &self.host_layer)?;
        let parts = RootParts {
            staging: self.staging.clone(),
            layers: [code.path, self.runtime.path.clone()]
                .into_iter()
                .chain(root.layers)
                .collect(),
            binds: root.binds,
            image_env: root.env,
            reaper: self.reaper,
        };
        Ok(runtime::zygote_spec(
            spec,
            parts,
            self.server.max_response_bytes,
            self.runtime_ids(&spec.name)?,
        ))
    }

    /// [`Self::prepare`] for every spec, on a few threads (importing a
    /// code layer hashes its files and verifies the stored layer's seal:
    /// at 10,000 functions that is most of the start-up), with the code
    /// layers to build imported as one batch: synced to disk twice in all
    /// rather than several times each. Results are in `specs` order; the
    /// first failure in that order is returned. Id ranges are handed out
    /// in config order first, so they do not depend on which thread ran
    /// first.
    pub(super) fn prepare_all(&self, specs: &[FunctionSpec]) -> Result<Vec<ZygoteSpec>, HostError> {
        for spec in specs {
            self.range_base(&spec.name)?;
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, PREPARE_THREADS);
        let chunk = specs.len().div_ceil(threads).max(1);
        let imports = self.store.batch();
        let batch = &imports;
        let prepared: Vec<Vec<Result<ZygoteSpec, HostError>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = specs
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|s| self.prepare_in(s, Some(batch)))
                            .collect()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        // On any failure the batch is dropped, and its builds with it.
        let zspecs = prepared
            .into_iter()
            .flatten()
            .collect::<Result<Vec<_>, _>>()?;
        let built = imports.built();
        let syncing = std::time::Instant::now();
        imports
            .finish()
            .map_err(|source| HostError::CodeLayers { built, source })?;
        if built > 0 {
            tracing::info!(
                layers = built,
                sync_ms = syncing.elapsed().as_millis() as u64,
                "code layers built and synced to disk"
            );
        }
        Ok(zspecs)
    }

    pub(super) fn build_pool_with(
        &self,
        spec: &FunctionSpec,
        zspec: ZygoteSpec,
    ) -> Result<Arc<FunctionPool>, HostError> {
        let zygote_limits = CgroupLimits {
            cpu_weight: Some(ZYGOTE_CPU_WEIGHT),
            ..CgroupLimits::from_cpus(
                spec.limits.memory_bytes() + ZYGOTE_MEMORY_HEADROOM,
                spec.limits.cpu.max(1.0),
                ZYGOTE_PIDS,
            )
        };
        let shared = PoolShared {
            tree: self.tree.clone(),
            ids: self.ids.clone(),
            budget: self.budget.clone(),
            max_response: self.server.max_response_bytes,
            userns: self.userns(&spec.name)?,
            snapshots: self.snapshots.clone(),
            labels: self.labels.for_function(spec.detailed_metrics),
        };
        let pool = FunctionPool::new(spec.clone(), zspec, zygote_limits, shared);
        tokio::spawn(pool.clone().maintain());
        Ok(pool)
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

pub(super) fn budget_bytes(server: &ServerConfig) -> u64 {
    match server.memory_budget_mb {
        0 => default_budget_bytes(),
        mb => mb << 20,
    }
}
