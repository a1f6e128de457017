//! Zygote side of a wake-up: map the snapshot file copy-on-write over every
//! hibernated region, instead of having the daemon copy each page back.
//!
//! After [`remap`] the zygote's memory is a private mapping of the snapshot:
//! a page comes from the page cache on first touch (shared by the zygote
//! and every clone, and with the daemon's own read of the file) and is
//! copied only when written. Nothing is read at wake-up, so the cost no
//! longer grows with the zygote's size.
//!
//! # What changes for the memory afterwards
//! - The regions become file mappings: `/proc/self/maps` names the
//!   (deleted) snapshot where it said `[heap]` or nothing. `brk` still
//!   grows (into a fresh anonymous mapping above) and shrinks (unmapping).
//! - `mremap` growth of a region reads the bytes that follow it in the file
//!   (another region's, or zeros): the daemon sizes the file with a sparse
//!   tail ([`GROWTH_TAIL`]) so that growth never runs past the end of the
//!   file, which would raise `SIGBUS`. Content of grown memory is
//!   unspecified for `realloc`, so glibc does not mind.
//! - `MADV_DONTNEED` on such a page brings back the snapshot's bytes
//!   instead of zeros. glibc's malloc and CPython never rely on the zeros
//!   of a page they gave back (glibc's `calloc` clears whatever is below
//!   the top it got from the kernel); an allocator that did would see stale
//!   bytes in a woken zygote. Mappings with fork-time semantics
//!   (`MADV_WIPEONFORK`, `MADV_DONTFORK`) are never hibernated (see
//!   `regions::special_ranges`), so nothing of theirs is lost.
//! - A second hibernation first makes these mappings anonymous again (as it
//!   does for the `.data` of libraries, see [`anonymize`](mod@crate::anonymize)),
//!   recognising them by the snapshot's [`FileId`].
//!
//! Like the hibernation window, [`remap`] touches only the stack (the region
//! table is a stack copy) and bare system calls: until it has run, the
//! hibernated pages are missing.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use fnhost_sandbox::sys::bare;

use crate::regions::{self, RegionTable};
use crate::shared::SharedRun;

/// Sparse bytes past the last region in a snapshot file, so that `mremap`
/// growth of a remapped region reads zeros rather than past the end of the
/// file (see the module docs). Holes cost no disk and no memory.
pub const GROWTH_TAIL: u64 = 1 << 32;

/// A file's identity as `/proc/self/maps` prints it: device numbers and
/// inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

impl FileId {
    /// The identity of the file behind `fd` (`fstat`).
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<FileId> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat fills the struct on success; `st` is valid for writes.
        let rc = unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstat succeeded, so the struct is initialised.
        let st = unsafe { st.assume_init() };
        Ok(FileId {
            major: libc::major(st.st_dev),
            minor: libc::minor(st.st_dev),
            inode: st.st_ino,
        })
    }

    /// Whether the `dev` (`"fe:01"`, hex) and `inode` fields of a maps line
    /// name this file.
    pub fn matches(&self, dev: &str, inode: &str) -> bool {
        let Some((major, minor)) = dev.split_once(':') else {
            return false;
        };
        u32::from_str_radix(major, 16) == Ok(self.major)
            && u32::from_str_radix(minor, 16) == Ok(self.minor)
            && inode.parse::<u64>() == Ok(self.inode)
    }
}

/// Maps the snapshot over every region of `table`, each at its layout
/// offset; returns the bytes mapped. On `Err` some regions may already be
/// mapped and the others are still missing: the caller must exit.
pub fn remap(table: &RegionTable, snapshot: BorrowedFd<'_>) -> io::Result<u64> {
    let mut mapped = 0;
    for (region, offset) in regions::layout(table.as_slice()) {
        // SAFETY: the region was saved to the snapshot at `offset` and its
        // pages dropped; mapping the saved bytes back is what it waits for.
        unsafe { bare::mmap_file_fixed(region.start, region.len, snapshot, offset) }?;
        // The daemon reads the data back into the page cache; a fault's
        // readahead would add the file's holes (the zero pages) around it,
        // charged to whoever faults: 2.2 MiB more in a no-op Python
        // zygote's cgroup once a clone had run. Inherited by clones.
        bare::madvise_random(region.start, region.len)?;
        mapped += region.len;
    }
    Ok(mapped)
}

