//! The snapshot file, daemon side: created empty, filled by the zygote,
//! sealed (synced, its data extents found, its page cache moved to the
//! daemon) and unlinked when dropped (a woken zygote keeps it mapped).
//!
//! Layout: the regions concatenated in address order, then a sparse tail
//! ([`GROWTH_TAIL`]); only non-zero pages were written, so zero pages are
//! holes found with `SEEK_DATA`/`SEEK_HOLE`.
//!
//! # Whose memory the page cache is
//! The zygote's writes charge the file's pages to the zygote's memory
//! cgroup. Sealing drops them (`POSIX_FADV_DONTNEED`) and reads the data
//! back from the daemon ([`Snapshot::seal`]): the clean page cache a
//! hibernated zygote wakes from is then charged to the daemon's cgroup,
//! where the kernel may reclaim it under pressure (a later wake-up reads it
//! back from disk), and the function's own cgroup holds only what cannot be
//! reclaimed without I/O. [`Snapshot::cached_bytes`] reports it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fnhost_sandbox::sys::fd as sys;

use crate::regions::{self, page_ceil, page_floor, Region};
use crate::remap::{FileId, GROWTH_TAIL};
use crate::restore::RestoreError;
use crate::shared::SharedRun;

/// A run of data pages: where it goes in the zygote and where it is in the
/// file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub addr: u64,
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.addr + self.len
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealStats {
    /// Bytes of non-zero pages in the file.
    pub data_bytes: u64,
    /// The file's apparent size.
    pub file_bytes: u64,
}

#[derive(Debug)]
pub struct Snapshot {
    name: Name,
    /// Shared with whoever serves its pages (see [`Snapshot::shared_file`]):
    /// one descriptor per snapshot, where a daemon keeps thousands.
    file: Arc<File>,
    regions: Vec<Region>,
    extents: Vec<Extent>,
    /// The extents whose pages the zygote maps from this file (all of them
    /// unless some are shared with a base): what is read back and
    /// prefetched.
    own: Vec<Extent>,
    sealed: Option<SealStats>,
}

impl Snapshot {
    /// Create the (empty, `0600`) file; its parent directory must exist and
    /// the name must be new.
    pub fn create(path: PathBuf) -> io::Result<Snapshot> {
        let file = create_private(&path, "snapshot")?;
        Ok(Snapshot {
            name: Name(path),
            file: Arc::new(file),
            regions: Vec::new(),
            extents: Vec::new(),
            own: Vec::new(),
            sealed: None,
        })
    }

