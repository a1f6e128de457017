//! The `rust` runtime: the function's binary links fnhost-sdk, whose
//! `main` becomes the fork server itself; it needs nothing in the runtime
//! layer.

use fnhost_config::FunctionSpec;

use super::ZygoteRuntime;
use crate::spec::RuntimeEntry;

pub(super) struct Rust;

impl ZygoteRuntime for Rust {
    fn entry(&self) -> RuntimeEntry {
        RuntimeEntry::Exec
    }

    fn argv(&self, spec: &FunctionSpec) -> Vec<String> {
        spec.command.clone()
    }
}
