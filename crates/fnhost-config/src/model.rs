//! The validated configuration model handed to the rest of fnhost. Every value
//! here has passed validation; the `Default` impls are the built-in defaults and
//! equal the values written in `config/fnhost.toml`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// `[server]`: the host process itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Address of the invoke API, `/healthz` and `/metrics` (port 0 picks one).
    pub listen: SocketAddr,
    /// Layer store, zygote staging and runtime files; always absolute.
    pub state_dir: PathBuf,
    /// Name of fnhost's own cgroup subtree under every hierarchy.
    pub cgroup_root: String,
    /// Largest accepted request body.
    pub max_payload_bytes: usize,
    /// Largest accepted function response.
    pub max_response_bytes: usize,
    /// How long in-flight invocations may finish after SIGTERM/SIGINT.
    pub shutdown_grace_ms: u64,
    /// Where the admin API listens.
    pub admin_listen: AdminListen,
    /// Bearer token the admin API requires (mandatory unless it listens on
    /// loopback or a Unix socket).
    pub admin_token: Option<String>,
    /// Memory all sandboxes and zygotes together may use, MiB; 0 = 80% of
    /// the host's memory.
    pub memory_budget_mb: u64,
    /// Run zygotes in a user namespace. Each function gets a range of
    /// [`USERNS_SIZE`] host ids of its own: the n-th function's zygotes map
    /// ids 0..USERNS_SIZE to host `userns_host_base + n * USERNS_SIZE`..,
    /// and its code runs as uid and gid 1000 (without a user namespace, as
    /// that host id directly).
    pub user_namespace: bool,
    pub userns_host_base: u32,
    /// How many functions (distinct names in one daemon's lifetime) get an
    /// id range: the ranges span `userns_ranges * USERNS_SIZE` host ids.
    pub userns_ranges: u32,
    /// Client-facing HTTP limits of the invoke and admin listeners.
    pub http: HttpLimits,
    /// The Lambda control plane: access keys, invoke auth, zip limits.
    pub control_plane: crate::control_plane::ControlPlaneConfig,
    /// Every metric carries a `function` label while the config defines at
    /// most this many functions; beyond it only `fnhost_invocations_total`
    /// does and the rest is summed over functions (bounded `/metrics`).
    pub function_metrics_max: usize,
    /// Whether fnhost sets the cgroup2 `favordynmods` option at start
    /// (cheap cgroup migrations; a global kernel setting).
    pub cgroup_favordynmods: FavorDynmodsMode,
}

/// `server.cgroup_favordynmods`: may fnhost remount the host's cgroup2
/// filesystem with `favordynmods`, which spares every cold start, on-demand
/// clone and wake-up a wait for an RCU grace period in the kernel's cgroup
/// migration lock (see docs/operations.md)?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FavorDynmodsMode {
    /// Set it; if the remount is refused (e.g. a read-only cgroupfs in a
    /// container), log a warning and go on without it.
    Auto,
    /// Set it, or refuse to start.
    On,
    /// Never touch the host's setting.
    Keep,
}

impl FavorDynmodsMode {
    pub const ALL: [FavorDynmodsMode; 3] = [Self::Auto, Self::On, Self::Keep];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Keep => "keep",
        }
    }

    pub fn from_toml(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

/// Default of `server.function_metrics_max`.
pub const DEFAULT_FUNCTION_METRICS_MAX: usize = 50;

/// What a client may hold of the daemon: connections, time, buffered bytes,
/// background invocations. Each bound keeps one client from starving others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// From the moment a connection waits for a request (just opened, or its
    /// previous response sent) until that request's headers are complete:
    /// slow senders and idle keep-alive connections are closed after it.
    pub header_timeout_ms: u64,
    /// How long a request body may take to arrive, once its headers have.
    pub body_timeout_ms: u64,
    /// Open connections on the invoke listener; more wait in the kernel's
    /// accept queue until one closes.
    pub max_connections: usize,
    /// Request bodies held in memory at once (being received or waiting for
    /// their invocation to end), MiB; beyond it requests get 503.
    pub max_payload_memory_mb: u64,
    /// Accepted `Event` (asynchronous) invocations not yet finished; beyond
    /// it new ones get 429.
    pub max_async_invocations: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 4096,
            max_payload_memory_mb: 512,
            max_async_invocations: 1000,
        }
    }
}

