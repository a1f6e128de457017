//! Zygote side of hibernation: save the private anonymous memory to the
//! snapshot file, hand the pages to a userfaultfd and drop them.
//!
//! # Protocol
//! 1. The daemon sends the snapshot file's fd.
//! 2. [`prepare`] creates the zygote's own uffd with `userfaultfd(2)` and
//!    `UFFD_USER_MODE_ONLY` (`fnhost_sandbox::sys::uffd::new_user_mode_only`;
//!    the default seccomp profile allows the call in the zygote only), does
//!    the API handshake and reads `/proc/self/maps`. The caller sends
//!    [`Prepared::uffd`] and [`Prepared::regions`] to the daemon (allocating
//!    is fine until here).
//! 3. With signals blocked, [`hibernate`] runs the *window*: (1) write every
//!    non-zero page, (2) register every region for missing faults, (3)
//!    `MADV_DONTNEED` every region, (4) hand back its own uffd copy, which
//!    the zygote keeps open while it sleeps ([`Slept::uffd`]). Nothing in
//!    it allocates or writes to memory that is saved, since such a write
//!    would be lost: the region table lives on the caller's stack (the stack
//!    is never hibernated) and only syscalls are made (through libc's
//!    wrappers until the first drop, through the bare `syscall` stub after
//!    it; see `fnhost_sandbox::sys::bare`). A few pages stay resident
//!    throughout: see `resident.rs`.
//! 4. After `hibernate` returns `Ok`, dropped memory faults and waits for the
//!    daemon. The caller reports "done" with [`bare::send_bare`] and waits
//!    with [`bare::recv_bare`], touching nothing but its stack until the daemon has
//!    run its wake: no allocation, no statics, not even libc's own syscall
//!    wrappers (they read libc's hibernated `.bss`). On `Err` nothing was
//!    dropped.
//!
//! # Faults taken in the kernel
//! The uffd is user-mode-only: a fault the kernel takes on a dropped page
//! (a system call reading or writing a buffer there) is not sent to the
//! daemon but fails the call with `EFAULT`. So from the drop until every
//! page is back, no system call may be handed a saved page, only the stack
//! and the resident pages:
//! - the window's `pwrite`s (1) read the pages before anything is
//!   registered or dropped; its `pread` of `/proc/self/pagemap` and its
//!   ioctls (2) use buffers on the stack; `madvise` and `close` take none;
//! - the report and the wait (step 4) use buffers on the caller's stack;
//! - the kernel's own write on the way back to user space (the rseq area)
//!   hits a resident page (`resident.rs`).
//!
//! After the wake-up message the zygote maps the snapshot back over every
//! region ([`remap`](crate::remap::remap), stack and bare syscalls only)
//! and reports `woken`; what it touches from user mode before that is
//! served on demand. Its next system call with a heap buffer is the receive
//! of the next control message (the `iovec` and `msghdr` themselves are on
//! the stack), and the daemon sends none before `woken`. Keep it that way: a
//! heap buffer handed to the kernel before then must first be written from
//! user mode. Another process reading a sleeping zygote's dropped memory
//! (`/proc/<pid>/mem`, `process_vm_readv`) gets an error too, where a
//! kernel-fault-capable uffd would have blocked it.
//!
//! # Why no non-cooperative uffd events
//! The uffd is opened with no event features (no fork, remove or unmap
//! events). While hibernated the zygote is paused, and during the wake only
//! its fork-server code runs, which neither unmaps nor discards memory.
//! Clones are forked only after the wake completed and every uffd copy was
//! closed; closing the last uffd fd unregisters every range, so later
//! missing pages are ordinary zero-fill anonymous pages. It follows that the
//! last copy must never be closed without a completed wake while the
//! zygote may still run: pages not yet restored would read as zeros. If
//! the wake fails, kill the zygote.
//!
//! # Who holds the uffd while the zygote sleeps
//! The zygote keeps its own copy ([`Slept::uffd`]) until it has mapped the
//! snapshot back, so the daemon need not hold one through a long sleep (a
//! descriptor per hibernated function, where a host keeps thousands): it
//! serves faults during the window, closes its copy, and takes one back
//! from the zygote (`pidfd_getfd`) before it sends the wake-up. A fault
//! meanwhile (none is expected: only the stack and the resident pages are
//! touched) waits in the uffd's queue and is served then.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use fnhost_sandbox::sys::{bare, fd, uffd};

