//! Processes: `clone3` (with a pidfd, optionally straight into a cgroup),
//! pidfds, reaping, `execve` and `_exit`. Everything a forked child calls
//! before exec here is async-signal-safe.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::raw::c_char;

/// `CLONE_INTO_CGROUP` (Linux 5.7); not exported by every libc version.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// `CLONE_PIDFD`: return a pidfd for the child in `clone_args.pidfd`.
pub const CLONE_PIDFD: u64 = libc::CLONE_PIDFD as u64;

/// The kernel's `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
pub(super) struct CloneArgs {
    pub(super) flags: u64,
    pub(super) pidfd: u64,
    pub(super) child_tid: u64,
    pub(super) parent_tid: u64,
    pub(super) exit_signal: u64,
    pub(super) stack: u64,
    pub(super) stack_size: u64,
    pub(super) tls: u64,
    pub(super) set_tid: u64,
    pub(super) set_tid_size: u64,
    pub(super) cgroup: u64,
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
    // No stack is given: the child runs on a copy of the parent's, like fork().
    // `pidfd` outlives the call; the caller upholds the contract above.
    // SAFETY: `args` is a fully initialised clone_args of the size passed.
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
            // SAFETY: on success with CLONE_PIDFD the kernel stored a new owned fd in `pidfd`.
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

/// `pidfd_getfd(pidfd, target, 0)`: a duplicate, in this process, of the
/// descriptor `target` of the pidfd's process (close-on-exec). Needs
/// ptrace access to it (root over its own sandboxes).
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, target: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the kernel returned a new owned descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The pids of a pidfd's process, from the caller's pid namespace down to
/// the process's own (`NSpid:` of its fdinfo); empty once it has exited.
pub fn pidfd_nspids(pidfd: BorrowedFd<'_>) -> io::Result<Vec<i32>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?;
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "fdinfo has no NSpid line"))?;
    let pids: Vec<i32> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("NSpid: {e}")))?;
    // An exited process reads "NSpid: -1".
    Ok(if pids.first().is_some_and(|&p| p > 0) {
        pids
    } else {
        Vec::new()
    })
}

/// The children of process `pid` (of its main thread, which is all of them
/// for a single-threaded process), from `/proc/<pid>/task/<pid>/children`.
pub fn children_of(pid: i32) -> io::Result<Vec<i32>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
    text.split_whitespace()
        .map(|p| {
            p.parse()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("children: {e}")))
        })
        .collect()
}

/// The state letter of process `pid` (`R`, `S`, `Z` for a zombie, …), from
/// `/proc/<pid>/stat`.
pub fn process_state(pid: i32) -> io::Result<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: the state follows
    // the last ')'.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "stat has no state field"))
}

/// The calling thread's id (`gettid`).
pub fn current_tid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Every thread of process `pid` with its scheduler state (`R`, `S`, `D`…),
/// from `/proc/<pid>/task/*/stat`. A thread that exits meanwhile is skipped.
pub fn task_states(pid: i32) -> io::Result<Vec<(i32, char)>> {
    let mut states = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Some(tid) = entry?.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
            continue;
        };
        if let Some(state) = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
        {
            states.push((tid, state));
        }
    }
    Ok(states)
}

/// Number of threads of process `pid` (`Threads:` of its status).
pub fn thread_count_of(pid: i32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "status has no Threads line"))
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