/// After [`remap`], for a zygote of a sharing group (see
/// [`shared`](mod@crate::shared)): maps each run from the group's base
/// over the zygote's own mapping of the same bytes, so that identical pages
/// are one page cache page for the group; returns the bytes mapped. The
/// caller checked the runs with [`shared::runs_within`](crate::shared::runs_within).
/// Stack and bare system calls only, like [`remap`]. On `Err` part of the
/// memory maps the base and part the snapshot, all of it the right bytes.
pub fn remap_shared(
    runs: impl Iterator<Item = SharedRun>,
    base: BorrowedFd<'_>,
) -> io::Result<u64> {
    let mut mapped = 0;
    for run in runs {
        // SAFETY: the run lies inside a region just mapped from the
        // snapshot, whose bytes there equal the base's at `base_offset`
        // (the daemon compared them); the base never changes once filled.
        unsafe { bare::mmap_file_fixed(run.addr, run.len, base, run.base_offset) }?;
        // As in `remap`: no readahead of the base's holes.
        bare::madvise_random(run.addr, run.len)?;
        mapped += run.len;
    }
    Ok(mapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::Region;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    #[test]
    fn file_id_matches_its_maps_line() {
        let file = tempfile::tempfile().expect("tempfile");
        let id = FileId::of(file.as_fd()).expect("fstat");
        let dev = format!("{:02x}:{:02x}", id.major, id.minor);
        assert!(id.matches(&dev, &id.inode.to_string()));
        assert!(!id.matches(&dev, &(id.inode + 1).to_string()));
        assert!(!id.matches("zz", "1"));
    }

    #[test]
    fn remap_puts_the_saved_bytes_back_copy_on_write() {
        let page = regions::page_size();
        let ps = page as usize;
        // Regions a (2 pages) and b (1 page) with an untouched page between.
        let base = bare::mmap_anonymous(4 * page).expect("mmap");
        let (a, b) = (base, base + 3 * page);
        // SAFETY: the middle page of the test's own mapping.
        unsafe { ((base + 2 * page) as *mut u8).write(5) };
        // Layout: a at 0 (its second page a hole), b at 2 pages.
        let file = tempfile::tempfile().expect("tempfile");
        file.write_all_at(&vec![1u8; ps], 0).expect("write");
        file.write_all_at(&vec![3u8; ps], 2 * page).expect("write");
        file.set_len(3 * page + GROWTH_TAIL).expect("size");
        let regions = [
            Region {
                start: a,
                len: 2 * page,
            },
            Region {
                start: b,
                len: page,
            },
        ];
        let table = RegionTable::from_slice(&regions).expect("table");
        assert_eq!(remap(&table, file.as_fd()).expect("remap"), 3 * page);
        // SAFETY: the whole range is mapped (a and b now from the file).
        let view = unsafe { std::slice::from_raw_parts_mut(base as *mut u8, 4 * ps) };
        assert!(view[..ps].iter().all(|&x| x == 1));
        assert!(view[ps..2 * ps].iter().all(|&x| x == 0));
        assert_eq!(view[2 * ps], 5, "the page between was left alone");
        assert!(view[3 * ps..].iter().all(|&x| x == 3));
        // Copy on write: the file keeps its bytes.
        view[0] = 9;
        let mut first = [0u8; 1];
        file.read_exact_at(&mut first, 0).expect("read");
        assert_eq!((first[0], view[0]), (1, 9));
        // SAFETY: the test's own mapping, not used afterwards.
        unsafe { bare::munmap(base, 4 * page) }.expect("munmap");
    }
}