use crate::maps_text::MapsText;
use crate::regions::{self, Region, RegionError, RegionTable};
use crate::remap::FileId;
use crate::{anonymize, resident};

#[derive(Debug, thiserror::Error)]
pub enum HibernateError {
    #[error("read /proc/self/smaps: {0}")]
    ReadMaps(#[source] io::Error),
    #[error(transparent)]
    Regions(#[from] RegionError),
    #[error("the current stack at {sp:#x} lies in a region to hibernate; hibernate only from the main thread")]
    StackNotExcluded { sp: u64 },
    #[error(
        "create a user-mode-only userfaultfd: {source}{}",
        refused_hint(source)
    )]
    CreateUffd { source: io::Error },
    #[error("userfaultfd api handshake: {source}")]
    UffdApi { source: io::Error },
    #[error("write {len} bytes at {addr:#x} to snapshot offset {offset}: {source}")]
    WriteSnapshot {
        addr: u64,
        len: u64,
        offset: u64,
        source: io::Error,
    },
    #[error("register {start:#x}+{len:#x} with the userfaultfd: {source}")]
    Register {
        start: u64,
        len: u64,
        source: io::Error,
    },
}

/// Everything the window needs, created beforehand. A plain value (the
/// region table is inline): keep it on the stack, never in a `Box`.
#[derive(Debug)]
pub struct Prepared {
    uffd: OwnedFd,
    pagemap: Option<OwnedFd>,
    table: RegionTable,
    page: u64,
}

impl Prepared {
    pub fn regions(&self) -> &[Region] {
        self.table.as_slice()
    }

    /// The uffd to send to the daemon (`SCM_RIGHTS` duplicates it).
    pub fn uffd(&self) -> BorrowedFd<'_> {
        self.uffd.as_fd()
    }

    /// A copy of the region table, for [`remap`](crate::remap::remap) at
    /// wake-up: keep it on the stack.
    pub fn table(&self) -> RegionTable {
        self.table.clone()
    }
}

/// A completed window: its figures, and the zygote's own uffd copy, to
/// keep open (on the stack) until the snapshot is mapped back (see
/// [Who holds the uffd](self#who-holds-the-uffd-while-the-zygote-sleeps)).
#[derive(Debug)]
pub struct Slept {
    pub stats: WindowStats,
    pub uffd: OwnedFd,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    pub pages_written: u64,
    pub bytes_dropped: u64,
    /// Regions whose `MADV_DONTNEED` failed: they stay resident (and the
    /// wake skips their pages), which costs memory but not correctness.
    pub regions_not_dropped: u32,
}

/// Why `userfaultfd(2)` with `UFFD_USER_MODE_ONLY` failed, for the
/// operator: it needs no privilege, so a refusal is the seccomp filter's.
fn refused_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            "; the zygote's seccomp profile refused the userfaultfd system call: list \
             \"userfaultfd\" in the setup_only section of the function's own profile (its \
             `seccomp` key), as the default profile does, or set hibernate_mode = \"reclaim\""
        }
        Some(libc::ENOSYS | libc::EINVAL) => {
            "; either the kernel has no userfaultfd with UFFD_USER_MODE_ONLY (it needs \
             CONFIG_USERFAULTFD and Linux 5.11 or later; else set hibernate_mode = \
             \"reclaim\") or the function's own seccomp profile (its `seccomp` key) lacks \
             \"userfaultfd\" in its setup_only section"
        }
        _ => "",
    }
}

