//! Raw syscalls that neither std nor nix wraps (clone3, pidfd_*, close_range,
//! capset), each wrapped exactly once in a function returning `io::Result`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `CLONE_INTO_CGROUP` (Linux 5.7); not exported by every libc version.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// `CLONE_PIDFD`: return a pidfd for the child in `clone_args.pidfd`.
pub const CLONE_PIDFD: u64 = libc::CLONE_PIDFD as u64;

/// The kernel's `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What to ask `clone3` for.
#[derive(Debug, Clone, Copy)]
pub struct CloneSpec<'a> {
    /// `CLONE_NEW*` namespace flags (and any other plain clone flags).
    pub flags: u64,
    /// Directory fd of a cgroup2 cgroup to start the child in.
    pub cgroup: Option<BorrowedFd<'a>>,
    /// Signal sent to the parent when the child exits (normally SIGCHLD).
    pub exit_signal: i32,
}

/// Which side of a successful `clone3` we are on.
#[derive(Debug)]
pub enum Forked {
    /// In the child.
    Child,
    /// In the parent, with the child's pid (in the parent's pid namespace)
    /// and a pidfd referring to it.
    Parent { pid: i32, pidfd: OwnedFd },
}

/// Creates a child process with `clone3`, always with `CLONE_PIDFD`.
///
/// # Safety
/// Like `fork`: if the calling process has other threads, the child may only
/// call async-signal-safe functions until it execs or `_exit`s (no
/// allocation, no locks). The child must never return into code that
/// assumes it is the parent, and must never unwind past its caller.
// SAFETY: unsafe to call; the contract is the `# Safety` section above.
pub unsafe fn clone3(spec: CloneSpec<'_>) -> io::Result<Forked> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: spec.flags | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: spec.exit_signal as u64,
        ..CloneArgs::default()
    };
    if let Some(cgroup) = spec.cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cgroup.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid, fully initialised clone_args of the size we
    // pass; `pidfd` outlives the call. No stack is given, so the child runs
    // on a copy of the parent's stack like fork(); the caller upholds the
    // async-signal-safety contract documented above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => {
            // SAFETY: on success with CLONE_PIDFD the kernel stored a new,
            // owned file descriptor in `pidfd`.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Forked::Parent {
                pid: pid as i32,
                pidfd,
            })
        }
    }
}

/// `pidfd_open(pid, 0)`: a pidfd for an existing process.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the kernel returned a new owned descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: plain syscall; a null siginfo is allowed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

/// `waitid(P_PIDFD, pidfd, WEXITED | flags)`: reaps the child behind `pidfd`.
/// With `nohang`, returns `Ok(None)` if it is still running.
pub fn waitid_pidfd(pidfd: BorrowedFd<'_>, nohang: bool) -> io::Result<Option<ExitStatus>> {
    const P_PIDFD: libc::idtype_t = 3;
    // SAFETY: siginfo_t is plain data; zeroed is a valid initial value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: `info` is a valid out pointer for the duration of the call.
    let ret = unsafe { libc::waitid(P_PIDFD, pidfd.as_raw_fd() as libc::id_t, &mut info, flags) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled `info` (or left si_pid 0 with WNOHANG).
    let (pid, status, code) = unsafe { (info.si_pid(), info.si_status(), info.si_code) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match code {
        libc::CLD_EXITED => ExitStatus::Exited(status),
        _ => ExitStatus::Signaled(status),
    }))
}

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

/// `prctl(option, arg2, 0, 0, 0)` for the integer-only options we use.
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the options used with this wrapper take integer arguments only.
    let ret = unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// `capset` with all three sets (effective, permitted, inheritable) set to
/// `mask` for the calling thread (64-bit capability version 3).
pub fn capset_all(mask: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let low = mask as u32;
    let high = (mask >> 32) as u32;
    let data = [
        Data {
            effective: low,
            permitted: low,
            inheritable: low,
        },
        Data {
            effective: high,
            permitted: high,
            inheritable: high,
        },
    ];
    // SAFETY: header and data are valid for the call; version 3 takes two
    // Data elements.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets real, effective and saved uid and gid (and clears supplementary
/// groups) of the calling thread with raw syscalls. Unlike glibc's
/// wrappers this does not broadcast to other threads, so it is safe in the
/// child of `clone3` from a multi-threaded process, where glibc still
/// believes the parent's threads exist.
pub fn set_ids_raw(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscalls with integer arguments; a null list with
    // size 0 clears the supplementary groups.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0 {
            return Err(io::Error::last_os_error());
        }
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

/// `_exit(code)`: ends a forked child without running destructors, atexit
/// handlers or unwinding.
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn clone_args_matches_kernel_v2_size() {
        // CLONE_ARGS_SIZE_VER2 is 88 bytes.
        assert_eq!(std::mem::size_of::<CloneArgs>(), 88);
    }

    #[test]
    fn pidfd_of_self_and_signal_zero() {
        let fd = pidfd_open(std::process::id() as i32).expect("pidfd_open self");
        pidfd_send_signal(fd.as_fd(), 0).expect("signal 0 to self");
    }

    #[test]
    fn pidfd_open_of_missing_pid_fails() {
        assert!(pidfd_open(i32::MAX - 1).is_err());
    }
}
