//! What a daemon or test may leave behind, and how to find and clear it:
//! cgroups under a root (in every hierarchy), mounts below a directory,
//! descendant processes, open descriptors; plus `eventually`, the poll
//! these checks need while the host tears things down.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CGROUP_FS: &str = "/sys/fs/cgroup";

/// Cgroup directories named `root_name` and everything below them, in the
/// unified hierarchy and in each v1 hierarchy; sorted, parents first.
pub fn cgroup_dirs(root_name: &str) -> Vec<PathBuf> {
    let base = Path::new(CGROUP_FS);
    let mut hierarchies = vec![base.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(base) {
        hierarchies.extend(entries.flatten().map(|e| e.path()));
    }
    let mut out = Vec::new();
    for hierarchy in hierarchies {
        let mut stack = vec![hierarchy.join(root_name)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            out.push(dir);
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// SIGKILLs every process in `dirs` and removes them, children first.
pub fn remove_cgroups(dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    // A killed cgroup empties asynchronously; rmdir fails until it has.
    eventually(Duration::from_secs(5), || {
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        dirs.iter().all(|d| !d.exists())
    });
}

/// Whether anything is mounted at or below `dir` (then it must not be
/// deleted recursively). Unreadable mountinfo counts as yes.
pub fn has_mounts_below(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let below = mount_points(&info).any(|mount_point| Path::new(mount_point).starts_with(dir));
    below
}

/// The mount points (field 5) of a mountinfo text.
fn mount_points(mountinfo: &str) -> impl Iterator<Item = &str> {
    mountinfo.lines().filter_map(|l| l.split(' ').nth(4))
}

/// Mounts in the mount namespace of process `pid` ("self" works).
pub fn mount_count(pid: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Open descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// How many of `pid`'s open descriptors are `kind` (the target of their
/// `/proc/<pid>/fd` link, e.g. `anon_inode:[userfaultfd]`).
pub fn fds_of_kind(pid: u32, kind: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == kind))
                .count()
        })
        .unwrap_or(0)
}

/// Whether `pid` exists (a zombie counts).
pub fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| kill(Pid::from_raw(p), None).is_ok())
}

/// Every process and its parent, from /proc.
fn parent_links() -> Vec<(u32, u32)> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        if let Some(ppid) = parent_of(&stat) {
            parents.push((p, ppid));
        }
    }
    parents
}

/// Direct children of `pid`, sorted.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = parent_links()
        .into_iter()
        .filter(|(_, parent)| *parent == pid)
        .map(|(child, _)| child)
        .collect();
    out.sort();
    out
}

/// The name (`comm`) of process `pid`; empty once it is gone.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

/// Descendant processes of `pid` (by walking /proc ppid links), sorted.
pub fn descendants(pid: u32) -> Vec<u32> {
    let parents = parent_links();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, pp) in &parents {
            if *pp == parent {
                out.push(*p);
                frontier.push(*p);
            }
        }
    }
    out.sort();
    out
}

/// The descendants of `pid` that run in a sandbox: in a pid namespace two
/// below the caller's (a clone's, or a process a clone started). Zygotes'
/// init and runtime and their forkers are one below.
pub fn sandbox_processes(pid: u32) -> Vec<u32> {
    descendants(pid)
        .into_iter()
        .filter(|&p| ns_pids(p).is_some_and(|ids| ids.len() >= 3))
        .collect()
}

/// The zygotes' forkers among the descendants of `pid` (fnhost-zygote's
/// `reused_network`): processes of a zygote's pid namespace whose parent is
/// the zygote's runtime (a process of that namespace other than its init).
pub fn forker_processes(pid: u32) -> Vec<u32> {
    let parents = parent_links();
    descendants(pid)
        .into_iter()
        .filter(|&p| {
            let Some(parent) = parents.iter().find(|(c, _)| *c == p).map(|(_, pp)| *pp) else {
                return false;
            };
            let zygote_level = |ids: &Vec<u32>| ids.len() == 2;
            ns_pids(p).is_some_and(|ids| zygote_level(&ids))
                && ns_pids(parent).is_some_and(|ids| zygote_level(&ids) && ids[1] != 1)
        })
        .collect()
}

/// A process's pid in each pid namespace from the caller's inwards
/// (`NSpid` of /proc/PID/status).
fn ns_pids(pid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ids = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    ids.split_whitespace().map(|id| id.parse().ok()).collect()
}

/// The ppid field of a /proc/PID/stat line (after the parenthesised name,
/// which may itself contain spaces and parentheses).
fn parent_of(stat: &str) -> Option<u32> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Polls `f` every 50 ms until it returns true (true) or `timeout` passes
/// (false).
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parent_from_a_stat_line_with_odd_names() {
        assert_eq!(parent_of("42 (a) b) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of("42 (x"), None);
    }

    #[test]
    fn our_own_child_is_a_descendant() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let found = descendants(std::process::id()).contains(&child.id());
        assert!(alive(child.id()));
        let _ = child.kill();
        let _ = child.wait();
        assert!(found);
    }

    #[test]
    fn mount_points_are_the_fifth_field() {
        let info = "22 1 0:21 / /proc rw - proc proc rw\n23 22 0:5 / /tmp/x/m rw - tmpfs t rw\n";
        assert_eq!(
            mount_points(info).collect::<Vec<_>>(),
            ["/proc", "/tmp/x/m"]
        );
        assert!(has_mounts_below(Path::new("/proc")));
        assert!(!has_mounts_below(Path::new("/nonexistent/fnhost-testkit")));
    }

    #[test]
    fn missing_cgroup_roots_have_no_dirs() {
        assert!(cgroup_dirs("fnhost-testkit-never-created").is_empty());
        assert!(eventually(Duration::from_secs(1), || true));
    }
}