/// Host ids of one function's range: ids 0..USERNS_SIZE of its zygotes'
/// user namespace (root is init's, 1000 the runtime's; the layers belong to
/// none of them).
pub const USERNS_SIZE: u32 = 1024;

/// Default number of per-function id ranges: 64 Mi host ids from the base,
/// which stays below 2^31 and below systemd's reserved ranges.
pub const DEFAULT_USERNS_RANGES: u32 = 65536;

/// Default first host id of the sandboxes' range: above what `useradd`
/// delegates in /etc/subuid (100000..600100000 by default) and what systemd
/// gives containers (524288..1879048191), below the sign bit.
pub const DEFAULT_USERNS_HOST_BASE: u32 = 2_000_000_000;

/// `server.admin_listen`: `"IP:PORT"`, `"unix:/path"` or `"off"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Off,
}

impl AdminListen {
    /// True when only this machine can reach it without a token.
    pub fn is_local(&self) -> bool {
        match self {
            AdminListen::Tcp(addr) => addr.ip().is_loopback(),
            AdminListen::Unix(_) | AdminListen::Off => true,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            state_dir: PathBuf::from("/var/lib/fnhost"),
            cgroup_root: "fnhost".to_owned(),
            max_payload_bytes: 6 * 1024 * 1024,
            max_response_bytes: 6 * 1024 * 1024,
            admin_listen: AdminListen::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 8081))),
            admin_token: None,
            memory_budget_mb: 0,
            user_namespace: true,
            userns_host_base: DEFAULT_USERNS_HOST_BASE,
            userns_ranges: DEFAULT_USERNS_RANGES,
            shutdown_grace_ms: 10_000,
            http: HttpLimits::default(),
            control_plane: Default::default(),
            function_metrics_max: DEFAULT_FUNCTION_METRICS_MAX,
            cgroup_favordynmods: FavorDynmodsMode::Auto,
        }
    }
}

/// One `[[functions]]` entry, with `[defaults]` and built-in defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    /// URL path segment; `[a-z0-9][a-z0-9_-]{0,62}`, unique.
    pub name: String,
    pub runtime: Runtime,
    /// Absolute, canonical path of an existing directory, mounted at `/var/task`.
    pub code: PathBuf,
    /// python3: `module.function` (module may be dotted); nodejs:
    /// `file.function` (file may have `/` segments, no extension) inside the
    /// code directory; empty for the other runtimes.
    pub handler: String,
    /// exec and rust: the program (absolute path inside the root, e.g.
    /// `/var/task/fn`) and its arguments; empty for python3.
    pub command: Vec<String>,
    /// Imported image (`name:tag`, see `fnhost image import`) whose layers
    /// make the root; `None` = the built-in host layer. Only the syntax is
    /// checked here: the host reports an image missing from the store.
    pub image: Option<String>,
    /// The python3 runtime's interpreter inside the sandbox root; absolute.
    pub python: PathBuf,
    /// The nodejs runtime's interpreter inside the sandbox root; absolute
    /// (an image from the official node images has `/usr/local/bin/node`).
    pub node: PathBuf,
    /// Seccomp profile: "default", "unconfined", or an absolute path of a
    /// profile file inside the sandbox root.
    pub seccomp: String,
    pub limits: Limits,
    pub pool: PoolSettings,
    pub network: NetworkMode,
    /// Extra environment of the handler process.
    pub env: BTreeMap<String, String>,
    /// Keep this function's metrics labelled with its name even when the
    /// host has more functions than `server.function_metrics_max` (where
    /// the others are summed): the opt-in for the functions an operator
    /// watches on a dense host.
    pub detailed_metrics: bool,
}

