//! The `nodejs` runtime: node runs fnhost's JavaScript shim, which loads
//! the handler module, loads the native shim library as an N-API addon and
//! becomes the fork server; each clone runs one Lambda-style handler.
//!
//! Node is not single-threaded, so its zygote forks with node's own idle
//! threads present (see [`NODE_THREADS`] and docs/runtimes.md).

use std::collections::BTreeMap;

use fnhost_config::FunctionSpec;

use super::{FileContents, RuntimeFile, ZygoteRuntime};
use crate::spec::RuntimeEntry;
use crate::SHIM_LIB_PATH;

/// The Node.js runtime shim, installed at [`NODE_SHIM_PATH`] in every root.
pub const NODE_SHIM: &str = include_str!("../../node/fnhost_shim.js");
/// Where the runtime layer puts the Node.js shim inside a root.
pub const NODE_SHIM_PATH: &str = "/.fnhost/runtime/fnhost_shim.js";

/// Threads a node zygote has when it forks, all node's own, started before
/// any function code and idle from then on:
/// 1. the main thread (the one that forks);
/// 2. one V8 platform worker (`--v8-pool-size=1`), which never gets work:
///    `--single-threaded` turns off every V8 background task (concurrent
///    marking, sweeping, compilation), so nothing waits for it in a clone;
/// 3. the platform's delayed-task scheduler, idle in `epoll_wait` on a
///    loop of its own (it only serves delayed worker tasks, of which there
///    are none);
/// 4. the inspector's SIGUSR1 watchdog, parked on a semaphore.
///
/// None of them holds a lock while parked, so the clone (which has only
/// the main thread) finds every lock free. libuv's threadpool is not among
/// them: it starts on first use, and must start in the clone, not in the
/// zygote (async fs, crypto, zlib or dns at import time start it; the
/// zygote is then refused).
pub const NODE_THREADS: u64 = 4;

const FILES: &[RuntimeFile] = &[
    RuntimeFile {
        path: NODE_SHIM_PATH,
        contents: FileContents::Text(NODE_SHIM),
        mode: 0o644,
    },
    RuntimeFile {
        path: SHIM_LIB_PATH,
        contents: FileContents::ShimLib,
        mode: 0o755,
    },
];

pub(super) struct Node;

impl ZygoteRuntime for Node {
    fn entry(&self) -> RuntimeEntry {
        RuntimeEntry::Exec
    }

    fn argv(&self, spec: &FunctionSpec) -> Vec<String> {
        vec![
            spec.node.display().to_string(),
            // No V8 background threads: a clone has none to hand work to.
            "--single-threaded".into(),
            "--v8-pool-size=1".into(),
            // require() of an ES module is synchronous in node 20.19+, but
            // still flagged experimental; its warning is noise per zygote.
            "--disable-warning=ExperimentalWarning".into(),
            NODE_SHIM_PATH.into(),
        ]
    }

    fn add_env(&self, spec: &FunctionSpec, env: &mut BTreeMap<String, String>) {
        // Read and removed by the shim before the handler is loaded.
        env.insert("FNHOST_HANDLER".into(), spec.handler.clone());
        env.insert("FNHOST_SHIM_LIB".into(), SHIM_LIB_PATH.into());
    }

    fn files(&self) -> &'static [RuntimeFile] {
        FILES
    }

    fn threads(&self) -> u64 {
        NODE_THREADS
    }
}
