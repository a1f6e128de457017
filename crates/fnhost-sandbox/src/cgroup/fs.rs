//! Access to cgroupfs. The calls whose effect on cgroupfs differs from a
//! plain filesystem (mkdir populating control files, rmdir of a directory
//! full of them, writes to `cgroup.procs`/`cgroup.kill`/`subtree_control`,
//! and signalling) go through [`CgroupFs`], so every path-level decision can
//! be unit-tested against a fake cgroupfs in a tempdir. Reads are plain file
//! reads on both.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::{CgroupError, CgroupLimits};

/// The cgroupfs operations that the kernel gives special meaning.
pub(crate) trait CgroupFs: fmt::Debug + Send + Sync {
    /// Creates one cgroup directory (the parent must exist).
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Removes one empty cgroup directory.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Writes `value` to an existing control file, in one write.
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Sends SIGKILL to `pid` (never called with pid <= 0).
    fn kill(&self, pid: i32) -> io::Result<()>;
}

/// The kernel's cgroupfs.
#[derive(Debug)]
pub(crate) struct RealFs;

impl CgroupFs for RealFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // No O_CREAT: a missing control file is an error, not a new file.
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.write_all(value.as_bytes())
    }

    fn kill(&self, pid: i32) -> io::Result<()> {
        if pid <= 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        signal::kill(Pid::from_raw(pid), Signal::SIGKILL).map_err(io::Error::from)
    }
}

/// Reads a control file, trimmed.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a single-number control file.
pub(crate) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let content = read(path)?;
    content.parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content,
    })
}

/// Reads the `key N` line of a flat-keyed file (`memory.events`,
/// `memory.oom_control`).
pub(crate) fn read_keyed(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let content = read(path)?;
    content
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok())?
        })
        .ok_or(CgroupError::Parse {
            path: path.to_path_buf(),
            content,
        })
}

/// The pids listed in `<dir>/cgroup.procs`; a cgroup removed meanwhile has
/// none.
pub(crate) fn read_pids(dir: &Path) -> Result<BTreeSet<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    let content = match std::fs::read_to_string(&path) {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(source) => return Err(CgroupError::Read { path, source }),
    };
    content
        .split_whitespace()
        .map(|p| match p.parse::<i32>() {
            Ok(pid) if pid > 0 => Ok(pid),
            _ => Err(CgroupError::Parse {
                path: path.clone(),
                content: content.clone(),
            }),
        })
        .collect()
}

/// Writes a limit through `fs`, failing with the file and the value.
pub(crate) fn write_limit(fs: &dyn CgroupFs, path: &Path, value: &str) -> Result<(), CgroupError> {
    fs.write(path, value)
        .map_err(|source| CgroupError::WriteLimit {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        })
}

/// Reads `path` back and checks it with `ok`; `expected` is for the message.
pub(crate) fn verify(
    path: &Path,
    expected: &str,
    ok: impl Fn(&str) -> bool,
) -> Result<(), CgroupError> {
    let actual = read(path)?;
    if ok(&actual) {
        Ok(())
    } else {
        Err(CgroupError::VerifyLimit {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Whether a memory limit file reading `actual` holds `wanted` bytes. The
/// kernel stores whole pages, rounding down; "unlimited" reads back as
/// "max" (v2) or as a huge page-aligned number (v1).
pub(crate) fn memory_matches(actual: &str, wanted: u64) -> bool {
    if wanted == CgroupLimits::UNLIMITED {
        return actual == "max" || actual.parse::<u64>().is_ok_and(|v| v >= 1 << 62);
    }
    let Ok(value) = actual.parse::<u64>() else {
        return false;
    };
    let page = page_size();
    value == wanted || value == wanted / page * page
}

/// Whether a `pids.max` reading `actual` holds `wanted`.
pub(crate) fn pids_matches(actual: &str, wanted: u64) -> bool {
    match wanted {
        CgroupLimits::UNLIMITED => actual == "max",
        n => actual.parse::<u64>() == Ok(n),
    }
}

/// The text for `pids.max`.
pub(crate) fn pids_value(max: u64) -> String {
    match max {
        CgroupLimits::UNLIMITED => "max".to_string(),
        n => n.to_string(),
    }
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .filter(|&p| p > 0)
        .unwrap_or(4096)
}

/// `mkdir` that accepts an existing directory (cgroups are reused).
pub(crate) fn ensure_dir(fs: &dyn CgroupFs, path: &Path) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Create {
        path: path.to_path_buf(),
        source,
    };
    match fs.mkdir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path).map_err(err)?.is_dir() {
                Ok(())
            } else {
                Err(err(io::Error::from_raw_os_error(libc::ENOTDIR)))
            }
        }
        Err(e) => Err(err(e)),
    }
}

/// Every cgroup directory below `base` (not `base` itself), children before
/// their parents. Symlinks are never followed (cgroupfs has none).
pub(crate) fn descendants_postorder(base: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
        let err = |source| CgroupError::List {
            path: dir.to_path_buf(),
            source,
        };
        let mut children = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let entry = entry.map_err(err)?;
            if entry.file_type().map_err(err)?.is_dir() {
                children.push(entry.path());
            }
        }
        children.sort();
        for child in children {
            walk(&child, out)?;
            out.push(child);
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(base, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_matching_accepts_page_rounding_only() {
        assert!(memory_matches("99999744", 100_000_001));
        assert!(memory_matches("100000001", 100_000_001));
        assert!(!memory_matches("99995648", 100_000_001));
        assert!(!memory_matches("", 1 << 20));
        assert!(!memory_matches("max", 1 << 20));
        assert!(memory_matches("max", CgroupLimits::UNLIMITED));
        assert!(memory_matches(
            "9223372036854771712",
            CgroupLimits::UNLIMITED
        ));
        assert!(!memory_matches("1048576", CgroupLimits::UNLIMITED));
    }

    #[test]
    fn pids_formats() {
        assert_eq!(pids_value(64), "64");
        assert_eq!(pids_value(CgroupLimits::UNLIMITED), "max");
        assert!(pids_matches("64", 64));
        assert!(!pids_matches("max", 64));
        assert!(pids_matches("max", CgroupLimits::UNLIMITED));
    }

    #[test]
    fn keyed_and_pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        std::fs::write(
            &events,
            "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(read_keyed(&events, "oom_kill").unwrap(), 1);
        assert_eq!(read_keyed(&events, "max").unwrap(), 7);
        assert!(matches!(
            read_keyed(&events, "nope"),
            Err(CgroupError::Parse { .. })
        ));

        assert!(read_pids(&dir.path().join("gone")).unwrap().is_empty());
        std::fs::write(dir.path().join("cgroup.procs"), "12\n7\n12\n").unwrap();
        assert_eq!(
            read_pids(dir.path())
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![7, 12]
        );
        // A 0 or negative pid must never reach kill(2).
        std::fs::write(dir.path().join("cgroup.procs"), "0\n").unwrap();
        assert!(matches!(
            read_pids(dir.path()),
            Err(CgroupError::Parse { .. })
        ));
    }

    #[test]
    fn real_kill_refuses_nonpositive_pids() {
        assert!(RealFs.kill(0).is_err());
        assert!(RealFs.kill(-1).is_err());
    }
}