    /// The fd to pass to the zygote.
    pub fn file(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The open file itself, shared rather than duplicated: for readers
    /// that outlive a borrow (the page-fault server, the page-cache gauge).
    pub fn shared_file(&self) -> Arc<File> {
        self.file.clone()
    }

    pub fn path(&self) -> &Path {
        &self.name.0
    }

    /// Closes the descriptor of a sealed snapshot, keeping the file, while
    /// its zygote sleeps: a host of thousands of hibernated functions
    /// would hold one each. Readers sharing it ([`Snapshot::shared_file`],
    /// a [`ReadBack`]) keep it open until they are done.
    pub fn close(self) -> Result<ClosedSnapshot, RestoreError> {
        let sealed = self.sealed.ok_or_else(|| RestoreError::NotSealed {
            path: self.path().to_path_buf(),
        })?;
        let id = FileId::of(self.file.as_fd()).map_err(|source| RestoreError::Map {
            path: self.path().to_path_buf(),
            source,
        })?;
        Ok(ClosedSnapshot {
            name: self.name,
            id,
            regions: self.regions,
            extents: self.extents,
            own: self.own,
            sealed,
        })
    }

    /// After the zygote reported its window done: sync the file, record
    /// `regions` (as reported by the zygote), find the data extents, drop
    /// the file's page cache (charged to the zygote) and, with `cache`, read
    /// the data back in (charged to the daemon; see the module docs).
    pub fn seal(&mut self, regions: Vec<Region>, cache: bool) -> Result<SealStats, RestoreError> {
        self.seal_with(regions, cache, true)
    }

    /// [`Snapshot::seal`] without the read-back, for a snapshot about to be
    /// shared with a base: its page cache (the zygote's writes) stays for
    /// the comparison, which then drops it ([`SharedBase::share`](crate::SharedBase::share)).
    /// If sharing fails, call [`Snapshot::drop_cache`].
    pub fn seal_for_sharing(&mut self, regions: Vec<Region>) -> Result<SealStats, RestoreError> {
        self.seal_with(regions, false, false)
    }

    fn seal_with(
        &mut self,
        regions: Vec<Region>,
        cache: bool,
        drop_cache: bool,
    ) -> Result<SealStats, RestoreError> {
        let page = regions::page_size();
        let total =
            check_regions(&regions, page).map_err(|reason| RestoreError::InvalidRegions {
                path: self.path().to_path_buf(),
                reason,
            })?;
        let seal_err = |step: &'static str| {
            let path = self.path().to_path_buf();
            move |source| RestoreError::Seal { path, step, source }
        };
        self.file.sync_data().map_err(seal_err("fdatasync"))?;
        let file_bytes = self.file.metadata().map_err(seal_err("stat"))?.len();
        if file_bytes > total + GROWTH_TAIL {
            return Err(RestoreError::InvalidRegions {
                path: self.path().to_path_buf(),
                reason: "the file is larger than its regions",
            });
        }
        let data = data_ranges(&self.file, file_bytes, page).map_err(seal_err("seek data"))?;
        let extents = extents(&regions, &data);
        if drop_cache {
            self.drop_cache();
        }
        if cache {
            ReadBack {
                file: self.file.clone(),
                extents: extents.clone(),
            }
            .run()
            .map_err(seal_err("read back"))?;
        }
        let stats = SealStats {
            data_bytes: extents.iter().map(|e| e.len).sum(),
            file_bytes,
        };
        self.regions = regions;
        self.own = extents.clone();
        self.extents = extents;
        self.sealed = Some(stats);
        Ok(stats)
    }

    /// What [`Snapshot::seal`] with `cache` does last, to run apart (off
    /// a lock): read the data back into the page cache. `None` before the
    /// seal.
    pub fn read_back(&self) -> Option<ReadBack> {
        self.sealed?;
        Some(ReadBack {
            file: self.file.clone(),
            extents: self.own.clone(),
        })
    }

    /// Bytes of the snapshot's data in the page cache now (`cachestat`);
    /// 0 before [`Snapshot::seal`] or when the kernel cannot say.
    pub fn cached_bytes(&self) -> u64 {
        let page = regions::page_size();
        let layout: u64 = self.regions.iter().map(|r| r.len).sum();
        if layout == 0 {
            return 0;
        }
        sys::cached_pages(self.file.as_fd(), 0, layout).map_or(0, |pages| pages * page)
    }

    /// Starts reading every data extent into the page cache
    /// (`POSIX_FADV_WILLNEED`), for a wake-up after the cache was
    /// reclaimed; returns the bytes asked for. Asynchronous: the zygote's
    /// first touches wait for the reads in flight instead of issuing their
    /// own.
    pub fn prefetch(&self) -> u64 {
        let mut asked = 0;
        for e in &self.own {
            if sys::fadvise_willneed(self.file.as_fd(), e.offset, e.len).is_ok() {
                asked += e.len;
            }
        }
        asked
    }

    /// Before a wake-up maps the file: it must still be sealed and as long
    /// as when it was sealed. A mapping past the end of a truncated file
    /// would raise `SIGBUS` in the zygote (or a clone) at first touch; this
    /// check turns it into a failed wake-up, which becomes a cold start.
    pub fn check_intact(&self) -> Result<(), RestoreError> {
        let Some(sealed) = self.sealed else {
            return Err(RestoreError::NotSealed {
                path: self.path().to_path_buf(),
            });
        };
        let len = self
            .file
            .metadata()
            .map_err(|source| RestoreError::Map {
                path: self.path().to_path_buf(),
                source,
            })?
            .len();
        if len != sealed.file_bytes {
            return Err(RestoreError::Truncated {
                path: self.path().to_path_buf(),
                len,
                sealed: sealed.file_bytes,
            });
        }
        Ok(())
    }

