//! fnhost zygotes: the container init (PID 1), the fork server that runs
//! inside a zygote's language runtime, the per-clone sandbox setup, and the
//! wire protocol between the daemon, zygotes and clones. Also carries the
//! runtime shims (`python/fnhost_shim.py`, `node/fnhost_shim.js`) the daemon installs in the
//! runtime layer. With feature `daemon`: the daemon's handles on zygotes
//! and clones ([`daemon`]) and the runtimes ([`runtime`]).

pub mod arenas;
pub mod clone_request;
pub mod control;
#[cfg(feature = "daemon")]
pub mod daemon;
pub mod exec;
pub mod forkserver;
pub mod init;
pub mod invocation;
pub mod protocol;
pub mod reap;
pub mod reused_network;
#[cfg(feature = "daemon")]
pub mod runtime;
pub mod settings;
pub mod spec;

/// Where the runtime layer puts the native shim library inside a root.
pub const SHIM_LIB_PATH: &str = "/.fnhost/runtime/libfnhost_shim.so";
/// File name of the native shim library the build produces.
pub const SHIM_LIB_NAME: &str = "libfnhost_shim.so";
