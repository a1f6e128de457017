//! The setup a clone does on itself, right after `clone3`, before any
//! function code runs.
//!
//! The zygote that forks the clone is unprivileged (non-root, no
//! capabilities, `no_new_privs`, seccomp): its import-time code is the
//! function's. Each clone therefore starts in a user namespace no other
//! live clone is in (`CLONE_NEWUSER`, or one an exited clone of the same
//! zygote left, whose id map is written already), where the kernel grants
//! it capabilities over its own namespaces and nothing else, maps its one id, mounts its
//! private writable root, brings up its loopback, drops those capabilities
//! for good and installs the seccomp clone stage. Nothing here can reach
//! the host: the privileged steps of a clone (moving it into its cgroups)
//! are the daemon's, done by pid. Each step goes through the [`Syscall`]
//! seam, so the order and the stop-on-failure are unit-tested without root.

use std::io;
use std::path::PathBuf;
use std::time::Instant;

use crate::caps::{self, CapsError};
use crate::mount::{enter_clone_root, CloneRoot, MountError};
use crate::seccomp::{Filter, SeccompError};
use crate::syscall::Syscall;

/// The ids a clone's function runs as, in the clone's own user namespace,
/// and the zygote's ids they stand for outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloneIds {
    /// uid and gid inside the clone (what the function sees).
    pub inside: (u32, u32),
    /// The zygote's uid and gid (its parent namespace's view).
    pub outside: (u32, u32),
}

/// Everything one clone's setup needs.
#[derive(Debug)]
pub struct ClonePlan<'a> {
    pub ids: CloneIds,
    /// The clone was forked inside a user namespace whose one id map is
    /// written already (a forker's, see the fork server's network
    /// namespace reuse); a map can be written only once.
    pub ids_mapped: bool,
    pub root: CloneRoot,
    /// The clone has a network namespace of its own, whose loopback is
    /// brought up (`false`: it shares its zygote's).
    pub own_network: bool,
    /// The zygote's compiled seccomp filter whose clone stage to install;
    /// `None`: the function runs unconfined.
    pub seccomp: Option<&'a Filter>,
}

impl<'a> ClonePlan<'a> {
    /// The plan of a clone of a zygote. The writable layer's root and its
    /// /tmp belong to the function's user; the layers below show as the
    /// overflow id (they belong to ids the clone's namespace does not map,
    /// so no sandbox can write them even through copy-up).
    pub fn new(
        ids: CloneIds,
        writable_bytes: u64,
        carry: Vec<PathBuf>,
        own_network: bool,
        seccomp: Option<&'a Filter>,
    ) -> ClonePlan<'a> {
        ClonePlan {
            ids,
            ids_mapped: false,
            root: CloneRoot {
                writable_bytes,
                carry,
                owner: Some(ids.inside),
                userxattr: true,
            },
            own_network,
            seccomp,
        }
    }
}

/// Microseconds each step took (reported to the daemon, which records them
/// as clone-phase histograms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloneSetupTimes {
    /// Mapping the clone's ids in its user namespace.
    pub userns_us: u64,
    pub mount_us: u64,
    /// 0 when the clone shares its zygote's network namespace.
    pub network_us: u64,
    pub privileges_us: u64,
    /// 0 when the function runs unconfined.
    pub seccomp_us: u64,
}

/// The step of a clone's setup that failed. Nothing after it ran.
#[derive(Debug, thiserror::Error)]
pub enum CloneSetupError {
    #[error("map ids in the clone's user namespace: {source}")]
    MapIds {
        #[source]
        source: io::Error,
    },
    #[error("mount writable root: {source}")]
    Mount {
        #[source]
        source: MountError,
    },
    #[error("bring up loopback: {source}")]
    Network {
        #[source]
        source: crate::net::NetError,
    },
    #[error("turn transparent huge pages off (PR_SET_THP_DISABLE): {source}")]
    SmallPages {
        #[source]
        source: io::Error,
    },
    #[error("drop privileges: {source}")]
    DropPrivileges {
        #[source]
        source: CapsError,
    },
    #[error("install seccomp filter: {source}")]
    Seccomp {
        #[source]
        source: SeccompError,
    },
}

