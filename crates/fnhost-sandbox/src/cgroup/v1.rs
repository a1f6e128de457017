//! cgroup v1 control files: limits and counters of the memory, cpu and pids
//! controllers.
//!
//! Limits are written with cgroups-rs's per-controller setters
//! (`MemController::set_limit`, `CpuController::set_cfs_period`, ...), each
//! rooted directly at the cgroup's directory so they work on any mount point
//! and on a fake cgroupfs. Its setters do return the write's result, which
//! we check, but its `Cgroup::apply` drops them and nothing in it reads the
//! value back, so every limit is then read back here. Directories are not
//! created with cgroups-rs: its `Cgroup::create` only logs a failed mkdir,
//! and its `V1` hierarchy takes every v1 mount from /proc/self/mountinfo
//! (creating groups in cpuset, devices, freezer, name=systemd, ...).

use std::io;
use std::path::Path;

use cgroups_rs::cpu::CpuController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::MaxValue;

use super::fs;
use super::{CgroupError, CgroupLimits};

/// Sets and verifies `memory.limit_in_bytes`, and `memory.memsw.limit_in_bytes`
/// to the same value when swap is accounted (so the limit cannot be escaped
/// into swap). Errors on the memsw file that mean "not supported here"
/// (EINVAL, ENOENT) are ignored, as the memory limit alone still holds.
pub(crate) fn set_memory(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    let ctl = MemController::new(dir.to_path_buf(), false);
    let limit_path = dir.join("memory.limit_in_bytes");
    let memsw_path = dir.join("memory.memsw.limit_in_bytes");
    let value = limit_value(&limit_path, bytes)?;
    let has_memsw = memsw_path.exists();

    match ctl.set_limit(value) {
        Ok(()) => {}
        // Raising the limit above the current memory+swap limit is EINVAL:
        // raise memsw first.
        Err(e) if has_memsw && os_error(&e) == Some(libc::EINVAL) => {
            ctl.set_memswap_limit(value)
                .map_err(|e| write_error(&memsw_path, value, e))?;
            ctl.set_limit(value)
                .map_err(|e| write_error(&limit_path, value, e))?;
        }
        Err(e) => return Err(write_error(&limit_path, value, e)),
    }
    fs::verify(&limit_path, &value.to_string(), |a| {
        fs::memory_matches(a, bytes)
    })?;

    if has_memsw {
        match ctl.set_memswap_limit(value) {
            Ok(()) => fs::verify(&memsw_path, &value.to_string(), |a| {
                fs::memory_matches(a, bytes)
            })?,
            Err(e) if matches!(os_error(&e), Some(libc::EINVAL | libc::ENOENT)) => {
                tracing::debug!(path = %memsw_path.display(), error = %e, "memsw limit not set");
            }
            Err(e) => return Err(write_error(&memsw_path, value, e)),
        }
    }
    Ok(())
}

/// Sets and verifies `cpu.cfs_period_us`, then `cpu.cfs_quota_us` (-1 for
/// no limit), and `cpu.shares` when a weight is given.
pub(crate) fn set_cpu(dir: &Path, limits: &CgroupLimits) -> Result<(), CgroupError> {
    let ctl = CpuController::new(dir.to_path_buf(), false);

    let period_path = dir.join("cpu.cfs_period_us");
    let period = limits.cpu_period_us;
    ctl.set_cfs_period(period)
        .map_err(|e| write_error(&period_path, period, e))?;
    fs::verify(&period_path, &period.to_string(), |a| {
        a.parse() == Ok(period)
    })?;

    let quota_path = dir.join("cpu.cfs_quota_us");
    let quota = match limits.cpu_quota_us {
        Some(q) => i64::try_from(q).map_err(|_| too_big(&quota_path, q))?,
        None => -1,
    };
    ctl.set_cfs_quota(quota)
        .map_err(|e| write_error(&quota_path, quota, e))?;
    fs::verify(&quota_path, &quota.to_string(), |a| a.parse() == Ok(quota))?;

    if let Some(weight) = limits.cpu_weight {
        let shares_path = dir.join("cpu.shares");
        let shares = CgroupLimits::v1_shares(weight);
        ctl.set_shares(shares)
            .map_err(|e| write_error(&shares_path, shares, e))?;
        fs::verify(&shares_path, &shares.to_string(), |a| {
            a.parse() == Ok(shares)
        })?;
    }
    Ok(())
}

/// Sets and verifies `pids.max`.
pub(crate) fn set_pids(dir: &Path, max: u64) -> Result<(), CgroupError> {
    let ctl = PidController::new(dir.to_path_buf(), false);
    let path = dir.join("pids.max");
    let value = match max {
        CgroupLimits::UNLIMITED => MaxValue::Max,
        n => MaxValue::Value(i64::try_from(n).map_err(|_| too_big(&path, n))?),
    };
    ctl.set_pid_max(value)
        .map_err(|e| write_error(&path, value, e))?;
    fs::verify(&path, &value.to_string(), |a| fs::pids_matches(a, max))
}