    /// After sharing with a base (`shared::SharedBase::share`): the pages
    /// of `runs` come from the base, so the read-back and the prefetch
    /// cover only the rest, and the page cache the comparison read is
    /// dropped. The file keeps every page (a sleeping zygote's faults are
    /// served from it).
    pub(crate) fn keep_own(&mut self, runs: &[SharedRun]) {
        self.own = without_runs(&self.extents, runs);
        self.drop_cache();
    }

    /// Drops the file's page cache (`POSIX_FADV_DONTNEED`): what the
    /// zygote's writes charged to its cgroup. The daemon reads back what
    /// the zygote will map (see the module docs).
    pub fn drop_cache(&self) {
        if let Err(e) = sys::fadvise_dontneed(self.file.as_fd()) {
            let errno = e.raw_os_error().unwrap_or(0);
            tracing::warn!(path = %self.path().display(), errno, "drop snapshot page cache");
        }
    }

    /// Bytes of saved (non-zero) pages; 0 before [`Snapshot::seal`].
    pub fn data_bytes(&self) -> u64 {
        self.sealed.map_or(0, |s| s.data_bytes)
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub(crate) fn sealed(&self) -> Option<SealStats> {
        self.sealed
    }

    /// Every data extent of the file (shared or not).
    pub(crate) fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// The extents not shared with a base.
    #[cfg(test)]
    pub(crate) fn own_extents(&self) -> &[Extent] {
        &self.own
    }

    pub(crate) fn file_ref(&self) -> &File {
        &self.file
    }

    /// The file offset of the saved page at `addr`; `None` for a zero page.
    pub(crate) fn data_offset(&self, addr: u64) -> Option<u64> {
        data_offset(&self.extents, addr)
    }
}

/// A snapshot file's name, unlinked when dropped: a [`Snapshot`] and a
/// [`ClosedSnapshot`] pass it on to each other.
#[derive(Debug)]
struct Name(PathBuf);

impl Drop for Name {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.0) {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %err, "remove snapshot");
            }
        }
    }
}

/// A sealed snapshot without an open descriptor ([`Snapshot::close`]);
/// dropping it unlinks the file, as for a [`Snapshot`].
#[derive(Debug)]
pub struct ClosedSnapshot {
    name: Name,
    /// The file it was: what [`ClosedSnapshot::reopen`] must find.
    id: FileId,
    regions: Vec<Region>,
    extents: Vec<Extent>,
    own: Vec<Extent>,
    sealed: SealStats,
}

impl ClosedSnapshot {
    pub fn path(&self) -> &Path {
        &self.name.0
    }

    /// Bytes of saved (non-zero) pages.
    pub fn data_bytes(&self) -> u64 {
        self.sealed.data_bytes
    }

    /// Opens it again by name for a wake-up: the same file (device and
    /// inode), still as long as when it was sealed ([`Snapshot::check_intact`]).
    pub fn reopen(self) -> Result<Snapshot, RestoreError> {
        let path = self.path().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| RestoreError::Reopen {
                path: path.clone(),
                source,
            })?;
        let id = FileId::of(file.as_fd()).map_err(|source| RestoreError::Reopen {
            path: path.clone(),
            source,
        })?;
        if id != self.id {
            return Err(RestoreError::Replaced { path });
        }
        let snapshot = Snapshot {
            name: self.name,
            file: Arc::new(file),
            regions: self.regions,
            extents: self.extents,
            own: self.own,
            sealed: Some(self.sealed),
        };
        snapshot.check_intact()?;
        Ok(snapshot)
    }
}

/// Creates the new, empty file `path` (mode `0600`, close-on-exec), open
/// for reading and writing; `what` names it in the error.
pub(crate) fn create_private(path: &Path, what: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("create {what} {}: {err}", path.display()),
            )
        })
}

