//! Huge-page arenas for a runtime's object allocator. CPython takes its
//! small-object heap in arenas (1 MiB since 3.10); the Python shim installs
//! this allocator before importing the function, so the heap an import
//! builds lies in 2 MiB-aligned chunks advised `MADV_HUGEPAGE`. Forking the
//! zygote then copies one page-table entry per 2 MiB instead of 512, and a
//! clone's exit unmaps as few: fork and exit stop growing with the heap.
//! A clone's own writes still copy 4 KiB (the kernel splits an inherited
//! huge page on a write fault; clones turn new huge pages off).

use std::sync::Mutex;

use fnhost_sandbox::sys::bare;

/// Transparent huge page size (x86-64 and arm64 with 4 KiB base pages).
const HUGE_PAGE: u64 = 2 << 20;
/// Arenas are carved out of chunks this large: big enough that a heavy
/// import (tens of MiB) needs few mappings, small enough that a no-op's
/// unused tail is cheap to skip when hibernating.
const CHUNK: u64 = 16 << 20;

/// Where the next arena comes from.
struct Chunks {
    /// `[start, end)` of every chunk, 2 MiB aligned.
    chunks: Vec<(u64, u64)>,
    /// Bump pointer in the newest chunk, and its end.
    next: u64,
    end: u64,
    /// Arenas given back, `(address, size)`, reused for the same size.
    free: Vec<(u64, u64)>,
}

static CHUNKS: Mutex<Chunks> = Mutex::new(Chunks {
    chunks: Vec::new(),
    next: 0,
    end: 0,
    free: Vec::new(),
});

/// An arena of `size` bytes; 0 when no memory could be mapped (the runtime
/// then raises MemoryError, as with its own allocator).
pub fn alloc(size: u64) -> u64 {
    if size == 0 {
        return 0;
    }
    if size > CHUNK / 2 {
        // Larger than an arena ever is: a mapping of its own.
        return bare::mmap_anonymous(size).unwrap_or(0);
    }
    let mut c = CHUNKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(i) = c.free.iter().position(|&(_, len)| len == size) {
        return c.free.swap_remove(i).0;
    }
    if c.next + size > c.end {
        let Some(start) = map_chunk() else {
            return 0;
        };
        c.chunks.push((start, start + CHUNK));
        c.next = start;
        c.end = start + CHUNK;
    }
    let arena = c.next;
    c.next += size;
    arena
}

/// Gives back the arena at `addr` of `size` bytes: its pages are freed and
/// the range kept for the next arena of that size. Arenas this allocator
/// did not make (those the runtime allocated before it was installed, and
/// oversized ones) are unmapped, as the runtime's own allocator would.
///
/// # Safety
/// `[addr, addr + size)` is an arena the runtime got from [`alloc`] or from
/// its previous arena allocator, and nothing refers to it any more.
pub unsafe fn free(addr: u64, size: u64) {
    if addr == 0 || size == 0 {
        return;
    }
    let mut c = CHUNKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let ours = c
        .chunks
        .iter()
        .any(|&(start, end)| start <= addr && addr + size <= end);
    if ours {
        // SAFETY: the caller gives the arena up; it stays mapped (zero-fill)
        // for reuse.
        if unsafe { bare::madvise_dontneed(addr, size) }.is_ok() {
            c.free.push((addr, size));
        }
    } else {
        // SAFETY: the caller gives the whole mapping up.
        let _ = unsafe { bare::munmap(addr, size) };
    }
}

/// A fresh 2 MiB-aligned chunk advised for huge pages. The advice is best
/// effort: with THP off (`never`) arenas still work, on 4 KiB pages.
fn map_chunk() -> Option<u64> {
    let raw = bare::mmap_anonymous(CHUNK + HUGE_PAGE).ok()?;
    let start = raw.next_multiple_of(HUGE_PAGE);
    let (head, tail) = (start - raw, HUGE_PAGE - (start - raw));
    // SAFETY: the slack before `start` and after `start + CHUNK` belongs to
    // the mapping just made, which nothing refers to yet.
    unsafe {
        if head > 0 {
            let _ = bare::munmap(raw, head);
        }
        if tail > 0 {
            let _ = bare::munmap(start + CHUNK, tail);
        }
    }
    let _ = bare::madvise_hugepage(start, CHUNK);
    Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_read(addr: u64, size: u64) {
        let bytes = addr as *mut u8;
        // SAFETY: `addr` is an arena of `size` bytes this test owns.
        unsafe {
            bytes.write_volatile(7);
            bytes.add(size as usize - 1).write_volatile(9);
            assert_eq!(bytes.read_volatile(), 7);
            assert_eq!(bytes.add(size as usize - 1).read_volatile(), 9);
        }
    }

    // One test: the chunk state is process-wide.
    #[test]
    fn arenas_are_aligned_usable_and_reused_but_foreign_ones_never() {
        let size = 1 << 20;
        let a = alloc(size);
        let b = alloc(size);
        assert_ne!(a, 0);
        assert_eq!(
            a % size,
            0,
            "arenas of a 2 MiB-aligned chunk are size-aligned"
        );
        assert_ne!(a, b);
        write_read(a, size);
        write_read(b, size);

        // SAFETY: `a` is ours and no longer used.
        unsafe { free(a, size) };
        let again = alloc(size);
        assert_eq!(again, a, "a freed arena is reused");
        // SAFETY: freed pages read as zeros again; the arena is ours.
        assert_eq!(unsafe { (again as *const u8).read_volatile() }, 0);

        // Many arenas span several chunks.
        let many: Vec<u64> = (0..40).map(|_| alloc(size)).collect();
        assert!(many.iter().all(|&m| m != 0));
        let mut sorted = many.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), many.len(), "no arena handed out twice");
        for &m in &many {
            write_read(m, size);
        }

        // An oversized request and a foreign mapping go back to the kernel.
        let big = alloc(CHUNK);
        assert_ne!(big, 0);
        write_read(big, CHUNK);
        let foreign = bare::mmap_anonymous(size).expect("mmap");
        // SAFETY: both mappings are this test's and unused from here on.
        unsafe {
            free(big, CHUNK);
            free(foreign, size);
        }
        // Neither is ever handed out again (they were unmapped, not kept).
        let next = alloc(size);
        assert_ne!(next, foreign);
        assert_ne!(next, big);
        assert!(
            sorted.binary_search(&next).is_err(),
            "a live arena is not reused"
        );
    }
}
