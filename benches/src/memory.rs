//! Memory of the daemon's processes and of its memory cgroups, as the
//! density and hibernation suites read it: the daemon's descendants (from
//! the ppid field of `/proc/*/stat`) grouped by memory cgroup, PSS and USS
//! from `/proc/<pid>/smaps_rollup`, and the cgroup's own accounting (v1
//! `memory.usage_in_bytes` / v2 `memory.current`, and `memory.stat`).

use fnhost_sandbox::cgroup::names::{self, Member};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Memory of one process (or the sum over several), from smaps_rollup, in
/// KiB.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ProcMem {
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// Private_Clean + Private_Dirty: what exiting would free.
    pub uss_kib: u64,
}

impl ProcMem {
    fn add(&mut self, other: ProcMem) {
        self.rss_kib += other.rss_kib;
        self.pss_kib += other.pss_kib;
        self.uss_kib += other.uss_kib;
    }
}

/// Memory of every descendant of `root`, summed per memory cgroup path
/// (`/fnhost-bench-1/noop.zygote`, `/fnhost-bench-1/noop.s3`, ...).
pub fn by_cgroup(root: u32) -> BTreeMap<String, ProcMem> {
    let mut groups: BTreeMap<String, ProcMem> = BTreeMap::new();
    for (_, cgroup, mem) in processes(root) {
        groups.entry(cgroup).or_default().add(mem);
    }
    groups
}

/// Every live descendant of `root` with its memory cgroup path and memory.
pub fn processes(root: u32) -> Vec<(u32, String, ProcMem)> {
    descendants(root)
        .into_iter()
        .filter_map(|pid| Some((pid, memory_cgroup(pid)?, proc_mem(pid)?)))
        .collect()
}

/// Whether a cgroup path names a clone slot (`<function>.s<n>`).
pub fn is_clone_cgroup(cgroup: &str) -> bool {
    matches!(names::parse(cgroup), Some((_, Member::Slot(_))))
}

/// Whether a cgroup path names a function's zygotes (`<function>.zygote`).
pub fn is_zygote_cgroup(cgroup: &str) -> bool {
    matches!(names::parse(cgroup), Some((_, Member::Zygote)))
}

/// Whether a cgroup path names `function`'s zygotes.
pub fn is_zygote_cgroup_of(cgroup: &str, function: &str) -> bool {
    names::parse(cgroup) == Some((function, Member::Zygote))
}

/// Whether a cgroup path names one of `function`'s clone slots.
pub fn is_clone_cgroup_of(cgroup: &str, function: &str) -> bool {
    matches!(names::parse(cgroup), Some((f, Member::Slot(_))) if f == function)
}

/// Every descendant of `root` (from the ppid field of /proc/*/stat).
fn descendants(root: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(ppid) = fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| parse_ppid(&s))
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map_or(&[][..], |v| v.as_slice()) {
            out.push(child);
            stack.push(child);
        }
    }
    out
}

/// The ppid field of /proc/<pid>/stat (after the parenthesised comm).
fn parse_ppid(stat: &str) -> Option<u32> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// The process's memory cgroup path (v1 `memory` line, else the v2 line).
fn memory_cgroup(pid: u32) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    parse_memory_cgroup(&text)
}

fn parse_memory_cgroup(text: &str) -> Option<String> {
    let mut v2 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            return Some(path.to_owned());
        }
        if controllers.is_empty() {
            v2 = Some(path.to_owned());
        }
    }
    v2
}

/// smaps_rollup of one process; `None` once it has exited.
pub fn proc_mem(pid: u32) -> Option<ProcMem> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(parse_smaps_rollup(&text))
}

fn parse_smaps_rollup(text: &str) -> ProcMem {
    let mut m = ProcMem::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(value)) = (it.next(), it.next()) else {
            continue;
        };
        let Ok(kib) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "Rss:" => m.rss_kib = kib,
            "Pss:" => m.pss_kib = kib,
            "Private_Clean:" | "Private_Dirty:" => m.uss_kib += kib,
            _ => {}
        }
    }
    m
}

