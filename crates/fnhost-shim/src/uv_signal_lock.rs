//! libuv's process-wide signal lock, made anew in every node clone.
//!
//! libuv serialises its signal bookkeeping (`uv_signal_start`/`stop`, the
//! signal handler itself, and so `process.on('SIGx')` and every
//! `child_process` spawn, which watches SIGCHLD) with a *pipe used as a
//! lock*: taking it reads the pipe's one byte, releasing it writes the byte
//! back. libuv makes a new pipe in a forked child from a `pthread_atfork`
//! handler, but fnhost forks clones with `clone3`, which runs no atfork
//! handlers, and `uv_loop_fork` renews only the loop's own descriptors. So
//! every clone of a zygote would share one lock: a clone killed while
//! holding it (its deadline, or the OOM killer, during a spawn) would leave
//! the pipe empty, and every later clone that touches signals would block
//! forever.
//!
//! The lock's descriptors are a static inside node, so fnhost finds them by
//! what they are: the one pipe whose both ends this process holds, opened
//! blocking (libuv's other pipes are non-blocking), with exactly one byte
//! in it while the zygote is idle (the lock is free). Each clone then
//! points those two descriptor numbers at a fresh pipe holding one byte:
//! what libuv's own atfork handler would have done.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, RawFd};

use fnhost_sandbox::sys;

/// The descriptor numbers of libuv's signal lock pipe in the zygote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalLock {
    pub read: RawFd,
    pub write: RawFd,
}

/// One open end of a pipe, as `/proc/self/fd` and `fdinfo` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeEnd {
    pub fd: RawFd,
    pub inode: u64,
    /// The open flags (`flags:` of fdinfo, octal there).
    pub flags: i32,
}

/// Why no lock was found (the zygote then serves without renewing it).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotFound {
    #[error("no blocking pipe with both ends open holds one byte (is this node's libuv?)")]
    None,
    #[error("{0} blocking pipes with both ends open hold one byte; cannot tell which is libuv's")]
    Ambiguous(usize),
    #[error("cannot list this process's descriptors: {0}")]
    Proc(String),
}

/// Finds the lock among this process's pipes (see the module comment).
pub fn find() -> Result<SignalLock, NotFound> {
    let ends = pipe_ends().map_err(|e| NotFound::Proc(e.to_string()))?;
    pick(&ends, |fd| {
        // SAFETY: `fd` is one of this process's open descriptors, listed
        // just now, and only borrowed for the ioctl.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        sys::readable_bytes(fd).ok()
    })
}

/// The lock among `ends`: blocking read and write ends of one pipe whose
/// read end has exactly one byte waiting (`readable`).
pub fn pick(
    ends: &[PipeEnd],
    readable: impl Fn(RawFd) -> Option<usize>,
) -> Result<SignalLock, NotFound> {
    let mut by_inode: BTreeMap<u64, (Option<RawFd>, Option<RawFd>)> = BTreeMap::new();
    for end in ends {
        if end.flags & libc::O_NONBLOCK != 0 {
            continue;
        }
        let slot = by_inode.entry(end.inode).or_default();
        match end.flags & libc::O_ACCMODE {
            libc::O_RDONLY => slot.0 = slot.0.or(Some(end.fd)),
            libc::O_WRONLY => slot.1 = slot.1.or(Some(end.fd)),
            _ => {}
        }
    }
    let found: Vec<SignalLock> = by_inode
        .values()
        .filter_map(|ends| match *ends {
            (Some(read), Some(write)) => Some(SignalLock { read, write }),
            _ => None,
        })
        .filter(|lock| readable(lock.read) == Some(1))
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(NotFound::None),
        many => Err(NotFound::Ambiguous(many.len())),
    }
}

/// This process's open pipe ends.
fn pipe_ends() -> std::io::Result<Vec<PipeEnd>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(target) = fs::read_link(entry.path()) else {
            continue; // closed meanwhile (the directory's own descriptor)
        };
        let Some(inode) = pipe_inode(&target.to_string_lossy()) else {
            continue;
        };
        let Ok(info) = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue;
        };
        if let Some(flags) = fdinfo_flags(&info) {
            out.push(PipeEnd { fd, inode, flags });
        }
    }
    Ok(out)
}

