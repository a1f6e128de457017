//! Sharing across copies: N copies of the no-op function (identical code,
//! `hibernate_share_pages = true`) hibernate in one daemon. While they
//! sleep, reports what the daemon shares (bytes each copy maps from the
//! group's base, the page cache of the copies' own snapshots and of the
//! base) against what unshared snapshots would hold (every data page), and
//! compares the snapshot files page by page: how many of the saved pages
//! are distinct, how many byte-identical in every copy.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::bench::{status_of, Bench};
use super::Subject;
use crate::daemon::{Daemon, FunctionPool, Hibernate};
use crate::stats::Percentiles;

/// How long the copies get to start and fall asleep.
const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// The comparison's result (also its JSON form).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Sharing {
    pub copies: u32,
    /// Snapshot files compared (one per sleeping zygote).
    pub snapshots: u64,
    /// Non-zero pages saved, over every snapshot.
    pub data_pages: u64,
    /// Of those, distinct contents: what page-level dedup would keep.
    pub distinct_pages: u64,
    /// Pages whose contents occur in at least two snapshots (one per
    /// snapshot holding them).
    pub shared_pages: u64,
    /// Distinct contents found in every snapshot.
    pub in_every_copy: u64,
    /// Page cache the sleeping copies' own snapshots held, summed.
    pub cached_bytes: u64,
    /// Bytes the copies map from their group's shared base, summed
    /// (admin API `status.snapshot_shared_bytes`).
    pub shared_bytes: u64,
    /// Shared base files, and the page cache they held.
    pub bases: u64,
    pub base_cached_bytes: u64,
    /// Afterwards each copy invoked once, asleep (woken by the request, no
    /// prefetch): wake-up + invoke latency, and failed or non-`wake`
    /// answers.
    pub wake: Option<Percentiles>,
    pub wake_failures: Vec<String>,
}

/// Starts `copies` copies hibernating after `after_ms`, waits until all
/// sleep, compares their snapshots, stops the daemon.
pub async fn run(fnhost: &Path, copies: u32, after_ms: u64, timeout: Duration) -> Result<Sharing> {
    // Names live as long as the suite's report: leaked once per run.
    let subjects: Vec<Subject> = (0..copies)
        .map(|i| Subject {
            name: Box::leak(format!("hib-share-{i:03}").into_boxed_str()),
            label: "copy",
            hibernate: Hibernate {
                after_ms,
                mode: "snapshot",
                prefetch: false,
                ready_asleep: 0,
                share_pages: true,
            },
            heap_mib: 0,
        })
        .collect();
    let pools: Vec<FunctionPool> = subjects
        .iter()
        .map(|s| FunctionPool {
            name: s.name,
            zygotes: 1,
            ready_clones: 0,
            native: false,
            hibernate: Some(s.hibernate),
            heap_mib: 0,
        })
        .collect();
    eprintln!("fnhost-bench: hibernation: {copies} copies of the no-op for the sharing count");
    let daemon = Daemon::start_with(fnhost, &pools, true).await?;
    let mut bench = Bench::new(&daemon, &subjects, timeout)?;
    let asleep = bench
        .wait_for(WAIT_LIMIT, |st| {
            subjects
                .iter()
                .all(|s| status_of(st, s.name).hibernated >= 1)
        })
        .await;
    if let Err(last) = asleep {
        {
            let sleeping = subjects
                .iter()
                .filter(|s| status_of(&last, s.name).hibernated >= 1)
                .count();
            bail!(
                "only {sleeping} of {copies} copies hibernated within {} s",
                WAIT_LIMIT.as_secs()
            );
        }
    }
    // Once the read-backs are done: the daemon reads each snapshot's own
    // pages (those not shared) back after hibernating it.
    let read_back = |st: &super::bench::Statuses| {
        subjects.iter().all(|s| {
            let s = status_of(st, s.name);
            s.snapshot_cached_bytes + s.snapshot_shared_bytes >= s.snapshot_bytes
        })
    };
    let statuses = match bench.wait_for(Duration::from_secs(30), read_back).await {
        Ok(st) => st,
        // Measured as it is: the report's cached bytes say what was read.
        Err(last) => last,
    };
    let sum = |field: fn(&super::bench::PoolStatus) -> u64| {
        subjects
            .iter()
            .map(|s| field(&status_of(&statuses, s.name)))
            .sum()
    };
    let cached_bytes = sum(|s| s.snapshot_cached_bytes);
    let shared_bytes = sum(|s| s.snapshot_shared_bytes);
    let dir = daemon.state_dir().join("snapshots");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let (bases, snapshots): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .partition(|f| f.extension().is_some_and(|e| e == "base"));
    let mut sharing = compare(&snapshots)?;
    sharing.copies = copies;
    sharing.cached_bytes = cached_bytes;
    sharing.shared_bytes = shared_bytes;
    sharing.bases = bases.len() as u64;
    sharing.base_cached_bytes = bases.iter().map(|b| page_cache_of(b)).sum();
    // Every copy woken: its pages come from the base and its own file.
    let (woken, failures) = bench.wake_each(&subjects).await;
    sharing.wake = (woken.summary().n > 0).then(|| woken.summary());
    sharing.wake_failures = failures;
    drop(daemon);
    Ok(sharing)
}

