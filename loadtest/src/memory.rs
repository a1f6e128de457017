//! Host memory of fnhost's sandboxes, read from its cgroup subtree while a
//! run is in progress: `memory.usage_in_bytes` on cgroup v1 (and hybrid
//! hosts), `memory.current` on a pure v2 host. Both count the subtree's
//! zygotes and clones, including page cache charged to them. Before a run
//! the processes of the subtree are also counted and their proportional
//! set size (PSS) summed: what the idle pools cost, shared pages split
//! fairly between the processes that map them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct MemoryStats {
    /// Before the load started (pools warm, nothing in flight): what the
    /// pool configuration costs at rest.
    pub idle_bytes: u64,
    pub mean_bytes: u64,
    pub peak_bytes: u64,
    pub samples: usize,
    /// Processes in the subtree and the sum of their PSS, at idle.
    pub idle_processes: Option<usize>,
    pub idle_pss_bytes: Option<u64>,
}

/// The cgroup directory holding `usage_file` (the subtree root).
fn subtree_of(usage_file: &Path) -> Option<&Path> {
    usage_file.parent()
}

/// Every pid in the cgroup directory `dir` and below.
pub fn subtree_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_dir()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// `Pss:` of an smaps_rollup text, in bytes.
pub fn parse_pss(smaps_rollup: &str) -> Option<u64> {
    let line = smaps_rollup.lines().find(|l| l.starts_with("Pss:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Process count and summed PSS of the cgroup subtree that `usage_file`
/// belongs to (processes that exit meanwhile are skipped).
pub fn subtree_pss(usage_file: &Path) -> Option<(usize, u64)> {
    let pids = subtree_pids(subtree_of(usage_file)?);
    let pss = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|t| parse_pss(&t))
        .sum();
    Some((pids.len(), pss))
}

/// The usage file of cgroup `root` under the cgroup mount `base`
/// (normally /sys/fs/cgroup), if it exists: v1 memory controller first.
pub fn usage_file(base: &Path, root: &str) -> Option<PathBuf> {
    [
        base.join("memory").join(root).join("memory.usage_in_bytes"),
        base.join(root).join("memory.current"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

pub fn read_usage(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn summarize(
    idle: u64,
    idle_pss: Option<(usize, u64)>,
    samples: &[u64],
) -> Option<MemoryStats> {
    if samples.is_empty() {
        return None;
    }
    let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    Some(MemoryStats {
        idle_bytes: idle,
        mean_bytes: (sum / samples.len() as u128) as u64,
        peak_bytes: samples.iter().copied().max().unwrap_or(0).max(idle),
        samples: samples.len(),
        idle_processes: idle_pss.map(|p| p.0),
        idle_pss_bytes: idle_pss.map(|p| p.1),
    })
}

/// Samples a usage file on an interval until finished.
pub struct Sampler {
    stop: Arc<Notify>,
    task: JoinHandle<Vec<u64>>,
}

impl Sampler {
    pub fn start(path: PathBuf, interval: Duration) -> Sampler {
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Some(v) = read_usage(&path) {
                            samples.push(v);
                        }
                    }
                    _ = stopped.notified() => break,
                }
            }
            if let Some(v) = read_usage(&path) {
                samples.push(v);
            }
            samples
        });
        Sampler { stop, task }
    }

    pub async fn finish(self) -> Vec<u64> {
        self.stop.notify_one();
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fnhost-loadtest-mem-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn finds_v1_then_v2_usage_files() {
        let v1 = scratch("v1");
        std::fs::create_dir_all(v1.join("memory/fnhost")).unwrap();
        std::fs::write(v1.join("memory/fnhost/memory.usage_in_bytes"), "1048576\n").unwrap();
        let f = usage_file(&v1, "fnhost").unwrap();
        assert_eq!(read_usage(&f), Some(1 << 20));

        let v2 = scratch("v2");
        std::fs::create_dir_all(v2.join("fnhost")).unwrap();
        std::fs::write(v2.join("fnhost/memory.current"), "42\n").unwrap();
        assert_eq!(read_usage(&usage_file(&v2, "fnhost").unwrap()), Some(42));
        assert!(usage_file(&v2, "other").is_none());
        let _ = std::fs::remove_dir_all(v1);
        let _ = std::fs::remove_dir_all(v2);
    }

    #[test]
    fn summary_has_mean_and_peak() {
        let s = summarize(10, Some((3, 5)), &[20, 40, 30]).unwrap();
        assert_eq!(
            (s.idle_bytes, s.mean_bytes, s.peak_bytes, s.samples),
            (10, 30, 40, 3)
        );
        assert_eq!((s.idle_processes, s.idle_pss_bytes), (Some(3), Some(5)));
        assert_eq!(summarize(50, None, &[20]).unwrap().peak_bytes, 50);
        assert!(summarize(1, None, &[]).is_none());
    }

    #[test]
    fn collects_pids_of_a_subtree_and_their_pss() {
        let root = scratch("pids");
        std::fs::create_dir_all(root.join("f00.zygote")).unwrap();
        std::fs::create_dir_all(root.join("f00.s1")).unwrap();
        std::fs::write(root.join("cgroup.procs"), "").unwrap();
        std::fs::write(root.join("f00.zygote/cgroup.procs"), "10\n11\n").unwrap();
        std::fs::write(root.join("f00.s1/cgroup.procs"), "12\n").unwrap();
        assert_eq!(subtree_pids(&root), vec![10, 11, 12]);
        let rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  25000 kB\nPss:  1234 kB\nPss_Anon: 1000 kB\n";
        assert_eq!(parse_pss(rollup), Some(1234 * 1024));
        assert_eq!(parse_pss("Rss: 1 kB\n"), None);
        // This process's own subtree: at least itself, with some PSS.
        let own = root.join("own");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(
            own.join("cgroup.procs"),
            format!("{}\n", std::process::id()),
        )
        .unwrap();
        let (n, pss) = subtree_pss(&own.join("memory.current")).unwrap();
        assert_eq!(n, 1);
        assert!(pss > 0);
        let _ = std::fs::remove_dir_all(root);
    }

    #[tokio::test]
    async fn sampler_collects_until_finished() {
        let dir = scratch("sampler");
        let file = dir.join("memory.current");
        std::fs::write(&file, "7\n").unwrap();
        let sampler = Sampler::start(file, Duration::from_millis(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let samples = sampler.finish().await;
        assert!(!samples.is_empty());
        assert!(samples.iter().all(|&s| s == 7));
        let _ = std::fs::remove_dir_all(dir);
    }
}
