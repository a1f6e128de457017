//! The setup a clone does on itself, right after `clone3`, before any
//! function code runs. The order is the security boundary: attach to the v1
//! cgroups, mount the private writable root, drop every privilege, then
//! install the seccomp clone stage. Each step goes through the [`Syscall`]
//! seam, so the order and the stop-on-failure are unit-tested without root.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Instant;

use crate::caps::{self, CapsError};
use crate::mount::{enter_clone_root, CloneRoot, MountError};
use crate::seccomp::{Filter, SeccompError};
use crate::syscall::Syscall;

/// Everything one clone's setup needs.
#[derive(Debug)]
pub struct ClonePlan<'a> {
    /// `cgroup.procs` of each v1 cgroup to join (opened by the daemon).
    pub v1_procs: Vec<OwnedFd>,
    pub root: CloneRoot,
    /// uid and gid the function runs as; `None`: stays uid 0 of its
    /// namespace (still without capabilities).
    pub run_as: Option<(u32, u32)>,
    /// The clone has a network namespace of its own, whose loopback is
    /// brought up (`false`: it shares its zygote's).
    pub own_network: bool,
    /// The zygote's compiled seccomp filter whose clone stage to install;
    /// `None`: the function runs unconfined.
    pub seccomp: Option<&'a Filter>,
}

impl<'a> ClonePlan<'a> {
    /// The plan of a clone of a zygote. The writable layer's root belongs to
    /// the uid the function runs as, so it can write anywhere in `/` (inside
    /// its private overlay); a `run_as` user exists only in a user
    /// namespace, where overlayfs needs `userxattr`.
    pub fn new(
        v1_procs: Vec<OwnedFd>,
        writable_bytes: u64,
        carry: Vec<PathBuf>,
        run_as: Option<(u32, u32)>,
        own_network: bool,
        seccomp: Option<&'a Filter>,
    ) -> ClonePlan<'a> {
        ClonePlan {
            v1_procs,
            root: CloneRoot {
                writable_bytes,
                carry,
                owner: run_as,
                userxattr: run_as.is_some(),
            },
            run_as,
            own_network,
            seccomp,
        }
    }
}

/// Microseconds each step took (reported to the daemon, which records them
/// as clone-phase histograms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloneSetupTimes {
    pub cgroup_us: u64,
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
    #[error("attach to v1 cgroup: {source}")]
    AttachCgroup {
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
            CloneSetupError::AttachCgroup { .. } => "attach to v1 cgroup",
            CloneSetupError::Mount { .. } => "mount writable root",
            CloneSetupError::Network { .. } => "bring up loopback",
            CloneSetupError::DropPrivileges { .. } => "drop privileges",
            CloneSetupError::Seccomp { .. } => "install seccomp filter",
        }
    }

    /// What went wrong within the step, without the step's name
    /// (`SetupFailure::message`).
    pub fn cause(&self) -> String {
        match self {
            CloneSetupError::AttachCgroup { source } => source.to_string(),
            CloneSetupError::Mount { source } => source.to_string(),
            CloneSetupError::Network { source } => source.to_string(),
            CloneSetupError::DropPrivileges { source } => source.to_string(),
            CloneSetupError::Seccomp { source } => source.to_string(),
        }
    }
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// Runs a clone's setup in its security order and stops at the first
/// failing step. Runs in the clone (single-threaded), as uid 0 of its
/// namespaces; on success the clone has no capabilities left.
pub fn set_up_clone(
    sys: &impl Syscall,
    plan: ClonePlan<'_>,
) -> Result<CloneSetupTimes, CloneSetupError> {
    let mut times = CloneSetupTimes::default();

    let t = Instant::now();
    for procs in plan.v1_procs {
        sys.attach_v1_cgroup(procs)
            .map_err(|source| CloneSetupError::AttachCgroup { source })?;
    }
    times.cgroup_us = micros(t);

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
    caps::drop_all_privileges(sys, plan.run_as)
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

    fn procs() -> OwnedFd {
        std::fs::File::open("/dev/null")
            .expect("open /dev/null")
            .into()
    }

    fn filter() -> Filter {
        Filter::default_for_host().expect("default profile compiles on this host")
    }

    fn plan(seccomp: Option<&Filter>) -> ClonePlan<'_> {
        ClonePlan::new(
            vec![procs(), procs()],
            64 << 20,
            vec![PathBuf::from("/usr"), PathBuf::from("/dev")],
            Some((1000, 1000)),
            true,
            seccomp,
        )
    }

    /// The phase of each recorded call, in call order, with repeats merged.
    fn phases(calls: &[String]) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        for call in calls {
            let phase = match call.split(' ').next().unwrap_or("") {
                "cgroup.procs" => "cgroup",
                "mount" | "mkdir" | "chown" | "pivot" | "touch" | "symlink" => "mounts",
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
    fn order_is_cgroup_mounts_privileges_seccomp() {
        let filter = filter();
        let rec = Recorder::default();
        set_up_clone(&rec, plan(Some(&filter))).unwrap();
        let calls = rec.into_calls();
        assert_eq!(
            phases(&calls),
            ["cgroup", "mounts", "network", "privileges", "seccomp"],
            "{calls:?}"
        );
        assert_eq!(
            calls
                .iter()
                .filter(|c| c.starts_with("cgroup.procs"))
                .count(),
            2,
            "every v1 cgroup is joined"
        );
        // Mounts end with the pivot; loopback comes up while the clone
        // still may, before any privilege is dropped.
        let pivot = calls.iter().position(|c| c.starts_with("pivot")).unwrap();
        assert_eq!(calls[pivot + 1], "loopback up", "{calls:?}");
        assert!(calls[pivot + 2].starts_with("capbset_drop"), "{calls:?}");
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
        let as_root = ClonePlan::new(Vec::new(), 1, Vec::new(), None, false, None);
        assert_eq!(as_root.root.owner, None);
        assert!(!as_root.root.userxattr);
        let rec = Recorder::default();
        set_up_clone(&rec, as_root).unwrap();
        let calls = rec.into_calls();
        assert!(!calls
            .iter()
            .any(|c| c.starts_with("chown") || c.starts_with("set_ids")));
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
    fn cgroup_failure_stops_before_any_mount() {
        let (err, calls) = fail_at("cgroup.procs");
        assert_eq!(err.step(), "attach to v1 cgroup");
        assert!(matches!(err, CloneSetupError::AttachCgroup { .. }));
        assert_eq!(calls.len(), 1, "the second cgroup is not joined: {calls:?}");
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
        assert_eq!(phases(&calls), ["cgroup", "mounts"]);
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