/// Reading a sealed snapshot's data back into the page cache, charged to
/// the caller's cgroup (see the module docs). Blocking.
#[derive(Debug)]
pub struct ReadBack {
    file: Arc<File>,
    extents: Vec<Extent>,
}

impl ReadBack {
    pub fn run(self) -> io::Result<()> {
        // Without readahead: it would also cache the zero-filled holes
        // next to the data (a third more in a measured Python zygote).
        let _ = sys::fadvise_random(self.file.as_fd(), true);
        let read = read_extents(&self.file, &self.extents);
        let _ = sys::fadvise_random(self.file.as_fd(), false);
        read
    }
}

/// Reads every extent once (into a reused buffer), so the page cache holds
/// the data, charged to the caller's cgroup.
fn read_extents(file: &File, extents: &[Extent]) -> io::Result<()> {
    each_chunk(file, extents, |_, _| Ok(()))
}

/// Reads every extent of `file` in chunks of up to 1 MiB (one reused
/// buffer) and hands each to `chunk` with its file offset.
pub(crate) fn each_chunk(
    file: &File,
    extents: &[Extent],
    mut chunk: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    for e in extents {
        let mut at = e.offset;
        while at < e.offset + e.len {
            let want = (e.offset + e.len - at).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..want], at)?;
            chunk(&buf[..want], at)?;
            at += want as u64;
        }
    }
    Ok(())
}

/// Regions must be page aligned, non-empty, sorted and disjoint; returns
/// their total length.
fn check_regions(regions: &[Region], page: u64) -> Result<u64, &'static str> {
    let mut total = 0u64;
    let mut prev_end = 0;
    for r in regions {
        if r.start % page != 0 || r.len % page != 0 || r.len == 0 {
            return Err("a region is empty or not page aligned");
        }
        if r.start < prev_end {
            return Err("regions overlap or are out of order");
        }
        prev_end = r.start.checked_add(r.len).ok_or("a region wraps around")?;
        total = total.checked_add(r.len).ok_or("regions too large")?;
    }
    Ok(total)
}

