//! cgroup v2 control files: enabling controllers for children, limits,
//! counters.
//!
//! cgroups-rs is not used here: its v2 hierarchy is hardcoded to
//! `/sys/fs/cgroup` (so it cannot address `/sys/fs/cgroup/unified` or a
//! fake), its `create` enables controllers in the hierarchy's root
//! `cgroup.subtree_control` (a cgroup fnhost does not own) and ignores that
//! write's result, and its `cpu.max` setter does a read-modify-write where
//! one write of "quota period" does.

use std::path::Path;

use super::fs::{self, CgroupFs};
use super::{CgroupError, CgroupLimits};

/// The controllers fnhost needs in every v2 cgroup it creates.
pub(crate) const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Checks that `dir` (fnhost's root) received every needed controller from
/// its parent, which fnhost must not change itself.
pub(crate) fn check_controllers_available(dir: &Path) -> Result<(), CgroupError> {
    let available = fs::read(&dir.join("cgroup.controllers"))?;
    let absent = missing(&available);
    if absent.is_empty() {
        Ok(())
    } else {
        Err(CgroupError::ControllersUnavailable {
            path: dir.to_path_buf(),
            missing: absent.join(", "),
        })
    }
}

/// Enables memory, cpu and pids for the children of `dir` (a cgroup fnhost
/// owns), unless already enabled, and checks the result.
pub(crate) fn enable_subtree(fs: &dyn CgroupFs, dir: &Path) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let to_enable = missing(&fs::read(&path)?);
    if to_enable.is_empty() {
        return Ok(());
    }
    let value = to_enable
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    fs.write(&path, &value)
        .map_err(|source| CgroupError::EnableControllers {
            path: path.clone(),
            controllers: value.clone(),
            source,
        })?;
    fs::verify(&path, &value, |actual| missing(actual).is_empty())
}

/// The needed controllers absent from a space-separated list.
fn missing(listed: &str) -> Vec<&'static str> {
    let listed: Vec<&str> = listed.split_whitespace().collect();
    CONTROLLERS
        .into_iter()
        .filter(|c| !listed.contains(c))
        .collect()
}

/// The text for `cpu.max`.
pub(crate) fn cpu_max_value(limits: &CgroupLimits) -> String {
    match limits.cpu_quota_us {
        Some(quota) => format!("{quota} {}", limits.cpu_period_us),
        None => format!("max {}", limits.cpu_period_us),
    }
}

/// Writes and verifies memory.max, memory.swap.max (0, when swap is
/// accounted), cpu.max, cpu.weight (when given) and pids.max.
pub(crate) fn set_limits(
    fs: &dyn CgroupFs,
    dir: &Path,
    limits: &CgroupLimits,
) -> Result<(), CgroupError> {
    let memory = dir.join("memory.max");
    let value = match limits.memory_bytes {
        CgroupLimits::UNLIMITED => "max".to_string(),
        n => n.to_string(),
    };
    fs::write_limit(fs, &memory, &value)?;
    fs::verify(&memory, &value, |a| {
        fs::memory_matches(a, limits.memory_bytes)
    })?;

    let swap = dir.join("memory.swap.max");
    if swap.exists() {
        fs::write_limit(fs, &swap, "0")?;
        fs::verify(&swap, "0", |a| a == "0")?;
    }

    let cpu = dir.join("cpu.max");
    let value = cpu_max_value(limits);
    fs::write_limit(fs, &cpu, &value)?;
    fs::verify(&cpu, &value, |a| {
        a.split_whitespace().eq(value.split_whitespace())
    })?;

    if let Some(weight) = limits.cpu_weight {
        let path = dir.join("cpu.weight");
        let value = weight.to_string();
        fs::write_limit(fs, &path, &value)?;
        fs::verify(&path, &value, |a| a == value)?;
    }

    let pids = dir.join("pids.max");
    let value = fs::pids_value(limits.pids_max);
    fs::write_limit(fs, &pids, &value)?;
    fs::verify(&pids, &value, |a| fs::pids_matches(a, limits.pids_max))
}

/// `oom_kill` of `memory.events`.
pub(crate) fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    fs::read_keyed(&dir.join("memory.events"), "oom_kill")
}

/// `memory.current`.
pub(crate) fn memory_current(dir: &Path) -> Result<u64, CgroupError> {
    fs::read_u64(&dir.join("memory.current"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_formats() {
        let mut l = CgroupLimits::from_cpus(1 << 20, 1.5, 10);
        assert_eq!(cpu_max_value(&l), "150000 100000");
        l.cpu_quota_us = None;
        assert_eq!(cpu_max_value(&l), "max 100000");
    }

    #[test]
    fn missing_controllers() {
        assert!(missing("cpuset cpu io memory hugetlb pids rdma misc").is_empty());
        assert_eq!(missing("cpu io"), vec!["memory", "pids"]);
        assert_eq!(missing(""), vec!["memory", "cpu", "pids"]);
        // "cpuset" must not count as "cpu".
        assert_eq!(missing("cpuset memory pids"), vec!["cpu"]);
    }
}
