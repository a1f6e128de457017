//! Plain descriptor I/O with raw syscalls: pipe, dup, one-byte read, write-all,
//! positioned read/write, seek, fadvise and poll. The read/write/dup ones
//! are async-signal-safe (usable between clone and exec).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `dup2(fd, target)` that also clears `FD_CLOEXEC` when `fd == target`
/// (dup2 is a no-op then and would leave the flag set).
pub fn dup_to(fd: RawFd, target: RawFd) -> io::Result<()> {
    if fd == target {
        // SAFETY: fcntl on a descriptor number; errors are reported.
        let ret = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(());
    }
    // SAFETY: dup2 on descriptor numbers is async-signal-safe; errors reported.
    let ret = unsafe { libc::dup2(fd, target) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pipe whose two ends close on exec: `(read end, write end)`.
pub fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `dup3(fd, target, O_CLOEXEC)`: makes descriptor number `target` refer to
/// what `fd` refers to (closing what `target` was), close-on-exec.
pub fn dup_onto_cloexec(fd: BorrowedFd<'_>, target: RawFd) -> io::Result<()> {
    // SAFETY: dup3 on descriptor numbers; errors are reported. The caller
    // owns `target`'s old meaning (it is replaced, not leaked).
    if unsafe { libc::dup3(fd.as_raw_fd(), target, libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes waiting to be read on a pipe or socket (`FIONREAD`).
pub fn readable_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Closes every descriptor from `first` up (`close_range(2)`), so that
/// nothing a process inherited by accident reaches what it starts next.
pub fn close_from(first: RawFd) -> io::Result<()> {
    // SAFETY: integer arguments only; callers hold no Rust owner of any
    // descriptor at or above `first`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `read(2)` of one byte, retrying on EINTR (async-signal-safe). Returns
/// false at end of file.
pub fn read_byte_raw(fd: RawFd) -> io::Result<bool> {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads at most one byte into a valid local.
        let n = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(n == 1);
    }
}

/// Writes all of `buf` to a raw descriptor with `write(2)` only
/// (async-signal-safe; usable between clone and exec).
pub fn write_all_raw(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// `pread(2)` into `words` from byte `offset`; returns the number of whole
/// words read (e.g. `/proc/self/pagemap` entries).
pub fn pread_words(fd: BorrowedFd<'_>, words: &mut [u64], offset: u64) -> io::Result<usize> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `words` is valid for writes of its full byte length and any
    // bit pattern is a valid u64.
    let n = unsafe {
        libc::pread(
            fd.as_raw_fd(),
            words.as_mut_ptr().cast(),
            std::mem::size_of_val(words),
            offset,
        )
    };
    usize::try_from(n)
        .map(|n| n / 8)
        .map_err(|_| io::Error::last_os_error())
}

/// `pwrite(2)` of `[addr, addr + len)` of this process's memory to `fd` at
/// `offset`, retrying short writes and EINTR. The kernel reads the source
/// with fault-tolerant copies: an unmapped or unreadable byte is `EFAULT`.
pub fn pwrite_all_from(fd: BorrowedFd<'_>, addr: u64, len: u64, offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let at = libc::off_t::try_from(offset + done)
            .map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: the kernel only reads the source range, and reports an
        // unreadable page as EFAULT instead of faulting.
        let n = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                (addr + done) as *const libc::c_void,
                (len - done) as usize,
                at,
            )
        };
        match n {
            n if n > 0 => done += n.unsigned_abs() as u64,
            0 => return Err(io::ErrorKind::WriteZero.into()),
            _ => {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            }
        }
    }
    Ok(())
}

/// `lseek(2)`; returns the new offset.
pub fn lseek(fd: BorrowedFd<'_>, pos: u64, whence: libc::c_int) -> io::Result<u64> {
    let pos = libc::off_t::try_from(pos).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: plain syscall on an open descriptor; no memory involved.
    let at = unsafe { libc::lseek(fd.as_raw_fd(), pos, whence) };
    u64::try_from(at).map_err(|_| io::Error::last_os_error())
}

/// `posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)`: drop the file's clean
/// pages from the page cache.
pub fn fadvise_dontneed(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor; no memory involved.
    let rc = unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// `posix_fadvise(fd, offset, len, POSIX_FADV_WILLNEED)`: start reading
/// the range into the page cache (asynchronous readahead).
pub fn fadvise_willneed(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: plain syscall on an open descriptor; no memory involved.
    let rc = unsafe { libc::posix_fadvise(fd.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
    match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// `posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM)` with `random`, else
/// `POSIX_FADV_NORMAL`: turns readahead for this open file off or back on.
pub fn fadvise_random(fd: BorrowedFd<'_>, random: bool) -> io::Result<()> {
    let advice = if random {
        libc::POSIX_FADV_RANDOM
    } else {
        libc::POSIX_FADV_NORMAL
    };
    // SAFETY: plain syscall on an open descriptor; no memory involved.
    let rc = unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, advice) };
    match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// `cachestat(2)` (Linux 6.5+) of `[offset, offset + len)`: how many of
/// the file's pages in the range are in the page cache.
pub fn cached_pages(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<u64> {
    /// The syscall number is the same on every architecture (unified table).
    const SYS_CACHESTAT: libc::c_long = 451;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let range = Range { off: offset, len };
    let mut stat = Stat::default();
    // SAFETY: `range` and `stat` are valid, correctly laid out structs for
    // the duration of the call; flags must be 0.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            std::ptr::addr_of!(range),
            std::ptr::addr_of_mut!(stat),
            0u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.nr_cache)
}

/// `poll(2)` of one descriptor for `POLLIN`, waiting up to `timeout_ms`
/// (0: just look); true when it is readable (or hung up). EINTR is returned,
/// not retried.
pub fn poll_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut pollfd = [libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: `pollfd` is a valid array of one pollfd for the call.
    let ready = unsafe { libc::poll(pollfd.as_mut_ptr(), 1, timeout_ms) };
    match ready {
        0 => Ok(false),
        n if n > 0 => Ok(true),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn poll_sees_a_pipe_become_readable() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        assert!(!poll_readable(r.as_fd(), 0).expect("poll"));
        std::fs::File::from(w).write_all(b"x").expect("write");
        assert!(poll_readable(r.as_fd(), 0).expect("poll"));
    }

    #[test]
    fn positioned_write_then_read_and_seek_data() {
        let file = tempfile::tempfile().expect("tempfile");
        let words = [7u64, 0, u64::MAX];
        pwrite_all_from(file.as_fd(), words.as_ptr() as u64, 24, 8).expect("pwrite");
        let mut back = [0u64; 4];
        assert_eq!(pread_words(file.as_fd(), &mut back, 8).expect("pread"), 3);
        assert_eq!(back[..3], words);
        assert_eq!(lseek(file.as_fd(), 0, libc::SEEK_END).expect("seek"), 32);
        fadvise_dontneed(file.as_fd()).expect("fadvise");
    }

    #[test]
    fn a_pipe_duplicated_onto_another_number_carries_its_bytes() {
        let (r, w) = pipe_cloexec().expect("pipe");
        write_all_raw(w.as_raw_fd(), b"ab").expect("write");
        assert_eq!(readable_bytes(r.as_fd()).expect("fionread"), 2);
        let spare = tempfile::tempfile().expect("tempfile");
        dup_onto_cloexec(r.as_fd(), spare.as_raw_fd()).expect("dup3");
        assert_eq!(readable_bytes(spare.as_fd()).expect("fionread"), 2);
        let flags =
            nix::fcntl::fcntl(spare.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).expect("getfd");
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }

    #[test]
    fn dup_to_same_descriptor_clears_cloexec() {
        let file = tempfile::tempfile().expect("tempfile");
        let fd = file.as_raw_fd();
        dup_to(fd, fd).expect("dup_to");
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).expect("getfd");
        assert_eq!(flags & libc::FD_CLOEXEC, 0);
    }
}