/// Create the uffd and read the memory map. Written private file mappings are first made anonymous (see
/// [`anonymize`](mod@crate::anonymize)), and so are those of `previous`, the
/// files this zygote's memory was last mapped from on wake-up (its snapshot
/// and any shared base; see [`remap`](mod@crate::remap)),
/// so the caller must already be
/// single-threaded with signals blocked. Call it as late as possible before [`hibernate`]: mappings
/// created afterwards simply stay resident, but one removed in between
/// makes the window fail.
pub fn prepare(previous: &[FileId]) -> Result<Prepared, HibernateError> {
    let page = regions::page_size();
    let uffd =
        uffd::new_user_mode_only().map_err(|source| HibernateError::CreateUffd { source })?;
    uffd::api_handshake(uffd.as_fd()).map_err(|source| HibernateError::UffdApi { source })?;
    // Optional: without it every page is read to find the zero ones.
    let pagemap = File::open("/proc/self/pagemap").ok().map(OwnedFd::from);

    let read_smaps = || MapsText::read().map_err(HibernateError::ReadMaps);
    let mut smaps = read_smaps()?;
    let file_data = anonymize::file_data_mappings(smaps.as_str(), |path, dev, inode| {
        if previous.iter().any(|id| id.matches(dev, inode)) {
            // Sized by the daemon to cover every region it maps.
            Some(u64::MAX)
        } else {
            std::fs::metadata(path).ok().map(|m| m.len())
        }
    });
    if anonymize::anonymize(&file_data) > 0 {
        drop(smaps);
        smaps = read_smaps()?;
    }
    let mut keep = resident::keep_ranges(page);
    keep.extend(regions::special_ranges(smaps.as_str()));
    // Unmapped when this returns.
    keep.push(smaps.range());
    keep.sort_by_key(|r| r.start);
    let regions = regions::subtract(&regions::parse_maps(smaps.as_str()), &keep);
    let sp = std::ptr::addr_of!(page) as u64;
    if regions.iter().any(|r| r.contains(sp)) {
        return Err(HibernateError::StackNotExcluded { sp });
    }
    let table = RegionTable::from_slice(&regions)?;
    Ok(Prepared {
        uffd,
        pagemap,
        table,
        page,
    })
}

/// The hibernation window; see the module docs.
///
/// Caller guarantees: the process is single-threaded, signals are blocked,
/// the uffd was already handed to the daemon, and `prepared` is on the
/// stack. On `Err` every registered range was unregistered and nothing was
/// dropped.
pub fn hibernate(prepared: Prepared, snapshot: BorrowedFd<'_>) -> Result<Slept, HibernateError> {
    let Prepared {
        uffd,
        pagemap,
        table,
        page,
    } = prepared;
    let regions = table.as_slice();
    let mut stats = WindowStats::default();

    // (1) Save every non-zero page.
    for (region, offset) in regions::layout(regions) {
        let pm = pagemap.as_ref().map(AsFd::as_fd);
        stats.pages_written += save_region(snapshot, pm, region, offset, page)?;
    }
    drop(pagemap); // a libc close: still fine before the drop

    // (2) Register every region; undo on failure.
    for (i, region) in regions.iter().enumerate() {
        if let Err(source) = uffd::register_missing(uffd.as_fd(), region.start, region.len) {
            for done in &regions[..i] {
                let _ = uffd::unregister(uffd.as_fd(), done.start, done.len);
            }
            return Err(HibernateError::Register {
                start: region.start,
                len: region.len,
                source,
            });
        }
    }

    // (3) Drop. From here on, touching a saved page waits for the daemon.
    for region in regions {
        if dontneed(*region).is_ok() {
            stats.bytes_dropped += region.len;
        } else {
            stats.regions_not_dropped += 1;
        }
    }

    // (4) Kept open by the caller until the wake-up's remap: the daemon
    // may close its copy meanwhile.
    Ok(Slept { stats, uffd })
}

