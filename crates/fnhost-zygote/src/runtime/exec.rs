//! The `exec` runtime: the function's command runs once per invocation
//! under fnhost's built-in fork server (see [`crate::exec`]); it needs
//! nothing in the runtime layer.

use fnhost_config::FunctionSpec;

use super::ZygoteRuntime;
use crate::spec::RuntimeEntry;

pub(super) struct Exec;

impl ZygoteRuntime for Exec {
    fn entry(&self) -> RuntimeEntry {
        RuntimeEntry::CommandPerInvocation
    }

    fn argv(&self, spec: &FunctionSpec) -> Vec<String> {
        spec.command.clone()
    }
}
