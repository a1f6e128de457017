//! The copy restore: put a hibernated process's pages back through its
//! userfaultfd, serving its page faults first. The daemon wakes zygotes by
//! having them map the snapshot instead (`remap.rs`); this stays as a
//! library API, exercised by the snapshot tests, but the daemon no longer
//! calls it.
//!
//! The snapshot is mapped read-only and its addresses are only ever passed
//! to `UFFDIO_COPY`; the daemon never reads the mapping itself. The kernel
//! reads the source with fault-tolerant user copies, so a snapshot that was
//! truncated or hits an I/O error makes the ioctl fail with `EFAULT`
//! instead of raising `SIGBUS` in the daemon. Keep it that way.

use std::io;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fnhost_sandbox::sys::uffd;
use memmap2::{Advice, MmapOptions, MmapRaw};

use crate::regions::{self, page_ceil};
use crate::snapshot::Extent;
pub use crate::snapshot::{SealStats, Snapshot};
pub use crate::working_set::WorkingSet;

/// Bytes copied per `UFFDIO_COPY` between two looks at pending faults.
const CHUNK: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot {path}: invalid regions from the zygote: {reason}")]
    InvalidRegions { path: PathBuf, reason: &'static str },
    #[error("seal snapshot {path}: {step}: {source}")]
    Seal {
        path: PathBuf,
        step: &'static str,
        source: io::Error,
    },
    #[error("snapshot {path} was not sealed before the wake")]
    NotSealed { path: PathBuf },
    #[error("map snapshot {path}: {source}")]
    Map { path: PathBuf, source: io::Error },
    #[error("copy {len} bytes to {addr:#x}: {source}")]
    Copy {
        addr: u64,
        len: u64,
        source: io::Error,
    },
    #[error("zero page at {addr:#x}: {source}")]
    ZeroPage { addr: u64, source: io::Error },
    #[error("wake faulting threads at {addr:#x}: {source}")]
    WakePage { addr: u64, source: io::Error },
    #[error("read userfaultfd events: {source}")]
    ReadEvents { source: io::Error },
    #[error("page fault at {addr:#x} outside every hibernated region")]
    UnexpectedFault { addr: u64 },
    #[error(
        "snapshot {path} unreadable at offset {offset} (for {addr:#x}): truncated or I/O error"
    )]
    SnapshotUnreadable {
        path: PathBuf,
        offset: u64,
        addr: u64,
    },
    #[error("snapshot {path} changed size since it was sealed ({len} bytes, sealed at {sealed}): truncated")]
    Truncated {
        path: PathBuf,
        len: u64,
        sealed: u64,
    },
    #[error("cannot reopen snapshot {path}: {source}")]
    Reopen { path: PathBuf, source: io::Error },
    #[error(
        "snapshot {path} is another file than the one sealed (replaced while its zygote slept)"
    )]
    Replaced { path: PathBuf },
    #[error("the hibernated process is gone")]
    ProcessGone,
    #[error(
        "wake missed its deadline after {elapsed:?} with up to {remaining} bytes left to copy"
    )]
    Deadline { elapsed: Duration, remaining: u64 },
}

/// A hibernated zygote, as the daemon holds it. Dropping it closes the
/// daemon's copy of the uffd and unlinks the snapshot; the ranges stay
/// registered until the zygote closes its own copy ([`Slept::uffd`](crate::Slept)),
/// which it does once woken.
#[derive(Debug)]
pub struct Sleeper {
    pub uffd: userfaultfd::Uffd,
    pub snapshot: Snapshot,
}

impl Sleeper {
    pub fn new(uffd: OwnedFd, snapshot: Snapshot) -> Sleeper {
        // `Uffd` closes the descriptor on drop.
        // SAFETY: ownership of the descriptor moves from `OwnedFd` into `Uffd`.
        let uffd = unsafe { userfaultfd::Uffd::from_raw_fd(uffd.into_raw_fd()) };
        Sleeper { uffd, snapshot }
    }
}

#[derive(Debug, Clone, Default)]
pub struct WakeStats {
    pub duration: Duration,
    /// Of `duration`, reading the snapshot's data in (before any copy).
    pub read: Duration,
    /// Pages copied ahead of the bulk copy because they are in the working set.
    pub prefetched_pages: u64,
    /// All pages placed with `UFFDIO_COPY` (prefetch, bulk and faults).
    pub copied_pages: u64,
    /// Page faults served on demand.
    pub faults: u64,
    /// Of those, faults on zero pages, answered with `UFFDIO_ZEROPAGE`.
    pub zero_faults: u64,
    /// Bytes the zygote mapped back from the snapshot (the mapped wake-up).
    pub mapped_bytes: u64,
}

