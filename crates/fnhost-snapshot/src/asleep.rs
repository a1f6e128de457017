//! Serving the page faults of a zygote while it sleeps.
//!
//! Right after its pages are dropped the zygote still runs a little (the
//! end of the hibernation window, the report to the daemon, the wait for
//! the wake-up): glibc wrappers read globals of libc's own zero-filled
//! data, signal handling and the kernel's rseq update touch the thread's
//! memory. Those pages are anonymous, so they were dropped with the rest.
//! The daemon therefore answers faults from the moment it holds the
//! userfaultfd until the wake-up takes over, copying each page from the
//! snapshot file (read with `pread`, so a damaged file is an error, never a
//! SIGBUS). A page served here stays resident; it is a handful of pages.

use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;

use fnhost_sandbox::sys::uffd;

use crate::regions::{self, Region};
use crate::restore::RestoreError;

/// How often a copy that the kernel asks to retry (`EAGAIN`) is retried.
const RETRIES: usize = 8;

/// Answers every page fault pending on `uffd` from `snapshot` (laid out as
/// `regions`); returns how many were served. Non-blocking: call it whenever
/// the userfaultfd is readable. `buf` holds one page.
pub fn serve_pending(
    uffd: BorrowedFd<'_>,
    snapshot: &File,
    regions: &[Region],
    buf: &mut Vec<u8>,
) -> Result<u64, RestoreError> {
    let page = regions::page_size();
    buf.resize(page as usize, 0);
    let mut pending = Vec::new();
    uffd::read_faults(uffd, &mut pending).map_err(|source| RestoreError::ReadEvents { source })?;
    for &addr in &pending {
        let addr = addr & !(page - 1);
        let offset = regions::layout(regions)
            .find(|(region, _)| region.contains(addr))
            .map(|(region, at)| at + (addr - region.start))
            .ok_or(RestoreError::UnexpectedFault { addr })?;
        // The daemon sized the file to the whole layout, so a short read
        // means it was truncated.
        let unreadable = || RestoreError::SnapshotUnreadable {
            path: "(hibernating zygote's snapshot)".into(),
            offset,
            addr,
        };
        match snapshot.read_at(buf, offset) {
            Ok(n) if n == buf.len() => {}
            _ => return Err(unreadable()),
        }
        let mut tries = 0;
        loop {
            match uffd::copy(uffd, addr, buf.as_ptr(), page) {
                Ok(_) => break,
                // Already there (served twice): wake the faulting thread.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    uffd::wake(uffd, addr, page)
                        .map_err(|source| RestoreError::WakePage { addr, source })?;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && tries < RETRIES => tries += 1,
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    return Err(RestoreError::ProcessGone)
                }
                Err(source) => {
                    return Err(RestoreError::Copy {
                        addr,
                        len: page,
                        source,
                    })
                }
            }
        }
    }
    Ok(pending.len() as u64)
}

/// Bytes of the snapshot layout of `regions` (the file is sized to it
/// before the zygote writes, so trailing zero pages are holes, not EOF).
pub fn layout_len(regions: &[Region]) -> u64 {
    regions.iter().map(|r| r.len).sum()
}