impl CloneSetupError {
    /// The failed step, as reported to the daemon (`SetupFailure::step`).
    pub fn step(&self) -> &'static str {
        match self {
            CloneSetupError::MapIds { .. } => "map user namespace ids",
            CloneSetupError::Mount { .. } => "mount writable root",
            CloneSetupError::Network { .. } => "bring up loopback",
            CloneSetupError::SmallPages { .. } => "turn huge pages off",
            CloneSetupError::DropPrivileges { .. } => "drop privileges",
            CloneSetupError::Seccomp { .. } => "install seccomp filter",
        }
    }

    /// What went wrong within the step, without the step's name
    /// (`SetupFailure::message`).
    pub fn cause(&self) -> String {
        match self {
            CloneSetupError::MapIds { source } => source.to_string(),
            CloneSetupError::Mount { source } => source.to_string(),
            CloneSetupError::Network { source } => source.to_string(),
            CloneSetupError::SmallPages { source } => source.to_string(),
            CloneSetupError::DropPrivileges { source } => source.to_string(),
            CloneSetupError::Seccomp { source } => source.to_string(),
        }
    }
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// Runs a clone's setup in its security order and stops at the first
/// failing step. Runs in the clone (single-threaded), with the capabilities
/// of its fresh user namespace; on success it has none left.
pub fn set_up_clone(
    sys: &impl Syscall,
    plan: ClonePlan<'_>,
) -> Result<CloneSetupTimes, CloneSetupError> {
    let mut times = CloneSetupTimes::default();

    if !plan.ids_mapped {
        let t = Instant::now();
        sys.map_own_ids(plan.ids.inside, plan.ids.outside)
            .map_err(|source| CloneSetupError::MapIds { source })?;
        times.userns_us = micros(t);
    }

    let t = Instant::now();
    enter_clone_root(sys, &plan.root).map_err(|source| CloneSetupError::Mount { source })?;
    times.mount_us = micros(t);

    if plan.own_network {
        let t = Instant::now();
        sys.bring_up_loopback()
            .map_err(|source| CloneSetupError::Network { source })?;
        times.network_us = micros(t);
    }

    let t = Instant::now();
    // The zygote's heap may sit on huge pages (cheap to fork); the clone's
    // own writes and allocations stay 4 KiB, so a write copies one small
    // page and a fresh allocation never zeroes (or compacts for) 2 MiB.
    sys.keep_small_pages()
        .map_err(|source| CloneSetupError::SmallPages { source })?;
    // The ids are already the function's (the namespace maps only them):
    // what is left to drop is the namespace's capabilities.
    caps::drop_all_privileges(sys, None)
        .map_err(|source| CloneSetupError::DropPrivileges { source })?;
    times.privileges_us = micros(t);

    // Last step before function code: from here on only the profile's
    // syscalls work, minus the setup-only ones.
    if let Some(filter) = plan.seccomp {
        let t = Instant::now();
        sys.install_clone_seccomp(filter)
            .map_err(|source| CloneSetupError::Seccomp { source })?;
        times.seccomp_us = micros(t);
    }
    Ok(times)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Recorder;

    const IDS: CloneIds = CloneIds {
        inside: (1000, 1000),
        outside: (2_000_001_000, 2_000_001_000),
    };

    fn filter() -> Filter {
        Filter::default_for_host().expect("default profile compiles on this host")
    }

    fn plan(seccomp: Option<&Filter>) -> ClonePlan<'_> {
        ClonePlan::new(
            IDS,
            64 << 20,
            vec![PathBuf::from("/usr"), PathBuf::from("/dev")],
            true,
            seccomp,
        )
    }

    /// The phase of each recorded call, in call order, with repeats merged.
    fn phases(calls: &[String]) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for call in calls {
            let phase = match call.split(' ').next().unwrap_or("") {
                "map_ids" => "userns",
                "mount" | "mkdir" | "chown" | "move-root" | "touch" | "symlink" => "mounts",
                "seccomp" => "seccomp",
                "loopback" => "network",
                _ => "privileges",
            };
            if out.last() != Some(&phase) {
                out.push(phase);
            }
        }
        out
    }

    #[test]
    fn order_is_ids_mounts_network_privileges_seccomp() {
        let filter = filter();
        let rec = Recorder::default();
        set_up_clone(&rec, plan(Some(&filter))).unwrap();
        let calls = rec.into_calls();
        assert_eq!(
            phases(&calls),
            ["userns", "mounts", "network", "privileges", "seccomp"],
            "{calls:?}"
        );
        assert_eq!(calls[0], "map_ids 1000:1000 -> 2000001000:2000001000");
        // The clone already has the function's ids: nothing switches them.
        assert!(!calls.iter().any(|c| c.starts_with("set_ids")), "{calls:?}");
        // Mounts end with entering the root; loopback comes up while the
        // clone still may; huge pages go off before any privilege is dropped.
        let pivot = calls
            .iter()
            .position(|c| c.starts_with("move-root"))
            .unwrap();
        assert_eq!(calls[pivot + 1], "loopback up", "{calls:?}");
        assert_eq!(calls[pivot + 2], "thp off", "{calls:?}");
        assert!(calls[pivot + 3].starts_with("capbset_drop"), "{calls:?}");
        assert_eq!(calls.last().unwrap(), "seccomp clone stage");
    }

    #[test]
    fn no_seccomp_call_when_unconfined() {
        let rec = Recorder::default();
        let times = set_up_clone(&rec, plan(None)).unwrap();
        let calls = rec.into_calls();
        assert!(!calls.iter().any(|c| c.starts_with("seccomp")), "{calls:?}");
        assert_eq!(calls.last().unwrap(), "no_new_privs");
        assert_eq!(times.seccomp_us, 0);
    }

    #[test]
    fn root_belongs_to_the_function_user_and_uses_userxattr() {
        let plan = plan(None);
        assert_eq!(plan.root.owner, Some((1000, 1000)));
        assert!(plan.root.userxattr);
    }

    /// Fails the first call matching `needle`; returns the error and every
    /// call made.
    fn fail_at(needle: &'static str) -> (CloneSetupError, Vec<String>) {
        let filter = filter();
        let rec = Recorder::failing_on(needle);
        let err = set_up_clone(&rec, plan(Some(&filter))).unwrap_err();
        (err, rec.into_calls())
    }

    #[test]
    fn id_map_failure_stops_before_any_mount() {
        let (err, calls) = fail_at("map_ids");
        assert_eq!(err.step(), "map user namespace ids");
        assert!(matches!(err, CloneSetupError::MapIds { .. }));
        assert_eq!(calls.len(), 1, "{calls:?}");
    }

    #[test]
    fn huge_page_failure_stops_before_function_code() {
        let (err, calls) = fail_at("thp off");
        assert_eq!(err.step(), "turn huge pages off");
        assert!(
            !calls.iter().any(|c| c.starts_with("capbset_drop")),
            "{calls:?}"
        );
        assert!(!calls.iter().any(|c| c.starts_with("seccomp")), "{calls:?}");
    }

    #[test]
    fn mount_failure_stops_before_privileges() {
        let (err, calls) = fail_at("overlay");
        assert_eq!(err.step(), "mount writable root");
        assert!(
            err.cause().starts_with("mount writable overlay root"),
            "{err}"
        );
        assert!(calls.last().unwrap().contains("overlay"), "{calls:?}");
        assert_eq!(phases(&calls), ["userns", "mounts"]);
    }

    #[test]
    fn loopback_failure_stops_before_privileges_are_dropped() {
        let (err, calls) = fail_at("loopback");
        assert_eq!(err.step(), "bring up loopback");
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("capbset_drop") || c.starts_with("seccomp")),
            "{calls:?}"
        );
    }

    #[test]
    fn a_shared_network_brings_nothing_up() {
        let rec = Recorder::default();
        let mut shared = plan(None);
        shared.own_network = false;
        let times = set_up_clone(&rec, shared).unwrap();
        assert!(!rec.into_calls().iter().any(|c| c.starts_with("loopback")));
        assert_eq!(times.network_us, 0);
    }

    #[test]
    fn a_joined_user_namespace_is_not_mapped_again_but_is_still_isolated() {
        let filter = filter();
        let rec = Recorder::default();
        let mut joined = plan(Some(&filter));
        joined.ids_mapped = true;
        let times = set_up_clone(&rec, joined).unwrap();
        let calls = rec.into_calls();
        assert!(!calls.iter().any(|c| c.starts_with("map_ids")), "{calls:?}");
        assert_eq!(times.userns_us, 0);
        // Everything else still happens, in the same order: the reused
        // namespaces are the user and network ones, never the mounts.
        assert_eq!(
            phases(&calls),
            ["mounts", "network", "privileges", "seccomp"],
            "{calls:?}"
        );
    }

    #[test]
    fn privilege_failure_stops_before_seccomp() {
        let (err, calls) = fail_at("no_new_privs");
        assert_eq!(err.step(), "drop privileges");
        assert!(err.cause().starts_with("cannot set no_new_privs"), "{err}");
        assert_eq!(calls.last().unwrap(), "no_new_privs");
        assert!(!calls.iter().any(|c| c.starts_with("seccomp")));
    }

    #[test]
    fn seccomp_failure_is_named() {
        let (err, calls) = fail_at("seccomp");
        assert_eq!(err.step(), "install seccomp filter");
        assert!(
            err.cause().starts_with("cannot install seccomp filter"),
            "{err}"
        );
        assert_eq!(calls.last().unwrap(), "seccomp clone stage");
    }

    #[test]
    fn message_is_step_then_cause() {
        let (err, _) = fail_at("no_new_privs");
        assert_eq!(err.to_string(), format!("drop privileges: {}", err.cause()));
    }
}