/// The file's data ranges (page aligned, clipped to `file_bytes`).
fn data_ranges(file: &File, file_bytes: u64, page: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < file_bytes {
        let Some(start) = seek(file, pos, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(file, start, libc::SEEK_HOLE)?.unwrap_or(file_bytes);
        let (start, end) = (
            page_floor(start, page),
            page_ceil(end, page).min(file_bytes),
        );
        if start < end {
            ranges.push((start, end));
        }
        pos = end.max(start + page);
    }
    Ok(ranges)
}

/// lseek(2); `None` for ENXIO (no data/hole at or after `pos`).
fn seek(file: &File, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    match sys::lseek(file.as_fd(), pos, whence) {
        Ok(at) => Ok(Some(at)),
        Err(err) if err.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Map file data ranges onto region addresses, splitting at region
/// boundaries. Both inputs sorted; the output is sorted by address.
pub(crate) fn extents(regions: &[Region], data: &[(u64, u64)]) -> Vec<Extent> {
    let mut out = Vec::new();
    for (region, offset) in regions::layout(regions) {
        let region_end = offset + region.len;
        for &(start, end) in data {
            let (lo, hi) = (start.max(offset), end.min(region_end));
            if lo < hi {
                out.push(Extent {
                    addr: region.start + (lo - offset),
                    offset: lo,
                    len: hi - lo,
                });
            }
        }
    }
    out
}

/// `extents` less the addresses `runs` cover; both sorted by address.
fn without_runs(extents: &[Extent], runs: &[SharedRun]) -> Vec<Extent> {
    let mut out = Vec::new();
    for e in extents {
        let mut at = e.addr;
        for r in runs
            .iter()
            .filter(|r| r.addr < e.end() && e.addr < r.addr + r.len)
        {
            if r.addr > at {
                out.push(Extent {
                    addr: at,
                    offset: e.offset + (at - e.addr),
                    len: r.addr - at,
                });
            }
            at = at.max(r.addr + r.len);
        }
        if at < e.end() {
            out.push(Extent {
                addr: at,
                offset: e.offset + (at - e.addr),
                len: e.end() - at,
            });
        }
    }
    out
}

pub(crate) fn data_offset(extents: &[Extent], addr: u64) -> Option<u64> {
    let i = extents.partition_point(|e| e.end() <= addr);
    extents
        .get(i)
        .filter(|e| e.addr <= addr)
        .map(|e| e.offset + (addr - e.addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = 0x1000;

    fn r(start: u64, len: u64) -> Region {
        Region { start, len }
    }

    #[test]
    fn check_regions_rejects_bad_lists() {
        assert_eq!(
            check_regions(&[r(0x1000, P), r(0x3000, 2 * P)], P),
            Ok(3 * P)
        );
        assert!(check_regions(&[r(0x1001, P)], P).is_err());
        assert!(check_regions(&[r(0x1000, 0)], P).is_err());
        assert!(check_regions(&[r(0x3000, P), r(0x1000, P)], P).is_err());
        assert!(check_regions(&[r(0x1000, 2 * P), r(0x2000, P)], P).is_err());
        assert!(check_regions(&[r(u64::MAX - 0xfff, 2 * P)], P).is_err());
    }

    #[test]
    fn extents_split_at_region_boundaries() {
        // Region A: 0x10000..0x14000 at file 0..0x4000,
        // region B: 0x80000..0x82000 at file 0x4000..0x6000.
        let regions = [r(0x10000, 4 * P), r(0x80000, 2 * P)];
        let data = [(P, 2 * P), (3 * P, 5 * P)];
        assert_eq!(
            extents(&regions, &data),
            vec![
                Extent {
                    addr: 0x11000,
                    offset: P,
                    len: P
                },
                Extent {
                    addr: 0x13000,
                    offset: 3 * P,
                    len: P
                },
                Extent {
                    addr: 0x80000,
                    offset: 4 * P,
                    len: P
                },
            ]
        );
    }

    #[test]
    fn shared_runs_are_cut_out_of_the_extents() {
        let ext = |addr, offset, len| Extent { addr, offset, len };
        let run = |addr, len| SharedRun {
            addr,
            base_offset: 0,
            len,
        };
        // Extent 0x10000..0x15000 at file 0; extent 0x80000..0x81000.
        let extents = [ext(0x10000, 0, 5 * P), ext(0x80000, 8 * P, P)];
        let runs = [run(0x10000, P), run(0x12000, 2 * P), run(0x80000, P)];
        assert_eq!(
            without_runs(&extents, &runs),
            vec![ext(0x11000, P, P), ext(0x14000, 4 * P, P)]
        );
        assert_eq!(without_runs(&extents, &[]), extents.to_vec());
    }

    #[test]
    fn data_offset_tells_data_from_holes() {
        let regions = [r(0x10000, 4 * P), r(0x80000, 2 * P)];
        let ext = extents(&regions, &[(P, 2 * P), (3 * P, 5 * P)]);
        assert_eq!(data_offset(&ext, 0x11000), Some(P));
        assert_eq!(data_offset(&ext, 0x11fff), Some(2 * P - 1));
        assert_eq!(data_offset(&ext, 0x10000), None);
        assert_eq!(data_offset(&ext, 0x12000), None);
        assert_eq!(data_offset(&ext, 0x80000), Some(4 * P));
        assert_eq!(data_offset(&ext, 0x81000), None);
        assert_eq!(data_offset(&ext, 0x5000), None);
    }

    #[test]
    fn seal_finds_holes_and_unlinks_on_drop() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.snap");
        let mut snap = Snapshot::create(path.clone()).expect("create");
        assert!(Snapshot::create(path.clone()).is_err(), "O_EXCL");
        let page = regions::page_size();
        let f = snap.file_ref();
        f.write_all_at(&vec![1u8; page as usize], page)
            .expect("write");
        f.write_all_at(&vec![2u8; page as usize], 5 * page)
            .expect("write");
        let regions = vec![r(0x400000, 4 * page), r(0x900000, 4 * page)];
        let stats = snap.seal(regions, true).expect("seal");
        // cachestat(2) needs Linux 6.5; older kernels cannot tell.
        if sys::cached_pages(snap.file(), 0, page).is_ok() {
            assert_eq!(snap.cached_bytes(), 2 * page, "only the data, read back");
        }
        assert_eq!(stats.file_bytes, 6 * page);
        assert_eq!(stats.data_bytes, 2 * page);
        assert_eq!(snap.data_bytes(), 2 * page);
        assert_eq!(snap.data_offset(0x400000 + page), Some(page));
        assert_eq!(snap.data_offset(0x400000), None);
        assert_eq!(snap.data_offset(0x900000 + page), Some(5 * page));
        snap.check_intact().expect("intact");
        snap.file_ref().set_len(page).expect("truncate");
        let err = snap.check_intact().expect_err("truncated");
        assert!(err.to_string().contains("truncated"), "{err}");
        drop(snap);
        assert!(!path.exists());
    }

    /// A sealed two-page snapshot (data in its second page) at `path`.
    fn sealed_at(path: &Path) -> Snapshot {
        use std::os::unix::fs::FileExt;
        let page = regions::page_size();
        let mut snap = Snapshot::create(path.to_path_buf()).expect("create");
        snap.file_ref()
            .write_all_at(&vec![7u8; page as usize], page)
            .expect("write");
        snap.seal(vec![r(0x400000, 2 * page)], false).expect("seal");
        snap
    }

    #[test]
    fn a_closed_snapshot_reopens_as_the_same_file_and_unlinks_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.snap");
        let page = regions::page_size();
        let closed = sealed_at(&path).close().expect("close");
        assert!(path.exists(), "closing keeps the file");
        assert_eq!(closed.data_bytes(), page);
        let snap = closed.reopen().expect("reopen");
        assert_eq!(snap.data_offset(0x400000 + page), Some(page));
        let mut byte = [0u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(snap.file_ref(), &mut byte, page).expect("read");
        assert_eq!(byte, [7]);
        // Closed again and dropped: the name goes with it.
        drop(snap.close().expect("close"));
        assert!(!path.exists());
        assert!(
            Snapshot::create(path.clone())
                .expect("create")
                .close()
                .is_err(),
            "only a sealed snapshot closes"
        );
    }

    #[test]
    fn a_closed_snapshot_replaced_or_truncated_does_not_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.snap");
        let closed = sealed_at(&path).close().expect("close");
        // Another file of the same size under its name.
        let other = dir.path().join("other");
        std::fs::write(&other, vec![7u8; 2 * regions::page_size() as usize]).expect("write");
        std::fs::rename(&other, &path).expect("rename");
        let err = closed.reopen().expect_err("replaced");
        assert!(matches!(err, RestoreError::Replaced { .. }), "{err}");

        let path = dir.path().join("t.snap");
        let closed = sealed_at(&path).close().expect("close");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(1)
            .expect("truncate");
        let err = closed.reopen().expect_err("truncated");
        assert!(err.to_string().contains("truncated"), "{err}");
        let missing = sealed_at(&dir.path().join("m.snap"))
            .close()
            .expect("close");
        std::fs::remove_file(dir.path().join("m.snap")).expect("remove");
        let err = missing.reopen().expect_err("missing");
        assert!(err.to_string().contains("cannot reopen"), "{err}");
    }

    #[test]
    fn seal_rejects_a_file_larger_than_its_regions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut snap = Snapshot::create(dir.path().join("big.snap")).expect("create");
        snap.file_ref()
            .set_len(2 * regions::page_size() + GROWTH_TAIL)
            .expect("grow");
        let err = snap
            .seal(vec![r(0x400000, regions::page_size())], false)
            .expect_err("too large");
        assert!(err.to_string().contains("larger"), "{err}");
    }
}
