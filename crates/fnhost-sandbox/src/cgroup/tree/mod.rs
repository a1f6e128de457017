//! fnhost's own subtree, `<mount>/<root>/...`, in every hierarchy: creating
//! cgroups in it and clearing it of what a previous run left behind.
//! Everything above `<root>` belongs to the machine's supervisor and is only
//! ever read.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::detect::{Hierarchy, Kind};
use super::fs::{self, CgroupFs, RealFs};
use super::group::{kill_dirs, Cgroup};
use super::{v1, v2, CgroupError, CgroupLayout, CgroupLimits};

/// How long killed processes get to leave their cgroups.
const KILL_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(5);

/// fnhost's cgroup root, named by config, in every hierarchy of the layout.
#[derive(Debug)]
pub struct CgroupTree {
    layout: CgroupLayout,
    root: String,
    hierarchies: Vec<Hierarchy>,
    fs: Arc<dyn CgroupFs>,
}

/// What [`CgroupTree::remove_stale`] or [`CgroupTree::remove_all`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleReport {
    /// Cgroups removed, each counted once however many hierarchies it was in.
    pub cgroups_removed: usize,
    /// Distinct processes killed.
    pub processes_killed: usize,
}

impl CgroupTree {
    /// A tree rooted at `<mount>/<root_name>` in each hierarchy. `root_name`
    /// may be nested ("fnhost.slice/fnhost"); its parent must exist and is
    /// never modified. Names are checked by each operation.
    pub fn new(layout: CgroupLayout, root_name: &str) -> Self {
        Self::with_fs(layout, root_name, Arc::new(RealFs))
    }

    pub(crate) fn with_fs(layout: CgroupLayout, root_name: &str, fs: Arc<dyn CgroupFs>) -> Self {
        CgroupTree {
            hierarchies: layout.hierarchies(),
            layout,
            root: root_name.to_string(),
            fs,
        }
    }

    pub fn layout(&self) -> &CgroupLayout {
        &self.layout
    }

    /// Creates (or reuses) `<root>/<rel>` in every hierarchy, with its
    /// parents, and sets and verifies `limits` on it. On v2, memory, cpu and
    /// pids are enabled in `<root>` and every directory between it and the
    /// leaf; they must already be enabled for `<root>` by its parent.
    pub fn create(&self, rel: &str, limits: &CgroupLimits) -> Result<Cgroup, CgroupError> {
        validate(&self.root)?;
        validate(rel)?;
        let fs = self.fs.as_ref();
        let components: Vec<&str> = rel.split('/').collect();
        let mut dirs = Vec::with_capacity(self.hierarchies.len());
        for h in &self.hierarchies {
            let base = h.mount.join(&self.root);
            let created = !base.is_dir();
            fs::ensure_dir(fs, &base)?;
            if h.kind == Kind::V2 {
                if let Err(e) = v2::check_controllers_available(&base) {
                    if created {
                        // Leave nothing behind for a setup error.
                        let _ = fs.rmdir(&base);
                    }
                    return Err(e);
                }
                v2::enable_subtree(fs, &base)?;
            }
            let mut dir = base;
            for (i, component) in components.iter().enumerate() {
                dir.push(component);
                fs::ensure_dir(fs, &dir)?;
                if h.kind == Kind::V2 && i + 1 < components.len() {
                    v2::enable_subtree(fs, &dir)?;
                }
            }
            dirs.push((dir, h.kind));
        }
        let cgroup = Cgroup::new(rel.to_string(), dirs, Arc::clone(&self.fs));
        cgroup.set_limits(limits)?;
        Ok(cgroup)
    }

    /// The memory-controller directory of `<root>/<rel>` (or of `<root>`
    /// itself when `rel` is empty), with its kind.
    fn memory_dir(&self, rel: &str) -> Result<(PathBuf, Kind), CgroupError> {
        validate(&self.root)?;
        if !rel.is_empty() {
            validate(rel)?;
        }
        let h = self
            .hierarchies
            .iter()
            .find(|h| matches!(h.kind, Kind::V2 | Kind::V1 { memory: true, .. }))
            .ok_or_else(|| CgroupError::UnsupportedLayout {
                reason: format!("no memory controller for cgroup root {}", self.root),
            })?;
        let mut dir = h.mount.join(&self.root);
        if !rel.is_empty() {
            dir.push(rel);
        }
        Ok((dir, h.kind))
    }

    /// Memory charged to `<root>/<rel>` and everything below it (`rel` empty:
    /// all of fnhost), bytes.
    pub fn memory_usage(&self, rel: &str) -> Result<u64, CgroupError> {
        match self.memory_dir(rel)? {
            (dir, Kind::V2) => v2::memory_current(&dir),
            (dir, _) => v1::memory_current(&dir),
        }
    }

