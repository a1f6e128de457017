//! fnhost zygotes: the container init (PID 1), the fork server that runs
//! inside a zygote's language runtime, the per-clone sandbox setup, and the
//! wire protocol between the daemon, zygotes and clones. Also carries the
//! runtime shims (`python/fnhost_shim.py`) the daemon installs in the
//! runtime layer.

pub mod control;
pub mod exec;
pub mod forkserver;
pub mod init;
pub mod invocation;
pub mod protocol;
pub mod spec;

/// The Python runtime shim, installed at [`PYTHON_SHIM_PATH`] in every root.
pub const PYTHON_SHIM: &str = include_str!("../python/fnhost_shim.py");
/// Where the runtime layer puts the Python shim inside a root.
pub const PYTHON_SHIM_PATH: &str = "/.fnhost/runtime/fnhost_shim.py";
/// Where the runtime layer puts the native shim library inside a root.
pub const SHIM_LIB_PATH: &str = "/.fnhost/runtime/libfnhost_shim.so";
/// File name of the native shim library the build produces.
pub const SHIM_LIB_NAME: &str = "libfnhost_shim.so";