/// Put every saved page of the sleeper back; see the module docs.
///
/// Blocking: run it on a blocking thread. Serves pending faults (recording
/// them in `ws`) between chunks of the bulk copy; with `prefetch` the
/// working-set pages are copied first. Fails at `deadline`, when the process
/// is gone, or when the snapshot cannot be read; the caller must then kill
/// the zygote before dropping the sleeper.
pub fn wake(
    sleeper: &Sleeper,
    ws: &mut WorkingSet,
    prefetch: bool,
    deadline: Instant,
) -> Result<WakeStats, RestoreError> {
    let started = Instant::now();
    let snapshot = &sleeper.snapshot;
    let path = || snapshot.path().to_path_buf();
    let sealed = snapshot
        .sealed()
        .ok_or_else(|| RestoreError::NotSealed { path: path() })?;
    let page = regions::page_size();

    // Mapped with the sealed length: if the file shrinks later, the tail
    // becomes unreadable to the kernel (EFAULT) instead of unmapped.
    let map_len = page_ceil(sealed.file_bytes, page);
    let reading = Instant::now();
    let map = if map_len == 0 {
        None
    } else {
        // A raw mapping: no slice over it ever exists, only its addresses go
        // to UFFDIO_COPY, so the file changing underneath cannot hurt us.
        let map = MmapOptions::new()
            .len(map_len as usize)
            .map_raw_read_only(snapshot.file_ref())
            .map_err(|source| RestoreError::Map {
                path: path(),
                source,
            })?;
        // Read every data extent now, in large requests issued together,
        // rather than page by page as the copies below touch them; holes
        // are skipped (populating them would fill the page cache with
        // zeros). A damaged file only fails here, as EFAULT, never SIGBUS.
        // All reads are queued first (WILLNEED starts them and returns), so
        // the device works on them together; then each is waited for.
        for advice in [Advice::WillNeed, Advice::PopulateRead] {
            for extent in snapshot.extents() {
                let (offset, len) = (extent.offset as usize, extent.len as usize);
                if let Err(err) = map.advise_range(advice, offset, len) {
                    tracing::debug!(error = %err, "reading the snapshot ahead");
                    break;
                }
            }
        }
        Some(map)
    };

    let mut waker = Waker {
        sleeper,
        base: map.as_ref().map_or(std::ptr::null(), MmapRaw::as_ptr),
        map_len,
        page,
        deadline,
        started,
        bulk_left: snapshot.data_bytes(),
        faulted: Vec::new(),
        stats: WakeStats {
            read: reading.elapsed(),
            ..WakeStats::default()
        },
    };
    let result = waker.run(ws, prefetch);
    ws.record(&waker.faulted);
    let mut stats = waker.stats;
    stats.duration = started.elapsed();
    result?;
    tracing::debug!(
        path = %snapshot.path().display(),
        duration = ?stats.duration,
        copied_pages = stats.copied_pages,
        prefetched_pages = stats.prefetched_pages,
        faults = stats.faults,
        "woke hibernated zygote"
    );
    Ok(stats)
}

/// One wake in progress.
struct Waker<'a> {
    sleeper: &'a Sleeper,
    /// Start of the snapshot mapping (null when the file has no data).
    base: *const u8,
    map_len: u64,
    page: u64,
    deadline: Instant,
    started: Instant,
    /// Bytes of extents the bulk copy has not finished yet.
    bulk_left: u64,
    faulted: Vec<u64>,
    stats: WakeStats,
}

