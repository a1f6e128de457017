//! userfaultfd: the kernel ABI (`<linux/userfaultfd.h>`) and one safe
//! wrapper per syscall or ioctl.
//!
//! A hibernating zygote creates its uffd itself ([`new_user_mode_only`]:
//! `userfaultfd(2)` with `UFFD_USER_MODE_ONLY`), bound to its own mm. Such a
//! uffd handles only faults taken in user mode, so it cannot hold the kernel
//! in the middle of a copy (the classic use of userfaultfd in kernel
//! exploits), and creating one needs no privilege whatever
//! `vm.unprivileged_userfaultfd` says. The price: a kernel access to a
//! registered missing page, e.g. `read()` into a dropped buffer, fails with
//! `EFAULT` instead of waiting for the page (see `fnhost_snapshot::hibernate`
//! for how the hibernating code avoids that). Everything here returns
//! `io::Result`; none of the zygote-side calls allocate.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `userfaultfd(2)` flag: handle only faults taken in user mode.
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFD_API: u64 = 0xAA;
const UFFDIO: u8 = 0xAA;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

// Bits of the `ioctls` masks returned by UFFDIO_API and UFFDIO_REGISTER.
const BIT_REGISTER: u64 = 1 << 0x00;
const BIT_UNREGISTER: u64 = 1 << 0x01;
const BIT_WAKE: u64 = 1 << 0x02;
const BIT_COPY: u64 = 1 << 0x03;
const BIT_ZEROPAGE: u64 = 1 << 0x04;

#[repr(C)]
pub(crate) struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
pub(crate) struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
pub(crate) struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
pub(crate) struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

/// `struct uffd_msg`; for a page fault `arg` is `{flags, address, ptid}`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    arg: [u64; 3],
}

mod ioctl {
    use super::*;
    nix::ioctl_readwrite!(api, UFFDIO, 0x3F, UffdioApi);
    nix::ioctl_readwrite!(register, UFFDIO, 0x00, UffdioRegister);
    nix::ioctl_read!(unregister, UFFDIO, 0x01, UffdioRange);
    nix::ioctl_read!(wake, UFFDIO, 0x02, UffdioRange);
    nix::ioctl_readwrite!(copy, UFFDIO, 0x03, UffdioCopy);
    nix::ioctl_readwrite!(zeropage, UFFDIO, 0x04, UffdioZeropage);
}

/// Zygote side: create a userfaultfd for the calling process's mm,
/// `O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY` (see the module docs).
/// Allocation-free.
pub fn new_user_mode_only() -> io::Result<OwnedFd> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY;
    // SAFETY: userfaultfd(2) takes its flags by value and returns a new
    // file descriptor; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).expect("the kernel returns descriptors that fit an int");
    // SAFETY: on success the syscall returned a fresh descriptor that
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// UFFDIO_API with no optional features; checks that registering and
/// unregistering are offered (copy, zeropage and wake are per-range and
/// checked by [`register_missing`]).
pub fn api_handshake(uffd: BorrowedFd<'_>) -> io::Result<()> {
    let mut api = UffdioApi {
        api: UFFD_API,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: `api` is a valid, exclusively borrowed `struct uffdio_api`.
    unsafe { ioctl::api(uffd.as_raw_fd(), &mut api) }?;
    let wanted = BIT_REGISTER | BIT_UNREGISTER;
    if api.ioctls & wanted != wanted {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "userfaultfd offers no register/unregister ioctls",
        ));
    }
    Ok(())
}

