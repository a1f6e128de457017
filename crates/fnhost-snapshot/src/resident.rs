//! The few pages of a hibernating thread that must stay resident: its
//! thread control block, `errno` and its rseq area.
//!
//! glibc (2.35+) registers an rseq area for every thread, inside the TCB,
//! and the kernel writes the current CPU into it on the way back to user
//! space after any context switch. On the main thread that area sits in an
//! ordinary anonymous mapping, often merged with the heap's big chunks. If
//! it were dropped, the first return to user space after the drop would
//! fault inside the kernel. The zygote's uffd is user-mode-only, so that
//! write would fail and the kernel would kill the zygote with `SIGSEGV`
//! (with a uffd that handles kernel faults it waited for the daemon, which
//! was itself waiting for the zygote's "window done" report: a deadlock,
//! seen in the end-to-end test with these pages dropped and gone with
//! `GLIBC_TUNABLES=glibc.pthread.rseq=0`). The TCB and `errno` are kept too,
//! cheaply: `syscall(2)`, used for that report, writes `errno` on failure.

use crate::regions::{page_ceil, page_floor, Region};

/// Pages kept either side of the thread pointer: enough for glibc's and
/// musl's thread descriptor (~2.3 KiB) on either TLS layout.
const TP_SPAN_PAGES: u64 = 2;

/// The ranges to leave out of hibernation for the calling thread (page
/// aligned, sorted, possibly overlapping).
pub fn keep_ranges(page: u64) -> Vec<Region> {
    let mut keep = Vec::with_capacity(3);
    let span = |addr: u64, len: u64| {
        let start = page_floor(addr, page);
        Region {
            start,
            len: page_ceil(addr + len, page) - start,
        }
    };
    let tp = thread_pointer();
    keep.push(span(
        tp.saturating_sub(TP_SPAN_PAGES * page),
        2 * TP_SPAN_PAGES * page,
    ));
    // SAFETY: __errno_location has no preconditions and returns the
    // calling thread's errno address.
    let errno = unsafe { libc::__errno_location() } as u64;
    keep.push(span(errno, 4));
    if let Some((offset, size)) = glibc_rseq() {
        keep.push(span(tp.wrapping_add_signed(offset), size));
    }
    keep.sort_by_key(|r| r.start);
    keep
}

/// The thread pointer (the TLS ABI's anchor for the TCB and rseq offset).
#[cfg(target_arch = "x86_64")]
fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: the x86-64 TLS ABI stores the thread pointer itself in the
    // first word of the TCB at %fs:0; reading it has no side effects.
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    tp
}

#[cfg(target_arch = "aarch64")]
fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: reading TPIDR_EL0 has no side effects.
    unsafe {
        std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags));
    }
    tp
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn thread_pointer() -> u64 {
    // SAFETY: pthread_self has no preconditions; glibc and musl return the
    // thread descriptor, which lies next to the thread pointer.
    unsafe { libc::pthread_self() as u64 }
}

/// glibc's rseq area as (offset from the thread pointer, size), when glibc
/// registered one (`__rseq_size` is 0 when it did not, e.g. disabled by the
/// `glibc.pthread.rseq` tunable; the symbols are absent before 2.35 and on
/// other libcs, which register none).
fn glibc_rseq() -> Option<(i64, u64)> {
    // SAFETY: dlsym is given NUL-terminated names and RTLD_DEFAULT.
    let offset = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()) };
    // SAFETY: as above.
    let size = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()) };
    if offset.is_null() || size.is_null() {
        return None;
    }
    // SAFETY: glibc exports these as `const ptrdiff_t __rseq_offset` and
    // `const unsigned int __rseq_size`, set once before main.
    let (offset, size) = unsafe { (*offset.cast::<isize>(), *size.cast::<u32>()) };
    (size > 0).then_some((offset as i64, u64::from(size.max(32))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_errno_and_the_thread_pointer() {
        let page = crate::regions::page_size();
        let keep = keep_ranges(page);
        let tp = thread_pointer();
        // SAFETY: no preconditions.
        let errno = unsafe { libc::__errno_location() } as u64;
        assert!(keep.iter().any(|r| r.contains(tp)));
        assert!(keep.iter().any(|r| r.contains(errno)));
        assert!(keep.windows(2).all(|w| w[0].start <= w[1].start));
        assert!(keep
            .iter()
            .all(|r| r.start % page == 0 && r.len % page == 0));
        if let Some((offset, _)) = glibc_rseq() {
            assert!(keep
                .iter()
                .any(|r| r.contains(tp.wrapping_add_signed(offset))));
        }
    }
}
