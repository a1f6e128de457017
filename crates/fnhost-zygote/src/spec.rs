//! What the daemon tells a zygote's init: which layers make its root, what
//! to bind, and which runtime command to start with which environment.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use fnhost_sandbox::mount::Bind;

use crate::settings::ZygoteSettings;

/// How init starts a zygote's runtime.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeEntry {
    /// Exec `argv`: a program that becomes the fork server itself (the
    /// Python shim, a Rust function built with fnhost-sdk).
    #[default]
    Exec,
    /// Fork fnhost's built-in fork server (no exec; see [`crate::exec`]),
    /// which runs `argv` once per invocation: the exec runtime.
    CommandPerInvocation,
}

/// Everything the init of one zygote needs (passed as JSON in [`crate::protocol::SPEC_ENV`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZygoteSpec {
    pub function: String,
    /// Empty host directory where the root is assembled.
    pub staging: PathBuf,
    /// Overlay lower dirs, topmost first.
    pub layers: Vec<PathBuf>,
    pub binds: Vec<Bind>,
    /// Size of the zygote's /tmp (import-time scratch space, unmounted once
    /// the function is imported), bytes.
    pub tmp_bytes: u64,
    pub hostname: String,
    /// Runtime command (argv[0] is an absolute path inside the root).
    pub argv: Vec<String>,
    /// What `argv` is: the runtime to exec, or the command each invocation runs.
    #[serde(default)]
    pub entry: RuntimeEntry,
    pub env: Vec<(String, String)>,
    /// Working directory of the runtime inside the root.
    pub cwd: PathBuf,
    /// uid and gid (in the zygote's namespace) init switches the runtime to
    /// before it starts: the function's import-time code never runs as
    /// root, with capabilities, or without seccomp.
    pub runtime_ids: (u32, u32),
    /// Set when the function shares snapshot pages with zygotes of
    /// identical code (`hibernate_share_pages`): the group, named by a hash
    /// of what determines the runtime's memory (command, layers, binds,
    /// working directory). Init then starts the runtime without ASLR.
    #[serde(default)]
    pub share_group: Option<u64>,
    /// fnhost's settings (seccomp, response limit): typed, never in `env`.
    #[serde(default)]
    pub settings: ZygoteSettings,
    /// The runtime layer holds `fnhost-reaper` at
    /// [`crate::reap::REAPER_PATH`]: init executes it once the runtime
    /// runs, instead of staying resident as the whole fnhost binary.
    #[serde(default)]
    pub reaper: bool,
}

impl ZygoteSpec {
    /// Absolute paths inside the root that are separate mounts a clone must
    /// carry into its own root: the host binds and /dev.
    pub fn clone_carry(&self) -> Vec<String> {
        let mut carry: Vec<String> = self
            .binds
            .iter()
            .map(|b| format!("/{}", b.target.display()))
            .collect();
        carry.push("/dev".to_string());
        carry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carry_lists_binds_and_dev() {
        let spec = ZygoteSpec {
            function: "f".into(),
            staging: "/s".into(),
            layers: vec![],
            binds: vec![Bind {
                source: "/usr".into(),
                target: "usr".into(),
            }],
            tmp_bytes: 0,
            hostname: "h".into(),
            argv: vec![],
            entry: RuntimeEntry::Exec,
            env: vec![],
            cwd: "/".into(),
            runtime_ids: (1000, 1000),
            share_group: None,
            reaper: false,
            settings: ZygoteSettings::default(),
        };
        assert_eq!(
            spec.clone_carry(),
            vec!["/usr".to_string(), "/dev".to_string()]
        );
    }
}