/// `madvise(MADV_DOFORK)` on every mapping of the calling process: a
/// region marked `MADV_DONTFORK` (V8 marks its heap so) would be missing
/// from every child, which then faults on its first access. Returns how
/// many regions were set. Mappings the kernel refuses ([vvar], device
/// memory) are skipped: they are never marked.
pub fn undo_dontfork() -> io::Result<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut set = 0;
    for line in maps.lines() {
        let Some((start, end)) = line
            .split_whitespace()
            .next()
            .and_then(|range| range.split_once('-'))
            .and_then(|(a, b)| {
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
        else {
            continue;
        };
        if super::bare::madvise_dofork(start, end - start).is_ok() {
            set += 1;
        }
    }
    Ok(set)
}

/// `personality(ADDR_NO_RANDOMIZE)`: the next `execve` lays the process
/// out at fixed addresses (no ASLR), so that zygotes started alike from
/// identical code have byte-identical memory where their contents agree.
pub fn disable_aslr() -> io::Result<()> {
    // SAFETY: personality(0xffffffff) only reads this process's flags; no memory is involved.
    let current = unsafe { libc::personality(0xffff_ffff) };
    if current < 0 {
        return Err(io::Error::last_os_error());
    }
    // The current flags plus ADDR_NO_RANDOMIZE.
    // SAFETY: personality only sets this process's flags; no memory is involved.
    let rc = unsafe {
        libc::personality((current as libc::c_ulong) | libc::ADDR_NO_RANDOMIZE as libc::c_ulong)
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `_exit(code)`: ends a forked child without running destructors, atexit
/// handlers or unwinding.
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// A NUL-terminated array of C strings (an `argv` or `envp`) built before a
/// fork, so that [`execve`] in the child allocates nothing.
#[derive(Debug)]
pub struct CStringArray {
    /// Owns the strings `ptrs` points into (their heap buffers never move).
    strings: Vec<CString>,
    /// One pointer per string, then a null pointer.
    ptrs: Vec<*const c_char>,
}

// The pointers point into the heap buffers of `strings`, owned by the same
// value and never moved or freed while it lives.
// SAFETY: as just said; nothing in it belongs to a thread.
unsafe impl Send for CStringArray {}

impl CStringArray {
    pub fn new(strings: impl IntoIterator<Item = CString>) -> CStringArray {
        let strings: Vec<CString> = strings.into_iter().collect();
        let ptrs = strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        CStringArray { strings, ptrs }
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

/// `execve(2)`: replaces the process image; returns only on failure.
/// Async-signal-safe (no allocation): usable between clone and exec in a
/// multi-threaded process.
pub fn execve(exe: &CStr, argv: &CStringArray, envp: &CStringArray) -> io::Error {
    // All borrowed for the duration of the call.
    // SAFETY: `exe` and every string are NUL-terminated, both pointer arrays null-terminated.
    unsafe { libc::execve(exe.as_ptr(), argv.ptrs.as_ptr(), envp.ptrs.as_ptr()) };
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn undo_dontfork_makes_a_dontfork_region_inherited_again() {
        let len = 4096 * 4;
        // SAFETY: a fresh anonymous private mapping, unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        // SAFETY: addr..addr+len is the mapping made above.
        assert_eq!(unsafe { libc::madvise(addr, len, libc::MADV_DONTFORK) }, 0);
        let flags_of = || {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let start = format!("{:x}-", addr as usize);
            let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
            lines
                .find(|l| l.starts_with("VmFlags:"))
                .unwrap()
                .to_string()
        };
        assert!(
            flags_of().split_whitespace().any(|f| f == "dc"),
            "{}",
            flags_of()
        );
        assert!(undo_dontfork().unwrap() > 0);
        assert!(
            !flags_of().split_whitespace().any(|f| f == "dc"),
            "{}",
            flags_of()
        );
        // SAFETY: unmaps the mapping made above, used by nothing else.
        unsafe { libc::munmap(addr, len) };
    }

    #[test]
    fn task_states_list_a_parked_thread_beside_the_caller() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let parked = std::thread::spawn(move || rx.recv());
        let me = std::process::id() as i32;
        let states = (0..500)
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                task_states(me).unwrap()
            })
            .find(|states| states.iter().filter(|(_, s)| *s == 'S').count() >= 1)
            .unwrap();
        assert!(states.iter().any(|&(tid, _)| tid == current_tid()));
        assert!(states.len() >= 2, "{states:?}");
        drop(tx);
        let _ = parked.join();
    }

    #[test]
    fn procfs_readers_see_this_process_and_a_zombie_child() {
        let me = std::process::id() as i32;
        assert!(matches!(process_state(me), Ok('R') | Ok('S')));
        assert!(thread_count_of(me).unwrap() >= 1);
        // A child that exited and is not reaped yet is a zombie child.
        let child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id() as i32;
        let zombie = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            matches!(process_state(pid), Ok('Z'))
        });
        assert!(zombie, "the unreaped child never showed as a zombie");
        let mut child = child;
        child.wait().unwrap();
        assert!(process_state(pid).is_err(), "reaped: gone from /proc");
    }

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

    #[test]
    fn string_array_is_null_terminated() {
        let argv = CStringArray::new([c"a".to_owned(), c"bc".to_owned()]);
        assert_eq!(argv.len(), 2);
        assert_eq!(argv.ptrs.len(), 3);
        assert!(argv.ptrs[2].is_null());
        // SAFETY: the pointer comes from a live CString of the array.
        assert_eq!(unsafe { CStr::from_ptr(argv.ptrs[1]) }, c"bc");
    }

    #[test]
    fn execve_of_missing_program_reports_enoent() {
        let empty = CStringArray::new([]);
        let err = execve(c"/nonexistent/fnhost-test", &empty, &empty);
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
}