/// Write the non-zero pages of `region` at `offset` in runs of consecutive
/// pages; returns the number of pages written. Pages never populated (per
/// `/proc/self/pagemap`: neither present nor swapped) are zero and are not
/// even read.
fn save_region(
    snapshot: BorrowedFd<'_>,
    pagemap: Option<BorrowedFd<'_>>,
    region: Region,
    offset: u64,
    page: u64,
) -> Result<u64, HibernateError> {
    const BATCH: usize = 512;
    const PM_PRESENT_OR_SWAPPED: u64 = 3 << 62;
    let mut entries = [0u64; BATCH];
    let mut run_start: Option<u64> = None;
    let mut written = 0;
    let flush = |run: u64, end: u64| {
        let at = offset + (run - region.start);
        fd::pwrite_all_from(snapshot, run, end - run, at).map_err(|source| {
            HibernateError::WriteSnapshot {
                addr: run,
                len: end - run,
                offset: at,
                source,
            }
        })
    };

    let pages = region.len / page;
    let mut index = 0;
    while index < pages {
        let batch = (pages - index).min(BATCH as u64) as usize;
        let first = region.start + index * page;
        let known = pagemap.map_or(0, |pm| {
            read_pagemap(pm, first / page, &mut entries[..batch])
        });
        for (i, entry) in entries[..batch].iter().enumerate() {
            let addr = first + i as u64 * page;
            let maybe_data = i >= known || entry & PM_PRESENT_OR_SWAPPED != 0;
            if maybe_data && !is_zero_page(addr, page) {
                written += 1;
                run_start.get_or_insert(addr);
            } else if let Some(run) = run_start.take() {
                flush(run, addr)?;
            }
        }
        index += batch as u64;
    }
    if let Some(run) = run_start {
        flush(run, region.end())?;
    }
    Ok(written)
}

/// Fill `entries` from `/proc/self/pagemap` starting at page frame `vpn`;
/// returns how many entries are valid (0 on error: treat as unknown).
fn read_pagemap(pagemap: BorrowedFd<'_>, vpn: u64, entries: &mut [u64]) -> usize {
    fd::pread_words(pagemap, entries, vpn * 8).unwrap_or(0)
}

/// Whether the page at `addr` is all zeros.
fn is_zero_page(addr: u64, page: u64) -> bool {
    let words = addr as *const u64;
    (0..(page / 8) as usize).all(|i| {
        // Volatile: the bytes are opaque data reached through an address
        // from the kernel, not memory the compiler knows about.
        // The single-threaded caller changes no mappings during the window.
        // SAFETY: a page of a region /proc/self/maps lists as readable.
        unsafe { words.add(i).read_volatile() == 0 }
    })
}

/// MADV_DONTNEED the region: its pages are freed, and (being registered)
/// the next access raises a missing fault on the uffd.
fn dontneed(region: Region) -> io::Result<()> {
    // The caller touches only its stack until the wake restores it.
    // SAFETY: private anonymous memory already saved to the snapshot.
    unsafe { bare::madvise_dontneed(region.start, region.len) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::FileExt;

    /// The write step on a heap buffer, without registering or dropping.
    #[test]
    fn save_region_writes_only_non_zero_pages() {
        let page = regions::page_size();
        let pages = 8usize;
        let layout = std::alloc::Layout::from_size_align(pages * page as usize, page as usize)
            .expect("layout");
        // SAFETY: non-zero size; freed below with the same layout.
        let buf = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!buf.is_null());
        // SAFETY: offsets are within the allocation.
        unsafe {
            *buf.add(page as usize) = 1; // page 1
            *buf.add(2 * page as usize + 5) = 2; // page 2
            *buf.add(6 * page as usize - 1) = 3; // page 5 (last byte)
        }
        let region = Region {
            start: buf as u64,
            len: pages as u64 * page,
        };
        let mut file = tempfile::tempfile().expect("tempfile");
        let pagemap = File::open("/proc/self/pagemap").ok();
        let pm = pagemap.as_ref().map(|f| f.as_fd());
        let written = save_region(file.as_fd(), pm, region, page, page).expect("save");
        let written_without_pagemap =
            save_region(file.as_fd(), None, region, page, page).expect("save");
        // SAFETY: allocated above with `layout`.
        unsafe { std::alloc::dealloc(buf, layout) };

        assert_eq!(written, 3);
        assert_eq!(written_without_pagemap, 3);
        let mut contents = Vec::new();
        file.read_to_end(&mut contents).expect("read");
        assert_eq!(contents.len() as u64, 6 * page + page);
        let at = |p: u64, i: u64| contents[(page + p * page + i) as usize];
        assert_eq!(at(1, 0), 1);
        assert_eq!(at(2, 5), 2);
        assert_eq!(at(5, page - 1), 3);
        let mut one = [9u8; 1];
        file.read_exact_at(&mut one, page + 3 * page)
            .expect("read hole");
        assert_eq!(one[0], 0);
    }
}
