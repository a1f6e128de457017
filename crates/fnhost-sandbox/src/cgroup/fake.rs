//! A fake cgroupfs in a tempdir, for root-free tests of the path-level
//! logic. It plays the kernel's part for the operations behind
//! [`CgroupFs`]: mkdir populates control files (v2 controller files only
//! for controllers the parent enabled), rmdir refuses populated cgroups,
//! `cgroup.procs` moves a pid within its hierarchy, `subtree_control`
//! checks availability and the no-internal-process rule, `cgroup.kill` and
//! kill make a pid vanish from every hierarchy. Pids are plain numbers;
//! no real process is ever signalled.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::detect::{Hierarchy, Kind};
use super::fs::CgroupFs;
use super::{CgroupLayout, V1Mounts};

#[derive(Debug)]
pub(crate) struct FakeCgroupFs {
    dir: tempfile::TempDir,
    layout: CgroupLayout,
    hierarchies: Vec<Hierarchy>,
    /// Pids "killed" so far, in order.
    pub(crate) killed: Mutex<Vec<i32>>,
}

/// A supervisor's process in the fake, never to be killed by fnhost.
pub(crate) const SUPERVISOR_PID: i32 = 4_000_001;

impl FakeCgroupFs {
    pub(crate) fn v2() -> Self {
        Self::build(|base| CgroupLayout::V2 {
            mount: base.join("cgroup"),
        })
    }

    pub(crate) fn hybrid() -> Self {
        Self::build(|base| CgroupLayout::Hybrid {
            v1: v1_mounts(base),
            unified: base.join("unified"),
        })
    }

    pub(crate) fn v1() -> Self {
        Self::build(|base| CgroupLayout::V1 {
            v1: v1_mounts(base),
        })
    }

    pub(crate) fn layout(&self) -> CgroupLayout {
        self.layout.clone()
    }

    pub(crate) fn base(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn mounts(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.mount.clone()).collect()
    }

    /// The mounts, each with a supervisor cgroup "system.slice/agent" holding
    /// [`SUPERVISOR_PID`].
    fn build(layout: impl FnOnce(&Path) -> CgroupLayout) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = layout(dir.path());
        let fake = FakeCgroupFs {
            hierarchies: layout.hierarchies(),
            layout,
            dir,
            killed: Mutex::new(Vec::new()),
        };
        for h in &fake.hierarchies {
            std::fs::create_dir_all(&h.mount).expect("mount dir");
            let root_files: &[(&str, &str)] = match h.kind {
                Kind::V2 => &[
                    (
                        "cgroup.controllers",
                        "cpuset cpu io memory hugetlb pids rdma misc\n",
                    ),
                    ("cgroup.subtree_control", "cpu memory pids\n"),
                ],
                Kind::Unified => &[("cgroup.controllers", ""), ("cgroup.subtree_control", "")],
                Kind::V1 { .. } => &[("cgroup.sane_behavior", "0\n")],
            };
            for (file, value) in root_files {
                std::fs::write(h.mount.join(file), value).expect("root file");
            }
            std::fs::write(h.mount.join("cgroup.procs"), "1\n").expect("root procs");
            for d in ["system.slice", "system.slice/agent"] {
                fake.mkdir(&h.mount.join(d)).expect("supervisor cgroup");
            }
            std::fs::write(
                h.mount.join("system.slice/agent/cgroup.procs"),
                format!("{SUPERVISOR_PID}\n"),
            )
            .expect("supervisor procs");
        }
        fake
    }

    fn hierarchy_of(&self, path: &Path) -> io::Result<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| path.starts_with(&h.mount) && path != h.mount)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EPERM))
    }

    /// Removes `pid` from every cgroup.procs of every hierarchy; whether it
    /// was found anywhere.
    fn vanish(&self, pid: i32) -> io::Result<bool> {
        let mut found = false;
        for h in &self.hierarchies {
            for procs in procs_files(&h.mount)? {
                found |= remove_pid(&procs, pid)?;
            }
        }
        Ok(found)
    }
}

fn v1_mounts(base: &Path) -> V1Mounts {
    V1Mounts {
        memory: base.join("memory"),
        cpu: base.join("cpu,cpuacct"),
        pids: base.join("pids"),
    }
}

fn procs_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = vec![dir.join("cgroup.procs")];
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.extend(procs_files(&entry.path())?);
        }
    }
    Ok(out)
}

fn read_list(path: &Path) -> io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

fn remove_pid(procs: &Path, pid: i32) -> io::Result<bool> {
    let pids = read_list(procs)?;
    let kept: Vec<&String> = pids.iter().filter(|p| **p != pid.to_string()).collect();
    if kept.len() == pids.len() {
        return Ok(false);
    }
    let text: String = kept.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(procs, text)?;
    Ok(true)
}