/// Default node interpreter inside the sandbox root (key `node`).
pub const DEFAULT_NODE: &str = "/usr/bin/node";

/// Default interpreter inside the sandbox root (key `python`).
pub const DEFAULT_PYTHON: &str = "/usr/bin/python3";

/// Resource limits of each sandbox of a function.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Memory limit (cgroup), MiB.
    pub memory_mb: u64,
    /// CPU quota in CPUs (0.5 = half a core).
    pub cpu: f64,
    /// Max processes/threads.
    pub pids: u64,
    /// Handler deadline; the sandbox is killed past it.
    pub timeout_ms: u64,
    /// Size cap of the private writable layer, MiB.
    pub writable_layer_mb: u64,
}

impl Limits {
    /// `memory_mb` in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mb * 1024 * 1024
    }

    /// `writable_layer_mb` in bytes.
    pub fn writable_layer_bytes(&self) -> u64 {
        self.writable_layer_mb * 1024 * 1024
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: 128,
            cpu: 1.0,
            pids: 64,
            timeout_ms: 3000,
            writable_layer_mb: 64,
        }
    }
}

/// Warm-pool sizing and admission of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Warm zygotes kept; 0 = scale to zero.
    pub zygotes: u32,
    /// Pre-forked clones kept ready; 0 = clone on request.
    pub ready_clones: u32,
    /// In-flight invocations; more wait in a queue.
    pub max_concurrency: u32,
    /// How long a request may wait for a slot before 429.
    pub queue_timeout_ms: u64,
    /// How long a zygote above `zygotes` (started on demand) may stay idle
    /// before it is stopped; 0 = stop it as soon as its sandboxes are done.
    pub idle_ttl_ms: u64,
    /// Most zygotes of this function: above `zygotes`, more are started
    /// while demand drains the ready clones faster than they are refilled.
    pub max_instances: u32,
    /// Start the warm zygotes and ready clones at startup (and reload)
    /// rather than on the first request.
    pub prewarm: bool,
    /// Most clones the background refill creates at once.
    pub burst: u32,
    /// Idle time after which a warm zygote hibernates (its ready clones
    /// are stopped and its memory released); 0 = never.
    pub hibernate_after_ms: u64,
    /// How a zygote hibernates.
    pub hibernate_mode: HibernateMode,
    /// On wake-up, start readahead of the snapshot's data
    /// (`POSIX_FADV_WILLNEED`), for when the kernel reclaimed its page
    /// cache. Off by default: measured slower while the cache is there.
    pub hibernate_prefetch: bool,
    /// Ready clones a hibernated function keeps (at most `ready_clones`),
    /// forked from its zygote once the snapshot is mapped back: its next
    /// request is served at warm speed. 0: the zygote sleeps until a
    /// request wakes it and makes its clone (snapshot mode only).
    pub hibernate_ready_clones: u32,
    /// Zygotes of identical code share the identical pages of their
    /// snapshots (one page cache page for the group) instead of each
    /// holding its own copy. For that they start with the same address
    /// layout (no ASLR between them) and, for Python, the same hash seed
    /// (random per daemon start): a security trade-off, off by default.
    /// Snapshot mode only.
    pub hibernate_share_pages: bool,
}

/// How an idle zygote gives its memory back (TOML `hibernate_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HibernateMode {
    /// `"snapshot"`: private memory written to a snapshot file under the
    /// state directory and dropped; restored through userfaultfd on wake-up.
    Snapshot,
    /// `"reclaim"`: ask the kernel to reclaim the zygote cgroup's memory
    /// (`memory.reclaim` on cgroup v2, `memory.force_empty` on v1). Without
    /// swap only page cache goes.
    Reclaim,
}