/// `pipe:[1234]` → 1234.
fn pipe_inode(link: &str) -> Option<u64> {
    link.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok()
}

/// The `flags:` line of an fdinfo file (octal).
fn fdinfo_flags(info: &str) -> Option<i32> {
    let value = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
    i32::from_str_radix(value.trim(), 8).ok()
}

/// Points the lock's two descriptor numbers at a new pipe holding the one
/// byte of a free lock. Runs in a fresh clone before any function code.
pub fn renew(lock: SignalLock) -> std::io::Result<()> {
    let (read, write) = sys::pipe_cloexec()?;
    sys::write_all_raw(std::os::fd::AsRawFd::as_raw_fd(&write), b"x")?;
    sys::dup_onto_cloexec(read.as_fd(), lock.read)?;
    sys::dup_onto_cloexec(write.as_fd(), lock.write)?;
    // `read` and `write` close here; the numbers libuv knows stay open.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(fd: RawFd, inode: u64, flags: i32) -> PipeEnd {
        PipeEnd { fd, inode, flags }
    }

    const CLOEXEC_RD: i32 = libc::O_CLOEXEC | libc::O_RDONLY;
    const CLOEXEC_WR: i32 = libc::O_CLOEXEC | libc::O_WRONLY;
    const NONBLOCK: i32 = libc::O_NONBLOCK;

    /// The descriptors node 20 has after start-up (listed from a real one):
    /// libuv's lock is the only blocking pair.
    fn node_like() -> Vec<PipeEnd> {
        vec![
            end(4, 7383, CLOEXEC_RD),
            end(5, 7383, CLOEXEC_WR),
            end(6, 7384, CLOEXEC_RD | NONBLOCK),
            end(7, 7384, CLOEXEC_WR | NONBLOCK),
            end(11, 8196, CLOEXEC_RD | NONBLOCK),
            end(12, 8196, CLOEXEC_WR | NONBLOCK),
            end(251, 8193, libc::O_WRONLY),
        ]
    }

    #[test]
    fn the_lock_is_the_blocking_pipe_holding_one_byte() {
        let lock = pick(&node_like(), |fd| (fd == 4).then_some(1)).expect("found");
        assert_eq!(lock, SignalLock { read: 4, write: 5 });
    }

    #[test]
    fn a_held_lock_or_a_pipe_with_other_data_is_not_taken_for_it() {
        assert_eq!(pick(&node_like(), |_| Some(0)), Err(NotFound::None));
        assert_eq!(pick(&node_like(), |_| Some(7)), Err(NotFound::None));
    }

    #[test]
    fn two_candidates_are_refused_rather_than_guessed() {
        let mut ends = node_like();
        ends.push(end(20, 9000, CLOEXEC_RD));
        ends.push(end(21, 9000, CLOEXEC_WR));
        assert_eq!(pick(&ends, |_| Some(1)), Err(NotFound::Ambiguous(2)));
    }

    #[test]
    fn fdinfo_and_link_are_parsed() {
        assert_eq!(pipe_inode("pipe:[7383]"), Some(7383));
        assert_eq!(pipe_inode("/dev/null"), None);
        let info = "pos:\t0\nflags:\t02004001\nmnt_id:\t15\nino:\t7384\n";
        assert_eq!(
            fdinfo_flags(info),
            Some(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_WRONLY)
        );
    }

    #[test]
    fn renewing_leaves_the_numbers_on_a_fresh_free_lock() {
        let (read, write) = sys::pipe_cloexec().expect("pipe");
        let lock = SignalLock {
            read: std::os::fd::AsRawFd::as_raw_fd(&read),
            write: std::os::fd::AsRawFd::as_raw_fd(&write),
        };
        // The shared lock is held (empty) when the clone starts.
        renew(lock).expect("renew");
        assert_eq!(sys::readable_bytes(read.as_fd()).expect("fionread"), 1);
        sys::write_all_raw(lock.write, b"y").expect("release");
        assert_eq!(sys::readable_bytes(read.as_fd()).expect("fionread"), 2);
    }
}
