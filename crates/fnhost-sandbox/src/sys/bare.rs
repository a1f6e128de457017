//! Allocation-free calls through libc's bare `syscall` stub, for a zygote
//! while (and right before) it is hibernated: its heap, statics and libc's
//! own `.bss` may be dropped, so only the stack and `errno` (kept resident)
//! may be touched. See `fnhost_snapshot::hibernate`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};

/// syscall(2) through libc's bare assembly stub, retrying EINTR. After the
/// drop only this is safe: libc's own wrappers (`close`, `send`, `recv`,
/// ...) first read `__libc_single_threaded` in libc's `.bss`, an anonymous
/// mapping that was hibernated, and would wait on the uffd. The stub
/// touches only the stack, and `errno` (kept resident) on failure.
///
/// # Safety
/// The arguments must be valid for syscall `nr`.
unsafe fn bare_syscall(nr: libc::c_long, a: [u64; 6]) -> io::Result<u64> {
    loop {
        // SAFETY: forwarded from the caller.
        let rc = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        if rc >= 0 {
            return Ok(rc.unsigned_abs());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// close(2) with the bare stub.
pub fn close_bare(fd: OwnedFd) {
    let fd = fd.into_raw_fd() as u64;
    // SAFETY: we owned `fd` and give it up here; closing it touches no memory.
    let _ = unsafe { bare_syscall(libc::SYS_close, [fd, 0, 0, 0, 0, 0]) };
}

/// Send one message on a socket with the bare stub (`sendto`, with
/// `MSG_NOSIGNAL`): the way to report "done" after hibernating, as it
/// touches only `buf` (keep it on the stack) and `errno`.
pub fn send_bare(sock: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    let fd = sock.as_raw_fd() as u64;
    let args = [
        fd,
        buf.as_ptr() as u64,
        buf.len() as u64,
        libc::MSG_NOSIGNAL as u64,
        0,
        0,
    ];
    // SAFETY: `buf` is valid for reads of its length; no address is given.
    unsafe { bare_syscall(libc::SYS_sendto, args) }.map(|n| n as usize)
}

/// Receive one message from a socket with the bare stub (`recvfrom`),
/// blocking; 0 means the peer closed it. See [`send_bare`].
pub fn recv_bare(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let fd = sock.as_raw_fd() as u64;
    let args = [fd, buf.as_mut_ptr() as u64, buf.len() as u64, 0, 0, 0];
    // SAFETY: `buf` is valid for writes of its length; no address is asked.
    unsafe { bare_syscall(libc::SYS_recvfrom, args) }.map(|n| n as usize)
}

/// A fresh private anonymous read-write mapping of `len` bytes; returns
/// its address.
pub fn mmap_anonymous(len: u64) -> io::Result<u64> {
    let args = [
        0,
        len,
        (libc::PROT_READ | libc::PROT_WRITE) as u64,
        (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
        u64::MAX, // fd -1
        0,
    ];
    // SAFETY: a new mapping where the kernel chooses; no existing memory is touched.
    unsafe { bare_syscall(libc::SYS_mmap, args) }
}

/// `mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to)`: moves the
/// mapping at `from` over `[to, to + len)`, replacing what was there.
///
/// # Safety
/// Both ranges are page aligned; nothing may refer to memory in
/// `[from, from + len)` afterwards, and whatever was at `to` must be safe
/// to replace with the moved contents.
pub unsafe fn mremap_fixed(from: u64, len: u64, to: u64) -> io::Result<()> {
    let args = [
        from,
        len,
        len,
        (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
        to,
        0,
    ];
    // SAFETY: the caller upholds the contract above.
    unsafe { bare_syscall(libc::SYS_mremap, args) }.map(drop)
}

/// `mmap(addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd,
/// offset)`: replaces `[addr, addr + len)` with a private (copy-on-write)
/// mapping of the file. Takes no buffer: usable while hibernated.
///
/// # Safety
/// Both `addr` and `offset` are page aligned, and whatever was mapped at
/// `addr` must be safe to replace with the file's bytes.
pub unsafe fn mmap_file_fixed(
    addr: u64,
    len: u64,
    fd: BorrowedFd<'_>,
    offset: u64,
) -> io::Result<()> {
    let args = [
        addr,
        len,
        (libc::PROT_READ | libc::PROT_WRITE) as u64,
        (libc::MAP_PRIVATE | libc::MAP_FIXED) as u64,
        fd.as_raw_fd() as u64,
        offset,
    ];
    // SAFETY: the caller upholds the contract above.
    unsafe { bare_syscall(libc::SYS_mmap, args) }.map(drop)
}

/// `mprotect(addr, len, PROT_NONE)`: makes a range fault on any access
/// (a guard page).
///
/// # Safety
/// Nothing may access `[addr, addr + len)` afterwards.
pub unsafe fn mprotect_none(addr: u64, len: u64) -> io::Result<()> {
    let args = [addr, len, libc::PROT_NONE as u64, 0, 0, 0];
    // SAFETY: the caller upholds the contract above.
    unsafe { bare_syscall(libc::SYS_mprotect, args) }.map(drop)
}

/// munmap(2).
///
/// # Safety
/// Nothing may refer to memory in `[addr, addr + len)` afterwards.
pub unsafe fn munmap(addr: u64, len: u64) -> io::Result<()> {
    // SAFETY: the caller upholds the contract above.
    unsafe { bare_syscall(libc::SYS_munmap, [addr, len, 0, 0, 0, 0]) }.map(drop)
}

/// `madvise(addr, len, MADV_DONTNEED)`: frees the pages of a private
/// anonymous range (a registered userfaultfd range then faults on the next
/// access; an unregistered one reads as zeros).
///
/// # Safety
/// The range is private anonymous memory whose contents the caller no
/// longer needs (or has saved, to be restored before anything reads it).
pub unsafe fn madvise_dontneed(addr: u64, len: u64) -> io::Result<()> {
    let args = [addr, len, libc::MADV_DONTNEED as u64, 0, 0, 0];
    // SAFETY: the caller upholds the contract above.
    unsafe { bare_syscall(libc::SYS_madvise, args) }.map(drop)
}

/// `madvise(addr, len, MADV_HUGEPAGE)`: lets the kernel back a private
/// anonymous range with transparent huge pages (when THP is not `never`).
pub fn madvise_hugepage(addr: u64, len: u64) -> io::Result<()> {
    madvise_keeping_contents(addr, len, libc::MADV_HUGEPAGE)
}

/// `madvise(addr, len, MADV_DOFORK)`: undoes `MADV_DONTFORK`, so children
/// inherit the range again.
pub fn madvise_dofork(addr: u64, len: u64) -> io::Result<()> {
    madvise_keeping_contents(addr, len, libc::MADV_DOFORK)
}

/// `madvise(addr, len, MADV_RANDOM)`: a page fault in a file mapping of
/// the range reads only its own page, no readahead around it.
pub fn madvise_random(addr: u64, len: u64) -> io::Result<()> {
    madvise_keeping_contents(addr, len, libc::MADV_RANDOM)
}

/// madvise(2) with an advice that leaves every byte and protection of the
/// range as it is (how it is backed, whether children inherit it), so it is
/// safe to ask of any range.
fn madvise_keeping_contents(addr: u64, len: u64, advice: libc::c_int) -> io::Result<()> {
    let args = [addr, len, advice as u64, 0, 0, 0];
    // SAFETY: callers pass only advice that frees nothing and changes no byte.
    unsafe { bare_syscall(libc::SYS_madvise, args) }.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn send_and_recv_one_message() {
        let (a, b) = UnixDatagram::pair().expect("socketpair");
        assert_eq!(send_bare(a.as_fd(), b"wake").expect("send"), 4);
        let mut buf = [0u8; 16];
        let n = recv_bare(b.as_fd(), &mut buf).expect("recv");
        assert_eq!(&buf[..n], b"wake");
    }

    #[test]
    fn anonymous_mapping_is_zeroed_then_dropped() {
        let page = 4096;
        let addr = mmap_anonymous(2 * page).expect("mmap");
        let bytes = addr as *mut u8;
        // SAFETY: the mapping is ours, readable and writable, 2 pages long.
        unsafe {
            assert_eq!(bytes.add(page as usize + 7).read_volatile(), 0);
            bytes.write_volatile(42);
        }
        // SAFETY: the mapping is ours and only read through `bytes` below.
        unsafe { madvise_dontneed(addr, 2 * page) }.expect("madvise");
        // SAFETY: still mapped: DONTNEED leaves zero-fill pages behind.
        assert_eq!(unsafe { bytes.read_volatile() }, 0);
        // SAFETY: nothing refers to the mapping any more.
        unsafe { munmap(addr, 2 * page) }.expect("munmap");
    }
}
