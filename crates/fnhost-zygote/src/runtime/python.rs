//! The `python3` runtime: the interpreter runs fnhost's Python shim, which
//! imports the handler, loads the native shim library and becomes the fork
//! server; each clone runs one Lambda-style `handler(event, context)`.

use std::collections::BTreeMap;

use fnhost_config::FunctionSpec;

use super::{FileContents, RuntimeFile, ZygoteRuntime};
use crate::spec::RuntimeEntry;
use crate::SHIM_LIB_PATH;

/// The Python runtime shim, installed at [`PYTHON_SHIM_PATH`] in every root.
pub const PYTHON_SHIM: &str = include_str!("../../python/fnhost_shim.py");
/// Where the runtime layer puts the Python shim inside a root.
pub const PYTHON_SHIM_PATH: &str = "/.fnhost/runtime/fnhost_shim.py";

const FILES: &[RuntimeFile] = &[
    RuntimeFile {
        path: PYTHON_SHIM_PATH,
        contents: FileContents::Text(PYTHON_SHIM),
        mode: 0o644,
    },
    RuntimeFile {
        path: SHIM_LIB_PATH,
        contents: FileContents::ShimLib,
        mode: 0o755,
    },
];

pub(super) struct Python;

impl ZygoteRuntime for Python {
    fn entry(&self) -> RuntimeEntry {
        RuntimeEntry::Exec
    }

    fn argv(&self, spec: &FunctionSpec) -> Vec<String> {
        vec![
            spec.python.display().to_string(),
            "-s".into(),
            "-B".into(),
            PYTHON_SHIM_PATH.into(),
        ]
    }

    fn add_env(&self, spec: &FunctionSpec, env: &mut BTreeMap<String, String>) {
        for (k, v) in [("PYTHONUNBUFFERED", "1"), ("PYTHONDONTWRITEBYTECODE", "1")] {
            env.entry(k.into()).or_insert_with(|| v.into());
        }
        // Read and removed by the shim before the handler is imported.
        env.insert("FNHOST_HANDLER".into(), spec.handler.clone());
        env.insert("FNHOST_SHIM_LIB".into(), SHIM_LIB_PATH.into());
    }

    fn files(&self) -> &'static [RuntimeFile] {
        FILES
    }
}