impl Waker<'_> {
    fn run(&mut self, ws: &WorkingSet, prefetch: bool) -> Result<(), RestoreError> {
        let extents = self.sleeper.snapshot.extents();
        if prefetch {
            for extent in ws.prefetch_plan(extents, self.page) {
                let copied = self.copy_extent(extent)?;
                self.stats.prefetched_pages += copied / self.page;
            }
        }
        for extent in extents {
            self.copy_extent(*extent)?;
            self.bulk_left -= extent.len;
        }
        self.serve_faults()
    }

    /// Copy `extent` in chunks, serving faults in between. Pages already in
    /// place (served on demand or prefetched) are skipped. Returns the bytes
    /// this call copied.
    fn copy_extent(&mut self, extent: Extent) -> Result<u64, RestoreError> {
        let mut done = 0;
        let mut copied = 0;
        while done < extent.len {
            self.serve_faults()?;
            if Instant::now() >= self.deadline {
                return Err(RestoreError::Deadline {
                    elapsed: self.started.elapsed(),
                    remaining: self.bulk_left,
                });
            }
            let len = (extent.len - done).min(CHUNK);
            match self.copy(extent.addr + done, extent.offset + done, len) {
                Ok(n) => {
                    done += n;
                    copied += n;
                }
                // ENOENT for a multi-page copy: the range crosses from one
                // mapping into the next (a region is adjacent mappings
                // merged, and UFFDIO_COPY stays within one); go page by page.
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) && len > self.page => {
                    match self.copy(extent.addr + done, extent.offset + done, self.page) {
                        Ok(n) => {
                            done += n;
                            copied += n;
                        }
                        // EEXIST: in place already. ENOENT for one page: no
                        // longer registered, i.e. the zygote unmapped it
                        // during the wake; nothing to restore.
                        Err(err)
                            if matches!(err.raw_os_error(), Some(libc::EEXIST | libc::ENOENT)) =>
                        {
                            done += self.page
                        }
                        Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => {}
                        Err(err) => {
                            return Err(self.copy_error(
                                extent.addr + done,
                                extent.offset + done,
                                self.page,
                                err,
                            ))
                        }
                    }
                }
                // EEXIST: served on demand or prefetched already. ENOENT (one
                // page): unmapped during the wake, see above. (A dead process
                // reports ESRCH instead.)
                Err(err) if matches!(err.raw_os_error(), Some(libc::EEXIST | libc::ENOENT)) => {
                    done += self.page
                }
                Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => {}
                Err(err) => {
                    return Err(self.copy_error(extent.addr + done, extent.offset + done, len, err))
                }
            }
        }
        Ok(copied)
    }

    /// UFFDIO_COPY from the snapshot mapping at `offset`.
    fn copy(&mut self, addr: u64, offset: u64, len: u64) -> io::Result<u64> {
        // Extents come from SEEK_DATA below the sealed size, so the source
        // stays inside the mapping; never let a bad offset read other memory.
        let in_map = matches!(offset.checked_add(len), Some(end) if end <= self.map_len);
        if self.base.is_null() || !in_map {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        let src = self.base.wrapping_add(offset as usize);
        let n = uffd::copy(self.sleeper.uffd.as_fd(), addr, src, len)?;
        self.stats.copied_pages += n / self.page;
        Ok(n)
    }

    fn copy_error(&self, addr: u64, offset: u64, len: u64, err: io::Error) -> RestoreError {
        match err.raw_os_error() {
            Some(libc::ESRCH) => RestoreError::ProcessGone,
            Some(libc::EFAULT) => RestoreError::SnapshotUnreadable {
                path: self.sleeper.snapshot.path().to_path_buf(),
                offset,
                addr,
            },
            _ => RestoreError::Copy {
                addr,
                len,
                source: err,
            },
        }
    }

    /// Answer every pending fault: a saved page is copied, any other page
    /// zero-filled (a zero page, or memory the zygote grew since it was
    /// saved), a page already in place just woken.
    fn serve_faults(&mut self) -> Result<(), RestoreError> {
        let mut pending = Vec::new();
        uffd::read_faults(self.sleeper.uffd.as_fd(), &mut pending)
            .map_err(|source| RestoreError::ReadEvents { source })?;
        for addr in pending {
            let addr = regions::page_floor(addr, self.page);
            self.stats.faults += 1;
            self.faulted.push(addr);
            let offset = self.sleeper.snapshot.data_offset(addr);
            let result = match offset {
                Some(offset) => self.copy(addr, offset, self.page),
                None => {
                    self.stats.zero_faults += 1;
                    uffd::zeropage(self.sleeper.uffd.as_fd(), addr, self.page)
                }
            };
            let Err(err) = result else { continue };
            match (err.raw_os_error(), offset) {
                // Already in place: the faulting thread only needs waking.
                (Some(libc::EEXIST), _) => {
                    uffd::wake(self.sleeper.uffd.as_fd(), addr, self.page).map_err(|source| {
                        self.gone_or(source, |source| RestoreError::WakePage { addr, source })
                    })?;
                }
                // A retry request: the bulk copy (saved page) or closing the
                // uffd (zero page) wakes the thread anyway.
                (Some(libc::EAGAIN), _) => {}
                (_, Some(offset)) => return Err(self.copy_error(addr, offset, self.page, err)),
                (_, None) => {
                    return Err(self.gone_or(err, |source| RestoreError::ZeroPage { addr, source }))
                }
            }
        }
        Ok(())
    }

    fn gone_or(
        &self,
        err: io::Error,
        other: impl FnOnce(io::Error) -> RestoreError,
    ) -> RestoreError {
        if err.raw_os_error() == Some(libc::ESRCH) {
            RestoreError::ProcessGone
        } else {
            other(err)
        }
    }
}
