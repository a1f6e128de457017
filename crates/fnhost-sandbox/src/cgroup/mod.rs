//! cgroups for sandboxes: detecting the host's layout (pure v2, hybrid, pure
//! v1), keeping fnhost's own subtree (`<root>/<function>.zygote`,
//! `<root>/<function>.s<N>`, see [`names`]) in
//! every hierarchy, setting and verifying limits, and cleaning up after a
//! previous run. Nothing outside `<root>` is ever created, written or removed.

#![forbid(unsafe_code)]

mod detect;
pub mod favordynmods;
mod fs;
mod group;
pub mod names;
mod tree;
mod v1;
mod v2;

#[cfg(test)]
mod fake;

use std::io;
use std::path::PathBuf;

pub use detect::{CgroupLayout, V1Mounts};
pub use group::Cgroup;
pub use tree::{CgroupTree, StaleReport};

/// Resource limits of one cgroup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgroupLimits {
    /// Hard memory limit in bytes ([`CgroupLimits::UNLIMITED`] for none).
    /// The kernel rounds it down to a whole page.
    pub memory_bytes: u64,
    /// CPU time allowed per period, in microseconds (`None`: no limit).
    pub cpu_quota_us: Option<u64>,
    /// CFS period in microseconds (1000..=1_000_000).
    pub cpu_period_us: u64,
    /// Maximum number of tasks ([`CgroupLimits::UNLIMITED`] for "max").
    pub pids_max: u64,
    /// Share of the CPU under contention, relative to siblings: cgroup v2
    /// `cpu.weight` (1..=10000, the kernel's default 100), on v1
    /// `cpu.shares` = weight × 1024 / 100. `None`: the kernel's default.
    pub cpu_weight: Option<u16>,
}

impl CgroupLimits {
    /// Value of `memory_bytes` or `pids_max` meaning "no limit".
    pub const UNLIMITED: u64 = u64::MAX;
    /// The period [`CgroupLimits::from_cpus`] uses.
    pub const DEFAULT_PERIOD_US: u64 = 100_000;
    /// Smallest quota the kernel accepts.
    pub const MIN_QUOTA_US: u64 = 1_000;

    /// v1 `cpu.shares` for a v2 `cpu.weight` (the kernel's defaults, 1024
    /// and 100, correspond); at least 2, the v1 minimum.
    pub fn v1_shares(weight: u16) -> u64 {
        (u64::from(weight) * 1024 / 100).max(2)
    }

    /// Limits with a 100 ms period and `cpus * period` of quota. A `cpus`
    /// that is not a positive finite number means no CPU limit; tiny
    /// fractions are raised to the kernel's 1 ms minimum quota.
    pub fn from_cpus(memory_bytes: u64, cpus: f64, pids_max: u64) -> Self {
        let period = Self::DEFAULT_PERIOD_US;
        let cpu_quota_us = (cpus.is_finite() && cpus > 0.0)
            .then(|| ((cpus * period as f64).round() as u64).max(Self::MIN_QUOTA_US));
        CgroupLimits {
            memory_bytes,
            cpu_quota_us,
            cpu_period_us: period,
            pids_max,
            cpu_weight: None,
        }
    }
}

/// Everything that can go wrong with cgroups, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read /proc/self/mountinfo: {source}")]
    ReadMountinfo { source: io::Error },
    #[error(
        "cannot remount the cgroup2 filesystem at {path} with favordynmods: {source} \
         (set server.cgroup_favordynmods = \"keep\" to leave the host's setting alone, or \
         \"auto\" to go on without it)"
    )]
    FavorDynmods { path: PathBuf, source: io::Error },
    #[error("unsupported cgroup layout: {reason}")]
    UnsupportedLayout { reason: String },
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error(
        "cannot create cgroup {path}: {source} (is fnhost running as root with cgroups delegated?)"
    )]
    Create { path: PathBuf, source: io::Error },
    #[error(
        "controllers {missing} are not available in {path}; enable them in the parent's \
         cgroup.subtree_control (fnhost never modifies cgroups it did not create)"
    )]
    ControllersUnavailable { path: PathBuf, missing: String },
    #[error("cannot enable controllers {controllers} in {path}: {source}")]
    EnableControllers {
        path: PathBuf,
        controllers: String,
        source: io::Error,
    },
    #[error("cannot write {value:?} to {path}: {source} (check the configured limit)")]
    WriteLimit {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error(
        "limit not applied: wrote {expected:?} to {path} but it reads back {actual:?} \
         (is the controller enabled for this cgroup?)"
    )]
    VerifyLimit {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("unexpected content in {path}: {content:?}")]
    Parse { path: PathBuf, content: String },
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot move pid {pid} into {path}: {source}")]
    Attach {
        pid: i32,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot kill the processes of {path}: {source}")]
    Kill { path: PathBuf, source: io::Error },
    #[error("cannot list cgroups under {path}: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error(
        "processes {pids:?} are still in {path} 2s after SIGKILL; \
         they may be stuck in uninterruptible sleep"
    )]
    StillPopulated { path: PathBuf, pids: Vec<i32> },
    #[error("fnhost's own process is inside {path}; refusing to kill it (move fnhost out of its cgroup root)")]
    SelfInside { path: PathBuf },
    #[error("cannot remove cgroup {path}: {source} (is a process or child cgroup still inside?)")]
    Remove { path: PathBuf, source: io::Error },
}

impl CgroupError {
    /// Whether the cgroup read was already gone (removed meanwhile).
    pub fn is_not_found(&self) -> bool {
        matches!(self, CgroupError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_cpus_computes_quota() {
        let l = CgroupLimits::from_cpus(64 << 20, 0.5, 32);
        assert_eq!(l.cpu_period_us, 100_000);
        assert_eq!(l.cpu_quota_us, Some(50_000));
        assert_eq!(l.memory_bytes, 64 << 20);
        assert_eq!(l.pids_max, 32);
        assert_eq!(
            CgroupLimits::from_cpus(1, 2.0, 1).cpu_quota_us,
            Some(200_000)
        );
    }

    #[test]
    fn from_cpus_edge_cases() {
        assert_eq!(CgroupLimits::from_cpus(1, 0.0, 1).cpu_quota_us, None);
        assert_eq!(CgroupLimits::from_cpus(1, -1.0, 1).cpu_quota_us, None);
        assert_eq!(CgroupLimits::from_cpus(1, f64::NAN, 1).cpu_quota_us, None);
        assert_eq!(
            CgroupLimits::from_cpus(1, f64::INFINITY, 1).cpu_quota_us,
            None
        );
        assert_eq!(
            CgroupLimits::from_cpus(1, 0.001, 1).cpu_quota_us,
            Some(1_000)
        );
    }

    #[test]
    fn error_messages_say_what_to_change() {
        let e = CgroupError::Create {
            path: "/sys/fs/cgroup/fnhost".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot create cgroup /sys/fs/cgroup/fnhost"),
            "{msg}"
        );
        assert!(msg.contains("running as root"), "{msg}");
    }
}