    /// Caps the memory of fnhost's whole subtree: the hard backstop behind
    /// the memory budget, so the kernel reclaims or OOM-kills inside fnhost
    /// rather than anywhere on the host. Creates `<root>` if needed.
    pub fn set_root_memory_limit(&self, bytes: u64) -> Result<(), CgroupError> {
        let (dir, kind) = self.memory_dir("")?;
        fs::ensure_dir(self.fs.as_ref(), &dir)?;
        match kind {
            Kind::V2 => {
                let path = dir.join("memory.max");
                let value = bytes.to_string();
                fs::write_limit(self.fs.as_ref(), &path, &value)?;
                fs::verify(&path, &value, |a| fs::memory_matches(a, bytes))
            }
            _ => v1::set_memory(&dir, bytes),
        }
    }

    /// Removes every cgroup below `<root>` left by a previous run, killing
    /// the processes in them (and in `<root>` itself) first. `<root>` stays.
    pub fn remove_stale(&self) -> Result<StaleReport, CgroupError> {
        self.clean(false)
    }

    /// Like [`CgroupTree::remove_stale`], and removes `<root>` too.
    pub fn remove_all(&self) -> Result<StaleReport, CgroupError> {
        self.clean(true)
    }

    fn clean(&self, include_root: bool) -> Result<StaleReport, CgroupError> {
        validate(&self.root)?;
        // Per hierarchy: <root>, its kind, and its descendants children-first.
        let mut found: Vec<(PathBuf, Kind, Vec<PathBuf>)> = Vec::new();
        for h in &self.hierarchies {
            let base = h.mount.join(&self.root);
            match std::fs::symlink_metadata(&base) {
                Ok(meta) if meta.is_dir() => {
                    let below = fs::descendants_postorder(&base)?;
                    found.push((base, h.kind, below));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(CgroupError::List { path: base, source }),
            }
        }
        let all = || {
            found.iter().flat_map(|(base, kind, below)| {
                below
                    .iter()
                    .chain(std::iter::once(base))
                    .map(move |d| (d.as_path(), *kind))
            })
        };

        // Kill until empty: processes may fork while we work (cgroup.kill is
        // atomic, but a v1-only hierarchy is signalled pid by pid).
        let deadline = Instant::now() + KILL_WAIT;
        let mut killed = BTreeSet::new();
        loop {
            killed.extend(kill_dirs(self.fs.as_ref(), all())?);
            let left = first_populated(all())?;
            match left {
                None => break,
                Some((path, pids)) if Instant::now() >= deadline => {
                    return Err(CgroupError::StillPopulated { path, pids });
                }
                Some(_) => std::thread::sleep(POLL),
            }
        }

        let mut removed: BTreeSet<PathBuf> = BTreeSet::new();
        for (base, _, below) in &found {
            for dir in below {
                self.rmdir(dir, deadline)?;
                if let Ok(rel) = dir.strip_prefix(base) {
                    removed.insert(rel.to_path_buf());
                }
            }
            if include_root {
                self.rmdir(base, deadline)?;
            }
        }
        let root_removed = include_root && !found.is_empty();
        let report = StaleReport {
            cgroups_removed: removed.len() + usize::from(root_removed),
            processes_killed: killed.len(),
        };
        if report != StaleReport::default() {
            tracing::info!(
                root = %self.root,
                cgroups = report.cgroups_removed,
                processes = report.processes_killed,
                "removed cgroups left by a previous run"
            );
        }
        Ok(report)
    }

    /// rmdir, retrying EBUSY until `deadline` (a killed task can linger
    /// briefly after leaving `cgroup.procs`); gone already is fine.
    fn rmdir(&self, dir: &Path, deadline: Instant) -> Result<(), CgroupError> {
        loop {
            match self.fs.rmdir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(POLL);
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: dir.to_path_buf(),
                        source,
                    })
                }
            }
        }
    }
}

/// The first directory that still lists processes, with them.
fn first_populated<'a>(
    dirs: impl Iterator<Item = (&'a Path, Kind)>,
) -> Result<Option<(PathBuf, Vec<i32>)>, CgroupError> {
    for (dir, _) in dirs {
        let pids = fs::read_pids(dir)?;
        if !pids.is_empty() {
            return Ok(Some((dir.to_path_buf(), pids.into_iter().collect())));
        }
    }
    Ok(None)
}

/// Accepts relative paths of plain components only, so nothing can
/// resolve outside `<mount>/<root>` (or be the mount itself).
fn validate(name: &str) -> Result<(), CgroupError> {
    let invalid = |reason| {
        Err(CgroupError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    for component in name.split('/') {
        match component {
            "" => return invalid("it has an empty component or a leading or trailing '/'"),
            "." | ".." => return invalid("it may not contain '.' or '..'"),
            c if c.contains('\0') => return invalid("it contains a NUL byte"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
