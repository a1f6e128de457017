//! One fnhost cgroup (a zygote's or a pooled sandbox's), as its directory
//! in each hierarchy of the layout.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::detect::Kind;
use super::fs::{self, CgroupFs};
use super::{v1, v2, CgroupError, CgroupLimits};

/// A cgroup under fnhost's root, present in every hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup {
    name: String,
    dirs: Vec<(PathBuf, Kind)>,
    fs: Arc<dyn CgroupFs>,
}

impl Cgroup {
    pub(crate) fn new(name: String, dirs: Vec<(PathBuf, Kind)>, fs: Arc<dyn CgroupFs>) -> Self {
        Cgroup { name, dirs, fs }
    }

    /// The path relative to fnhost's root, e.g. "hello/s3".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first directory whose hierarchy kind satisfies `want`.
    fn dir_with(&self, want: impl Fn(Kind) -> bool) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(_, k)| want(*k))
            .map(|(p, _)| p.as_path())
    }

    /// The cgroup2 directory, opened `O_RDONLY|O_DIRECTORY|O_CLOEXEC`, for
    /// `clone3(CLONE_INTO_CGROUP)`; `None` on pure v1.
    pub fn clone_into_fd(&self) -> Result<Option<OwnedFd>, CgroupError> {
        let Some(dir) = self.dir_with(Kind::is_cgroup2) else {
            return Ok(None);
        };
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .map(|f| Some(OwnedFd::from(f)))
            .map_err(|source| CgroupError::Open {
                path: dir.to_path_buf(),
                source,
            })
    }

    /// `cgroup.procs` of each v1 hierarchy, opened `O_WRONLY|O_CLOEXEC`, so a
    /// child can join them by writing "0"; empty on pure v2.
    pub fn v1_procs_fds(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        self.dirs
            .iter()
            .filter(|(_, k)| !k.is_cgroup2())
            .map(|(dir, _)| {
                let path = dir.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(|source| CgroupError::Open { path, source })
            })
            .collect()
    }

    /// Moves `pid` into this cgroup in every hierarchy.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        for (dir, _) in &self.dirs {
            let path = dir.join("cgroup.procs");
            self.fs
                .write(&path, &pid.to_string())
                .map_err(|source| CgroupError::Attach { pid, path, source })?;
        }
        Ok(())
    }

    /// Writes `pid` (already a member) to the `cgroup.procs` of this
    /// cgroup's first v1 hierarchy again: a migration that moves nothing
    /// but takes the kernel's global cgroup migration lock. The first
    /// taker of that lock after it has been idle waits for an RCU grace
    /// period (8–14 ms measured here); a caller about to make a clone
    /// attach itself to its v1 cgroups can pay that wait ahead, in
    /// parallel. `false`: no v1 hierarchy (cgroup2 clones start in their
    /// cgroup and never migrate).
    pub fn prime_migration_lock(&self, pid: i32) -> Result<bool, CgroupError> {
        let Some((dir, _)) = self.dirs.iter().find(|(_, k)| !k.is_cgroup2()) else {
            return Ok(false);
        };
        let path = dir.join("cgroup.procs");
        self.fs
            .write(&path, &pid.to_string())
            .map_err(|source| CgroupError::Attach { pid, path, source })?;
        Ok(true)
    }

    /// Every process in this cgroup, in any hierarchy, sorted.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for (dir, _) in &self.dirs {
            all.extend(fs::read_pids(dir)?);
        }
        Ok(all.into_iter().collect())
    }

    /// Whether no process is left in any hierarchy (zombies do not count).
    pub fn is_empty(&self) -> Result<bool, CgroupError> {
        for (dir, _) in &self.dirs {
            if !fs::read_pids(dir)?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Kills every process: one `cgroup.kill` write where cgroup2 offers it,
    /// SIGKILL for each pid only listed elsewhere. Returns how many distinct
    /// processes were signalled; does not wait for them to die.
    pub fn kill_all(&self) -> Result<usize, CgroupError> {
        let dirs = self.dirs.iter().map(|(d, k)| (d.as_path(), *k));
        Ok(kill_dirs(self.fs.as_ref(), dirs)?.len())
    }

    /// How many times the kernel's OOM killer has killed a process here.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        for (dir, kind) in &self.dirs {
            match kind {
                Kind::V2 => return v2::oom_kills(dir),
                Kind::V1 { memory: true, .. } => return v1::oom_kills(dir),
                _ => {}
            }
        }
        Err(no_memory_controller(&self.name))
    }

    /// Memory charged to this cgroup, in bytes.
    pub fn memory_current(&self) -> Result<u64, CgroupError> {
        for (dir, kind) in &self.dirs {
            match kind {
                Kind::V2 => return v2::memory_current(dir),
                Kind::V1 { memory: true, .. } => return v1::memory_current(dir),
                _ => {}
            }
        }
        Err(no_memory_controller(&self.name))
    }

    /// Asks the kernel to reclaim this cgroup's memory now (`memory.reclaim`
    /// of the current usage on v2, `memory.force_empty` on v1). Without swap
    /// only page cache can go; anonymous memory stays. A partial reclaim
    /// (EAGAIN) is not an error.
    pub fn reclaim(&self) -> Result<(), CgroupError> {
        for (dir, kind) in &self.dirs {
            let (path, value) = match kind {
                Kind::V2 => (
                    dir.join("memory.reclaim"),
                    v2::memory_current(dir)?.max(1).to_string(),
                ),
                Kind::V1 { memory: true, .. } => (dir.join("memory.force_empty"), "0".to_string()),
                _ => continue,
            };
            return match self.fs.write(&path, &value) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(()),
                other => other.map_err(|source| CgroupError::WriteLimit {
                    path,
                    value,
                    source,
                }),
            };
        }
        Err(no_memory_controller(&self.name))
    }

    /// Writes every limit and reads each one back.
    pub fn set_limits(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        for (dir, kind) in &self.dirs {
            match *kind {
                Kind::V2 => v2::set_limits(self.fs.as_ref(), dir, limits)?,
                Kind::Unified => {}
                Kind::V1 { memory, cpu, pids } => {
                    if memory {
                        v1::set_memory(dir, limits.memory_bytes)?;
                    }
                    if cpu {
                        v1::set_cpu(dir, limits)?;
                    }
                    if pids {
                        v1::set_pids(dir, limits.pids_max)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the cgroup from every hierarchy. It must be empty (see
    /// [`Cgroup::kill_all`] and [`Cgroup::is_empty`]); a directory already
    /// gone is not an error, so a failed removal can be retried.
    pub fn remove(&self) -> Result<(), CgroupError> {
        for (dir, _) in &self.dirs {
            match self.fs.rmdir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

fn no_memory_controller(name: &str) -> CgroupError {
    CgroupError::UnsupportedLayout {
        reason: format!("cgroup {name} has no memory controller"),
    }
}

/// Kills the processes of the given cgroup directories (see
/// [`Cgroup::kill_all`]) and returns their pids. A cgroup2 `cgroup.kill`
/// also kills descendants. Refuses if the calling process is among them.
pub(crate) fn kill_dirs<'a>(
    fs: &dyn CgroupFs,
    dirs: impl Iterator<Item = (&'a Path, Kind)>,
) -> Result<BTreeSet<i32>, CgroupError> {
    let me = std::process::id() as i32;
    let mut listed = Vec::new();
    for (dir, kind) in dirs {
        let pids = fs::read_pids(dir)?;
        if pids.contains(&me) {
            return Err(CgroupError::SelfInside {
                path: dir.to_path_buf(),
            });
        }
        listed.push((dir, kind, pids));
    }

    let mut killed = BTreeSet::new();
    // cgroup2 first: one write kills the whole subtree atomically, forks
    // included.
    for (dir, kind, pids) in &listed {
        let kill_file = dir.join("cgroup.kill");
        if kind.is_cgroup2() && kill_file.exists() {
            fs.write(&kill_file, "1")
                .map_err(|source| CgroupError::Kill {
                    path: kill_file.clone(),
                    source,
                })?;
            killed.extend(pids.iter().copied());
        }
    }
    for (dir, _, pids) in &listed {
        for &pid in pids {
            if killed.insert(pid) {
                match fs.kill(pid) {
                    Ok(()) => {}
                    // Already gone.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(source) => {
                        return Err(CgroupError::Kill {
                            path: dir.to_path_buf(),
                            source,
                        })
                    }
                }
            }
        }
    }
    Ok(killed)
}
