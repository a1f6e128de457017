//! What the scale suite samples of the host while the daemon runs: free
//! memory, kernel slab, fnhost's cgroup charge, processes in fnhost's
//! cgroups, cgroups, the daemon's RSS and descriptors. Each read is cheap
//! at 10,000 functions (counters the kernel keeps, no walk of /proc or of
//! the cgroup tree).

use std::fs;
use std::path::Path;

/// One sample (KiB unless named otherwise).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Sample {
    /// Seconds since the daemon was started.
    pub t_s: f64,
    pub mem_available_kib: u64,
    pub slab_kib: u64,
    /// Memory charged to fnhost's cgroup root (zygotes and sandboxes).
    pub fnhost_cgroup_kib: u64,
    pub daemon_rss_kib: u64,
    pub daemon_fds: u64,
    /// Processes in fnhost's cgroups (the pids controller's count).
    pub processes: u64,
    /// Memory-controller cgroups on the host (`/proc/cgroups`).
    pub cgroups: u64,
}

/// Reads `key:` of a `/proc`-style "key: value kB" file.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The first readable file of `names` in fnhost's root cgroup, under the
/// v1 `controller` hierarchy or the unified one.
fn root_value(cgroup_root: &str, controller: &str, names: &[&str]) -> Option<u64> {
    let dirs = [
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(cgroup_root),
        Path::new("/sys/fs/cgroup").join(cgroup_root),
    ];
    dirs.iter()
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find_map(|p| read_u64(&p))
}

/// `num_cgroups` of the memory controller in `/proc/cgroups` (v1); on a
/// pure v2 host, `nr_descendants` of the root cgroup.
pub fn cgroup_count() -> u64 {
    let v1 = fs::read_to_string("/proc/cgroups").ok().and_then(|text| {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"memory") && f.get(1) != Some(&"0"))
                .then(|| f.get(2)?.parse().ok())
                .flatten()
        })
    });
    v1.or_else(|| {
        let stat = fs::read_to_string("/sys/fs/cgroup/cgroup.stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("nr_descendants "))
            .and_then(|v| v.trim().parse().ok())
    })
    .unwrap_or(0)
}

/// Samples the host and the daemon `pid` whose cgroups are `cgroup_root`.
pub fn sample(t_s: f64, pid: u32, cgroup_root: &str) -> Sample {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Sample {
        t_s,
        mem_available_kib: kib_field(&meminfo, "MemAvailable").unwrap_or(0),
        slab_kib: kib_field(&meminfo, "Slab").unwrap_or(0),
        fnhost_cgroup_kib: root_value(
            cgroup_root,
            "memory",
            &["memory.usage_in_bytes", "memory.current"],
        )
        .map_or(0, |b| b / 1024),
        daemon_rss_kib: kib_field(&status, "VmRSS").unwrap_or(0),
        daemon_fds: fnhost_testkit::fd_count(pid) as u64,
        processes: root_value(cgroup_root, "pids", &["pids.current"]).unwrap_or(0),
        cgroups: cgroup_count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   1234 kB\nSlab: 99 kB\n";
        assert_eq!(kib_field(text, "MemAvailable"), Some(1234));
        assert_eq!(kib_field(text, "Slab"), Some(99));
        assert_eq!(kib_field(text, "Mem"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(0.0, std::process::id(), "no-such-cgroup-root");
        assert!(s.mem_available_kib > 0 && s.daemon_rss_kib > 0 && s.daemon_fds > 0);
        assert_eq!((s.fnhost_cgroup_kib, s.processes), (0, 0));
    }
}