impl CgroupFs for FakeCgroupFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        let kind = self.hierarchy_of(path)?.kind;
        std::fs::create_dir(path)?;
        let parent = path.parent().expect("below a mount");
        let mut files: Vec<(&str, String)> = vec![("cgroup.procs", String::new())];
        match kind {
            Kind::V2 | Kind::Unified => {
                let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control"))?;
                files.extend([
                    ("cgroup.kill", String::new()),
                    ("cgroup.events", "populated 0\nfrozen 0\n".to_string()),
                    ("cgroup.subtree_control", String::new()),
                ]);
                for c in enabled.split_whitespace() {
                    match c {
                        "memory" => files.extend([
                            ("memory.max", "max\n".to_string()),
                            ("memory.swap.max", "max\n".to_string()),
                            ("memory.current", "0\n".to_string()),
                            (
                                "memory.events",
                                "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"
                                    .to_string(),
                            ),
                        ]),
                        "cpu" => files.extend([
                            ("cpu.max", "max 100000\n".to_string()),
                            ("cpu.weight", "100\n".to_string()),
                        ]),
                        "pids" => files.push(("pids.max", "max\n".to_string())),
                        _ => {}
                    }
                }
                files.push(("cgroup.controllers", enabled));
            }
            Kind::V1 { memory, cpu, pids } => {
                files.push(("tasks", String::new()));
                let unlimited = "9223372036854771712\n".to_string();
                if memory {
                    files.extend([
                        ("memory.limit_in_bytes", unlimited.clone()),
                        ("memory.memsw.limit_in_bytes", unlimited),
                        ("memory.usage_in_bytes", "0\n".to_string()),
                        (
                            "memory.oom_control",
                            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n".to_string(),
                        ),
                    ]);
                }
                if cpu {
                    files.extend([
                        ("cpu.cfs_period_us", "100000\n".to_string()),
                        ("cpu.cfs_quota_us", "-1\n".to_string()),
                        ("cpu.shares", "1024\n".to_string()),
                    ]);
                }
                if pids {
                    files.push(("pids.max", "max\n".to_string()));
                }
            }
        }
        for (file, value) in files {
            std::fs::write(path.join(file), value)?;
        }
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        self.hierarchy_of(path)?;
        let busy = std::fs::read_dir(path)?.any(|e| e.is_ok_and(|e| e.path().is_dir()))
            || !read_list(&path.join("cgroup.procs"))?.is_empty();
        if busy {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        std::fs::remove_dir_all(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        let dir = path.parent().expect("control file in a cgroup");
        let h = self.hierarchy_of(dir)?;
        if !path.exists() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        match name {
            "cgroup.procs" => {
                let pid: i32 = value
                    .trim()
                    .parse()
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                let enabled =
                    std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
                if h.kind == Kind::V2 && !enabled.trim().is_empty() {
                    // No internal processes in a cgroup that has enabled
                    // controllers for its children.
                    return Err(io::Error::from_raw_os_error(libc::EBUSY));
                }
                for procs in procs_files(&h.mount)? {
                    remove_pid(&procs, pid)?;
                }
                let mut pids = read_list(path)?;
                pids.push(pid.to_string());
                std::fs::write(
                    path,
                    pids.iter().map(|p| format!("{p}\n")).collect::<String>(),
                )
            }
            "cgroup.subtree_control" => {
                let available = read_list(&dir.join("cgroup.controllers"))?;
                let mut enabled = read_list(path)?;
                if !read_list(&dir.join("cgroup.procs"))?.is_empty() {
                    return Err(io::Error::from_raw_os_error(libc::EBUSY));
                }
                for token in value.split_whitespace() {
                    let (add, c) = match token.split_at(1) {
                        ("+", c) => (true, c),
                        ("-", c) => (false, c),
                        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
                    };
                    if !available.iter().any(|a| a == c) {
                        return Err(io::Error::from_raw_os_error(libc::ENOENT));
                    }
                    enabled.retain(|e| e != c);
                    if add {
                        enabled.push(c.to_string());
                    }
                }
                std::fs::write(path, enabled.join(" ") + "\n")
            }
            "cgroup.kill" => {
                if value.trim() != "1" {
                    return Err(io::Error::from_raw_os_error(libc::ERANGE));
                }
                let mut pids = Vec::new();
                for procs in procs_files(dir)? {
                    pids.extend(read_list(&procs)?);
                }
                for pid in pids {
                    let pid: i32 = pid.parse().expect("fake pids are numbers");
                    self.vanish(pid)?;
                    self.killed.lock().expect("not poisoned").push(pid);
                }
                Ok(())
            }
            // Any other control file holds what was written (following a
            // symlink, which tests use to make a write vanish).
            _ => {
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(path)?
                    .write_all(value.as_bytes())
            }
        }
    }

    fn kill(&self, pid: i32) -> io::Result<()> {
        assert!(pid > 0, "kill({pid}) would signal a group");
        if self.vanish(pid)? {
            self.killed.lock().expect("not poisoned").push(pid);
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::ESRCH))
        }
    }
}