/// `oom_kill` of `memory.oom_control` (kernel 4.13+).
pub(crate) fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    fs::read_keyed(&dir.join("memory.oom_control"), "oom_kill")
}

/// `memory.usage_in_bytes`.
pub(crate) fn memory_current(dir: &Path) -> Result<u64, CgroupError> {
    fs::read_u64(&dir.join("memory.usage_in_bytes"))
}

/// The value for a v1 memory limit file: -1 means unlimited.
fn limit_value(path: &Path, bytes: u64) -> Result<i64, CgroupError> {
    match bytes {
        CgroupLimits::UNLIMITED => Ok(-1),
        n => i64::try_from(n).map_err(|_| too_big(path, n)),
    }
}

fn too_big(path: &Path, value: u64) -> CgroupError {
    CgroupError::WriteLimit {
        path: path.to_path_buf(),
        value: value.to_string(),
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            "value too large for a v1 limit",
        ),
    }
}

/// The errno behind a cgroups-rs error, if it carries one.
fn os_error(e: &cgroups_rs::error::Error) -> Option<i32> {
    std::error::Error::source(e)?
        .downcast_ref::<io::Error>()?
        .raw_os_error()
}

/// Turns a cgroups-rs write error into ours, keeping the io::Error.
fn write_error(path: &Path, value: impl ToString, e: cgroups_rs::error::Error) -> CgroupError {
    let source = match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>()) {
        Some(io) => io::Error::new(io.kind(), io.to_string()),
        None => io::Error::other(e.to_string()),
    };
    CgroupError::WriteLimit {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (file, value) in [
            ("memory.limit_in_bytes", "9223372036854771712"),
            ("memory.memsw.limit_in_bytes", "9223372036854771712"),
            ("cpu.cfs_period_us", "100000"),
            ("cpu.cfs_quota_us", "-1"),
            ("cpu.shares", "1024"),
            ("pids.max", "max"),
        ] {
            std::fs::write(dir.path().join(file), value).unwrap();
        }
        dir
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap()
    }

    #[test]
    fn writes_v1_formats() {
        let dir = v1_dir();
        set_memory(dir.path(), 64 << 20).unwrap();
        set_cpu(dir.path(), &CgroupLimits::from_cpus(0, 0.25, 0)).unwrap();
        set_pids(dir.path(), 32).unwrap();
        assert_eq!(read(dir.path(), "memory.limit_in_bytes"), "67108864");
        assert_eq!(read(dir.path(), "memory.memsw.limit_in_bytes"), "67108864");
        assert_eq!(read(dir.path(), "cpu.cfs_period_us"), "100000");
        assert_eq!(read(dir.path(), "cpu.cfs_quota_us"), "25000");
        assert_eq!(read(dir.path(), "pids.max"), "32");

        assert_eq!(
            read(dir.path(), "cpu.shares"),
            "1024",
            "no weight: untouched"
        );
        let weighted = CgroupLimits {
            cpu_weight: Some(10),
            ..CgroupLimits::from_cpus(0, 0.0, 0)
        };
        set_cpu(dir.path(), &weighted).unwrap();
        set_pids(dir.path(), CgroupLimits::UNLIMITED).unwrap();
        assert_eq!(read(dir.path(), "cpu.shares"), "102");
        assert_eq!(read(dir.path(), "cpu.cfs_quota_us"), "-1");
        assert_eq!(read(dir.path(), "pids.max"), "max");
    }

    #[test]
    fn memsw_is_optional() {
        let dir = v1_dir();
        std::fs::remove_file(dir.path().join("memory.memsw.limit_in_bytes")).unwrap();
        set_memory(dir.path(), 1 << 30).unwrap();
        assert!(!dir.path().join("memory.memsw.limit_in_bytes").exists());
    }

    #[test]
    fn failed_write_names_file_and_value() {
        let dir = v1_dir();
        // A directory where the control file should be: the write fails.
        std::fs::remove_file(dir.path().join("pids.max")).unwrap();
        std::fs::create_dir(dir.path().join("pids.max")).unwrap();
        let err = set_pids(dir.path(), 32).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CgroupError::WriteLimit { .. }), "{msg}");
        assert!(msg.contains("pids.max") && msg.contains("\"32\""), "{msg}");
    }

    #[test]
    fn write_that_does_not_stick_is_caught() {
        let dir = v1_dir();
        // Writes to /dev/null succeed and vanish, like a limit the kernel
        // silently did not apply: the read-back must catch it.
        let quota = dir.path().join("cpu.cfs_quota_us");
        std::fs::remove_file(&quota).unwrap();
        std::os::unix::fs::symlink("/dev/null", &quota).unwrap();
        let err = set_cpu(dir.path(), &CgroupLimits::from_cpus(0, 1.0, 0)).unwrap_err();
        match err {
            CgroupError::VerifyLimit {
                path,
                expected,
                actual,
            } => {
                assert_eq!(path, quota);
                assert_eq!(expected, "100000");
                assert_eq!(actual, "");
            }
            other => panic!("expected VerifyLimit, got {other}"),
        }
    }
}