impl HibernateMode {
    pub const ALL: [HibernateMode; 2] = [HibernateMode::Snapshot, HibernateMode::Reclaim];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Reclaim => "reclaim",
        }
    }

    pub fn from_toml(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl PoolSettings {
    /// Ready clones kept while hibernated: `hibernate_ready_clones`, at most
    /// `ready_clones`, none in reclaim mode (its zygote keeps its memory).
    pub fn ready_clones_asleep(&self) -> u32 {
        match self.hibernate_mode {
            HibernateMode::Snapshot => self.hibernate_ready_clones.min(self.ready_clones),
            HibernateMode::Reclaim => 0,
        }
    }

    /// Whether zygotes share snapshot pages with others of identical code:
    /// `hibernate_share_pages`, in snapshot mode only.
    pub fn shares_snapshot_pages(&self) -> bool {
        self.hibernate_share_pages && self.hibernate_mode == HibernateMode::Snapshot
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            zygotes: 1,
            ready_clones: 2,
            max_concurrency: 32,
            queue_timeout_ms: 1000,
            idle_ttl_ms: 0,
            max_instances: 4,
            prewarm: true,
            burst: 4,
            hibernate_after_ms: 0,
            hibernate_mode: HibernateMode::Snapshot,
            hibernate_prefetch: false,
            hibernate_ready_clones: 1,
            hibernate_share_pages: false,
        }
    }
}

/// Language runtime of a function (TOML `runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `"python3"`: the Lambda handler contract, `handler(event, context)`.
    Python3,
    /// `"exec"`: any executable, run per invocation; request on stdin,
    /// response on stdout, non-zero exit = function error.
    Exec,
    /// `"rust"`: a native binary built with fnhost-sdk; its `main` becomes
    /// the zygote.
    Rust,
    /// `"nodejs"`: the Lambda Node.js handler contract,
    /// `exports.handler = async (event, context)` (CommonJS or ESM).
    Nodejs,
}

impl Runtime {
    /// Every runtime, for error messages.
    pub const ALL: &'static [Runtime] = &[
        Runtime::Python3,
        Runtime::Exec,
        Runtime::Rust,
        Runtime::Nodejs,
    ];

    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Python3 => "python3",
            Runtime::Exec => "exec",
            Runtime::Rust => "rust",
            Runtime::Nodejs => "nodejs",
        }
    }

    pub(crate) fn from_toml(value: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.as_str() == value)
    }
}

/// Network of a sandbox (TOML `network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// `"none"`: every invocation gets a network namespace of its own with
    /// loopback only; nothing one invocation listens on is reachable from
    /// another.
    #[default]
    None,
    /// `"shared-loopback"`: an opt-out for functions that need every
    /// microsecond of an on-demand clone: concurrent invocations of the
    /// function share their zygote's loopback-only namespace (and can reach
    /// what another one listens on).
    SharedLoopback,
}

impl NetworkMode {
    /// Every mode, for error messages.
    pub const ALL: &'static [NetworkMode] = &[NetworkMode::None, NetworkMode::SharedLoopback];

    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::SharedLoopback => "shared-loopback",
        }
    }

    pub(crate) fn from_toml(value: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|m| m.as_str() == value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_conversions() {
        let limits = Limits {
            memory_mb: 128,
            writable_layer_mb: 3,
            ..Limits::default()
        };
        assert_eq!(limits.memory_bytes(), 134_217_728);
        assert_eq!(limits.writable_layer_bytes(), 3 * 1_048_576);
    }

    #[test]
    fn toml_spellings_round_trip() {
        for runtime in Runtime::ALL {
            assert_eq!(Runtime::from_toml(runtime.as_str()), Some(*runtime));
        }
        for mode in NetworkMode::ALL {
            assert_eq!(NetworkMode::from_toml(mode.as_str()), Some(*mode));
        }
        assert_eq!(Runtime::from_toml("python2"), None);
        assert_eq!(NetworkMode::from_toml("host"), None);
    }
}