/// A cgroup's directory in each place it may be mounted: the v1 memory
/// hierarchy, a hybrid layout's cgroup2 mount, a pure cgroup2 mount.
fn cgroup_dirs(cgroup: &str) -> [PathBuf; 3] {
    let rel = cgroup.trim_start_matches('/');
    [
        PathBuf::from("/sys/fs/cgroup/memory").join(rel),
        PathBuf::from("/sys/fs/cgroup/unified").join(rel),
        PathBuf::from("/sys/fs/cgroup").join(rel),
    ]
}

/// The cgroup's charged memory: v1 `memory.usage_in_bytes`, else v2
/// `memory.current`.
pub fn cgroup_usage_kib(cgroup: &str) -> Option<u64> {
    cgroup_dirs(cgroup).iter().find_map(|dir| {
        ["memory.usage_in_bytes", "memory.current"]
            .iter()
            .find_map(|file| fs::read_to_string(dir.join(file)).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|b| b / 1024)
    })
}

/// What a cgroup's charge is made of, from `memory.stat`, in KiB.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CgroupStat {
    /// Anonymous memory (v1 `rss`, v2 `anon`).
    pub anon_kib: u64,
    /// Page cache, tmpfs included (v1 `cache`, v2 `file`).
    pub file_kib: u64,
}

/// The cgroup's own `memory.stat` (v1 or v2), without its descendants.
pub fn cgroup_stat(cgroup: &str) -> Option<CgroupStat> {
    cgroup_dirs(cgroup)
        .iter()
        .find_map(|dir| fs::read_to_string(dir.join("memory.stat")).ok())
        .map(|text| parse_memory_stat(&text))
}

fn parse_memory_stat(text: &str) -> CgroupStat {
    let mut stat = CgroupStat::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let Ok(bytes) = value.trim().parse::<u64>() else {
            continue;
        };
        match key {
            "rss" | "anon" => stat.anon_kib = bytes / 1024,
            "cache" | "file" => stat.file_kib = bytes / 1024,
            _ => {}
        }
    }
    stat
}

pub fn mem_available_kib() -> Result<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .context("no MemAvailable in /proc/meminfo")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(parse_ppid("123 (python3 (x)) S 45 123 123 0 -1"), Some(45));
        let cg = "12:pids:/a\n5:memory:/fnhost-bench-1/noop/s3\n0::/x\n";
        assert_eq!(
            parse_memory_cgroup(cg).as_deref(),
            Some("/fnhost-bench-1/noop/s3")
        );
        assert_eq!(
            parse_memory_cgroup("0::/only/v2\n").as_deref(),
            Some("/only/v2")
        );
        let smaps = "Rss:  2048 kB\nPss:  1024 kB\nPrivate_Clean: 10 kB\nPrivate_Dirty: 90 kB\n";
        assert_eq!(
            parse_smaps_rollup(smaps),
            ProcMem {
                rss_kib: 2048,
                pss_kib: 1024,
                uss_kib: 100
            }
        );
    }

    #[test]
    fn parses_memory_stat_of_both_versions() {
        let v1 = "cache 4096\nrss 8192\nrss_huge 0\ntotal_cache 1048576\ntotal_rss 2048\n";
        assert_eq!(
            parse_memory_stat(v1),
            CgroupStat {
                anon_kib: 8,
                file_kib: 4
            }
        );
        let v2 = "anon 2097152\nfile 1024\nkernel 4096\nfile_mapped 0\n";
        assert_eq!(
            parse_memory_stat(v2),
            CgroupStat {
                anon_kib: 2048,
                file_kib: 1
            }
        );
    }

    #[test]
    fn recognises_clone_cgroups() {
        assert!(is_clone_cgroup("/r/noop.s12"));
        assert!(!is_clone_cgroup("/r/noop.zygote"));
        assert!(!is_clone_cgroup("/r/noop.s"));
        assert!(!is_clone_cgroup("/r/noop.sx1"));
        assert!(is_clone_cgroup_of("/r/noop.s3", "noop"));
        assert!(!is_clone_cgroup_of("/r/noop.s3", "no"));
        assert!(is_zygote_cgroup_of("/r/noop.zygote", "noop"));
        assert!(!is_zygote_cgroup_of("/r/noop.zygote", "op"));
    }
}
