//! fnhost's own settings of one zygote, typed: the seccomp choice and the
//! response limit. They reach the fork server as the first control message
//! ([`crate::protocol::DaemonMessage::Configure`]) and the exec runtime in
//! its spec; never through the environment, so function code never sees them.

use std::path::PathBuf;

use fnhost_sandbox::seccomp::{self, Filter, Profile, SeccompError};
use serde::{Deserialize, Serialize};

/// Response limit when none is configured (the config default).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 6 << 20;

/// Which seccomp profile a zygote and its clones run under.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SeccompChoice {
    /// fnhost's built-in profile.
    #[default]
    Default,
    /// No filter at all.
    Unconfined,
    /// A profile file, by its absolute path inside the zygote's root.
    Profile(PathBuf),
}

impl SeccompChoice {
    /// The choice a function's `seccomp` key names: `"default"` (or empty),
    /// `"unconfined"`, or an absolute path (the config validates it).
    pub fn from_config(value: &str) -> SeccompChoice {
        match value {
            "" | "default" => SeccompChoice::Default,
            "unconfined" => SeccompChoice::Unconfined,
            path => SeccompChoice::Profile(PathBuf::from(path)),
        }
    }

    /// Compiles the chosen profile for this host; `None` means unconfined.
    /// Runs inside the zygote (a profile path is read in its root).
    pub fn compile(&self) -> Result<Option<Filter>, SettingsError> {
        let profile = match self {
            SeccompChoice::Default => Profile::default_profile(),
            SeccompChoice::Unconfined => return Ok(None),
            SeccompChoice::Profile(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SettingsError::ReadProfile {
                        path: path.clone(),
                        source,
                    })?;
                Profile::parse(&text).map_err(|source| SettingsError::ParseProfile {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let arch = seccomp::host_arch().map_err(SettingsError::Seccomp)?;
        profile
            .compile(arch)
            .map(Some)
            .map_err(SettingsError::Seccomp)
    }
}

/// fnhost's settings of one zygote. Part of its [`crate::spec::ZygoteSpec`];
/// the daemon also sends them to the fork server once, before `Ready`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZygoteSettings {
    pub seccomp: SeccompChoice,
    /// Largest response a function may return, bytes (the exec runtime
    /// stops reading the command's stdout past it).
    pub max_response_bytes: usize,
    /// Each clone gets a network namespace of its own (loopback only);
    /// `false` (`network = "shared-loopback"`): clones share the zygote's.
    #[serde(default = "own_network_by_default")]
    pub own_network: bool,
    /// Threads the runtime itself may have when it forks: 1, except node,
    /// whose own idle threads are allowed (see `runtime::node`). Checked
    /// by the fork server and again by the daemon at `Ready`.
    #[serde(default = "one_thread")]
    pub runtime_threads: u64,
}

fn own_network_by_default() -> bool {
    true
}

fn one_thread() -> u64 {
    1
}

impl Default for ZygoteSettings {
    fn default() -> Self {
        ZygoteSettings {
            seccomp: SeccompChoice::Default,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            own_network: true,
            runtime_threads: 1,
        }
    }
}

/// Why a zygote's settings cannot be applied. The text reaches users as
/// the message of an init failure.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read seccomp profile {}: {source}", path.display())]
    ReadProfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    ParseProfile {
        path: PathBuf,
        #[source]
        source: SeccompError,
    },
    /// Host architecture, compilation or installation of the filter.
    #[error(transparent)]
    Seccomp(SeccompError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_map_to_choices() {
        assert_eq!(SeccompChoice::from_config(""), SeccompChoice::Default);
        assert_eq!(
            SeccompChoice::from_config("default"),
            SeccompChoice::Default
        );
        assert_eq!(
            SeccompChoice::from_config("unconfined"),
            SeccompChoice::Unconfined
        );
        assert_eq!(
            SeccompChoice::from_config("/etc/p.json"),
            SeccompChoice::Profile("/etc/p.json".into())
        );
    }

    #[test]
    fn unconfined_compiles_to_no_filter() {
        assert!(SeccompChoice::Unconfined.compile().unwrap().is_none());
    }

    #[test]
    fn unreadable_profile_names_its_path() {
        let err = SeccompChoice::Profile("/nonexistent/p.json".into())
            .compile()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read seccomp profile /nonexistent/p.json: "),
            "{err}"
        );
    }

    #[test]
    fn settings_round_trip_as_json() {
        let settings = ZygoteSettings {
            seccomp: SeccompChoice::Profile("/p.json".into()),
            max_response_bytes: 1024,
            own_network: false,
            runtime_threads: 4,
        };
        let json = serde_json::to_string(&settings).unwrap();
        assert_eq!(
            serde_json::from_str::<ZygoteSettings>(&json).unwrap(),
            settings
        );
    }
}