/// Register `[start, start + len)` for missing-page faults; fails (leaving it unregistered)
/// unless UFFDIO_COPY, UFFDIO_ZEROPAGE and UFFDIO_WAKE work on it.
/// Allocation-free.
pub fn register_missing(uffd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    let mut reg = UffdioRegister {
        range: UffdioRange { start, len },
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: `reg` is a valid, exclusively borrowed `struct uffdio_register`.
    unsafe { ioctl::register(uffd.as_raw_fd(), &mut reg) }?;
    let wanted = BIT_COPY | BIT_ZEROPAGE | BIT_WAKE;
    if reg.ioctls & wanted != wanted {
        let _ = unregister(uffd, start, len);
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    Ok(())
}

/// Unregisters `[start, start + len)`: later missing pages there are
/// ordinary zero-fill pages again.
pub fn unregister(uffd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    let mut range = UffdioRange { start, len };
    // SAFETY: `range` is a valid `struct uffdio_range` the kernel only reads.
    unsafe { ioctl::unregister(uffd.as_raw_fd(), &mut range) }?;
    Ok(())
}

/// UFFDIO_COPY `len` bytes from `src` (an address in the caller's own
/// address space) to `dst` in the uffd's mm, waking the faulting threads.
/// Returns the bytes copied, which is less than `len` when the kernel
/// stopped early (it then reports `EAGAIN`); an error means nothing was
/// copied. A `src` the kernel cannot read yields `EFAULT`, not a signal.
pub fn copy(uffd: BorrowedFd<'_>, dst: u64, src: *const u8, len: u64) -> io::Result<u64> {
    let mut copy = UffdioCopy {
        dst,
        src: src as u64,
        len,
        mode: 0,
        copy: 0,
    };
    // The kernel reads `src` with fault-tolerant copies (an unreadable source
    // is an error) and writes only into the mm the uffd is bound to.
    // SAFETY: `copy` is a valid, initialised `struct uffdio_copy`.
    let res = unsafe { ioctl::copy(uffd.as_raw_fd(), &mut copy) };
    partial(res, copy.copy)
}

/// UFFDIO_ZEROPAGE: map zero pages over `[dst, dst + len)` and wake.
pub fn zeropage(uffd: BorrowedFd<'_>, dst: u64, len: u64) -> io::Result<u64> {
    let mut zero = UffdioZeropage {
        range: UffdioRange { start: dst, len },
        mode: 0,
        zeropage: 0,
    };
    // SAFETY: `zero` is a valid `struct uffdio_zeropage`.
    let res = unsafe { ioctl::zeropage(uffd.as_raw_fd(), &mut zero) };
    partial(res, zero.zeropage)
}

fn partial(res: nix::Result<libc::c_int>, done: i64) -> io::Result<u64> {
    match res {
        Ok(_) => Ok(u64::try_from(done).unwrap_or(0)),
        Err(nix::errno::Errno::EAGAIN) if done > 0 => Ok(done.unsigned_abs()),
        Err(errno) => Err(errno.into()),
    }
}

/// UFFDIO_WAKE: wake threads waiting on `[start, start + len)`, e.g. after a
/// fault on a page that was meanwhile copied.
pub fn wake(uffd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<()> {
    let mut range = UffdioRange { start, len };
    // SAFETY: `range` is a valid `struct uffdio_range` the kernel only reads.
    unsafe { ioctl::wake(uffd.as_raw_fd(), &mut range) }?;
    Ok(())
}

/// Append the addresses of all pending page faults to `out` without
/// blocking (the uffd is `O_NONBLOCK`). Other events cannot occur: no
/// event features are enabled.
pub fn read_faults(uffd: BorrowedFd<'_>, out: &mut Vec<u64>) -> io::Result<()> {
    const BATCH: usize = 64;
    let mut msgs = [UffdMsg {
        event: 0,
        reserved1: 0,
        reserved2: 0,
        reserved3: 0,
        arg: [0; 3],
    }; BATCH];
    loop {
        // SAFETY: the buffer is valid for writes of its full size and any
        // bit pattern is a valid `UffdMsg`.
        let n = unsafe {
            libc::read(
                uffd.as_raw_fd(),
                msgs.as_mut_ptr().cast(),
                std::mem::size_of_val(&msgs),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock => Ok(()),
                io::ErrorKind::Interrupted => continue,
                _ => Err(err),
            };
        }
        let count = n.unsigned_abs() / std::mem::size_of::<UffdMsg>();
        out.extend(
            msgs[..count]
                .iter()
                .filter(|m| m.event == UFFD_EVENT_PAGEFAULT)
                .map(|m| m.arg[1]),
        );
        if count < BATCH {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_sizes_match_the_kernel_header() {
        assert_eq!(std::mem::size_of::<UffdioApi>(), 24);
        assert_eq!(std::mem::size_of::<UffdioRange>(), 16);
        assert_eq!(std::mem::size_of::<UffdioRegister>(), 32);
        assert_eq!(std::mem::size_of::<UffdioCopy>(), 40);
        assert_eq!(std::mem::size_of::<UffdioZeropage>(), 32);
        assert_eq!(std::mem::size_of::<UffdMsg>(), 32);
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        assert_eq!(nix::request_code_readwrite!(UFFDIO, 0x3F, 24), 0xc018aa3f);
        assert_eq!(nix::request_code_readwrite!(UFFDIO, 0x00, 32), 0xc020aa00);
        assert_eq!(nix::request_code_read!(UFFDIO, 0x01, 16), 0x8010aa01);
        assert_eq!(nix::request_code_read!(UFFDIO, 0x02, 16), 0x8010aa02);
        assert_eq!(nix::request_code_readwrite!(UFFDIO, 0x03, 40), 0xc028aa03);
        assert_eq!(nix::request_code_readwrite!(UFFDIO, 0x04, 32), 0xc020aa04);
    }

    /// A uffd from [`new_user_mode_only`] leaves kernel-mode faults alone:
    /// `read()` into a registered missing page fails with `EFAULT`. One
    /// that handled them would report the fault instead (the test then
    /// fills the page so that the read ends, and fails).
    #[test]
    fn user_mode_only_uffd_refuses_kernel_faults() {
        use std::io::Write;
        use std::os::fd::AsFd;
        use std::time::{Duration, Instant};

        let uffd = match new_user_mode_only() {
            Ok(uffd) => uffd,
            // No userfaultfd in this kernel (or older than 5.11).
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) => {
                eprintln!("skipping: userfaultfd(UFFD_USER_MODE_ONLY): {e}");
                return;
            }
            Err(e) => panic!("userfaultfd(UFFD_USER_MODE_ONLY): {e}"),
        };
        api_handshake(uffd.as_fd()).expect("api handshake");
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.unsigned_abs() as u64;
        let addr = crate::sys::bare::mmap_anonymous(page).expect("mmap");
        register_missing(uffd.as_fd(), addr, page).expect("register");
        let (mut tx, rx) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        tx.write_all(b"x").expect("write");
        let reader = std::thread::spawn(move || {
            // SAFETY: `addr` is a page of our own writable mapping, mapped
            // until this thread is joined.
            let n = unsafe { libc::read(rx.as_raw_fd(), addr as *mut libc::c_void, 1) };
            (n < 0).then(io::Error::last_os_error)
        });
        let mut faults = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reader.is_finished() {
            read_faults(uffd.as_fd(), &mut faults).expect("read uffd events");
            if !faults.is_empty() {
                zeropage(uffd.as_fd(), addr, page).expect("unblock the reader");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "read() neither failed nor faulted"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let failed = reader.join().expect("reader thread");
        // SAFETY: nothing refers to the mapping any more.
        unsafe { crate::sys::bare::munmap(addr, page) }.expect("munmap");
        assert!(
            faults.is_empty(),
            "the uffd was asked to handle a kernel-mode fault at {faults:#x?}"
        );
        assert_eq!(failed.and_then(|e| e.raw_os_error()), Some(libc::EFAULT));
    }

    #[test]
    fn partial_copy_reports_progress() {
        use nix::errno::Errno;
        assert_eq!(partial(Ok(0), 8192).expect("ok"), 8192);
        assert_eq!(partial(Err(Errno::EAGAIN), 4096).expect("partial"), 4096);
        let again = partial(Err(Errno::EAGAIN), -11).expect_err("nothing copied");
        assert_eq!(again.raw_os_error(), Some(libc::EAGAIN));
        let exists = partial(Err(Errno::EEXIST), -17).expect_err("exists");
        assert_eq!(exists.raw_os_error(), Some(libc::EEXIST));
    }
}