/// Counts pages by content over `files` (their data extents only: holes
/// are zero pages, which a snapshot never stores).
pub fn compare(files: &[PathBuf]) -> Result<Sharing> {
    let page = 4096usize;
    // Content hash → (snapshots it occurs in, last snapshot that counted it).
    let mut seen: HashMap<u128, (u64, usize)> = HashMap::new();
    let mut data_pages = 0;
    let mut buf = vec![0u8; page];
    for (index, path) in files.iter().enumerate() {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for offset in data_pages_of(&file, page as u64)? {
            file.read_exact_at(&mut buf, offset)
                .with_context(|| format!("reading {} at {offset}", path.display()))?;
            data_pages += 1;
            let entry = seen.entry(content_hash(&buf)).or_insert((0, usize::MAX));
            if entry.1 != index {
                *entry = (entry.0 + 1, index);
            }
        }
    }
    let snapshots = files.len() as u64;
    let mut shared_pages = 0;
    let mut in_every_copy = 0;
    // Pages of contents occurring in ≥ 2 snapshots: recount per content.
    for &(count, _) in seen.values() {
        if count >= 2 {
            shared_pages += count;
        }
        if snapshots > 0 && count == snapshots {
            in_every_copy += 1;
        }
    }
    Ok(Sharing {
        copies: 0,
        snapshots,
        data_pages,
        distinct_pages: seen.len() as u64,
        shared_pages,
        in_every_copy,
        ..Sharing::default()
    })
}

/// Bytes of `path` in the page cache now (`cachestat`; 0 when unknown).
fn page_cache_of(path: &Path) -> u64 {
    let Ok(file) = File::open(path) else {
        return 0;
    };
    let len = file.metadata().map_or(0, |m| m.len());
    fnhost_sandbox::sys::fd::cached_pages(std::os::fd::AsFd::as_fd(&file), 0, len)
        .map_or(0, |pages| pages * 4096)
}

/// 128 bits from two differently seeded SipHash runs: no collision is
/// expected among a few million pages.
fn content_hash(page: &[u8]) -> u128 {
    let mut a = DefaultHasher::new();
    page.hash(&mut a);
    let mut b = DefaultHasher::new();
    0xfeed_u16.hash(&mut b);
    page.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// Offsets of the file's data pages (`SEEK_DATA` / `SEEK_HOLE`).
fn data_pages_of(file: &File, page: u64) -> Result<Vec<u64>> {
    let len = file.metadata()?.len();
    let seek = |pos: u64, whence| {
        // SAFETY: lseek on an open descriptor; no memory involved.
        let at = unsafe { libc::lseek(file.as_raw_fd(), pos as libc::off_t, whence) };
        u64::try_from(at).ok()
    };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let Some(start) = seek(pos, libc::SEEK_DATA) else {
            break;
        };
        let end = seek(start, libc::SEEK_HOLE).unwrap_or(len).min(len);
        let mut at = start / page * page;
        while at < end {
            out.push(at);
            at += page;
        }
        pos = end.max(start + page);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_shared_and_common_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let page = 4096;
        let write = |name: &str, pages: &[(u64, u8)]| {
            let path = dir.path().join(name);
            let f = File::create(&path).expect("create");
            f.set_len(16 * page).expect("size");
            for &(at, byte) in pages {
                f.write_all_at(&vec![byte; page as usize], at * page)
                    .expect("write");
            }
            path
        };
        // Content 1 in all three, 2 in two of them, 3 and 4 in one each;
        // page 9 of `b` repeats content 1 within the same snapshot.
        let files = [
            write("a", &[(0, 1), (3, 2), (5, 3)]),
            write("b", &[(0, 1), (4, 2), (9, 1)]),
            write("c", &[(1, 1), (7, 4)]),
        ];
        let s = compare(&files).expect("compare");
        assert_eq!(s.snapshots, 3);
        assert_eq!(s.data_pages, 8);
        assert_eq!(s.distinct_pages, 4);
        assert_eq!(s.in_every_copy, 1);
        // Content 1: 3 snapshots, content 2: 2 snapshots.
        assert_eq!(s.shared_pages, 5);
    }
}
