//! What a hibernated zygote keeps for the daemon, and how the daemon takes
//! it back to wake it. While it sleeps the zygote holds the only copies of
//! its userfaultfd and of the daemon's ends of its control socket and
//! output pipe, so that a host of thousands of hibernated functions does
//! not hold descriptors for each (see docs/hibernation.md). The daemon
//! remembers their numbers in the zygote and which socket and pipe they are.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use fnhost_sandbox::sys;
use fnhost_snapshot::FileId;
use tokio::io::unix::AsyncFd;

use super::fd;

/// The zygote's descriptor numbers of what it keeps, with the identity of
/// the daemon's socket and pipe they must still be.
pub(super) struct Kept {
    pub uffd: i32,
    pub control: (i32, FileId),
    /// Absent when its output had ended before it slept.
    pub output: Option<(i32, FileId)>,
}

/// What the zygote kept, back in the daemon's hands.
pub(super) struct TakenBack {
    pub socket: AsyncFd<OwnedFd>,
    pub uffd: OwnedFd,
    pub output: Option<OwnedFd>,
}

/// The children of `pid` that have not exited (a zombie, exited and not
/// yet reaped, runs nothing).
pub(super) fn live_children(pid: i32) -> io::Result<Vec<i32>> {
    sys::children_of(pid).map(|pids| {
        pids.into_iter()
            .filter(|&p| !matches!(sys::process_state(p), Ok('Z') | Err(_)))
            .collect()
    })
}

/// Takes back what the zygote whose init is `init` kept, from its runtime
/// (init's only child). The runtime is found by pid, so it is checked to
/// still be init's child after its pidfd was opened (init forks nothing
/// else, so a reused pid could not be); what comes back must be the same
/// socket and pipe, and a userfaultfd.
pub(super) fn take_back(init: i32, kept: &Kept) -> Result<TakenBack, String> {
    let children =
        || live_children(init).map_err(|e| format!("cannot list the zygote's processes: {e}"));
    let runtime = match children()?[..] {
        [runtime] => runtime,
        ref other => {
            return Err(format!(
                "expected one runtime process, found {}",
                other.len()
            ))
        }
    };
    let pidfd =
        sys::pidfd_open(runtime).map_err(|e| format!("cannot open the runtime's pidfd: {e}"))?;
    if !children()?.contains(&runtime) {
        return Err("the runtime exited".into());
    }
    let take = |(target, id): (i32, FileId), what: &str| {
        let copy = sys::pidfd_getfd(pidfd.as_fd(), target)
            .map_err(|e| format!("pidfd_getfd of its descriptor {target}: {e}"))?;
        if FileId::of(copy.as_fd()).ok() != Some(id) {
            return Err(format!("its descriptor {target} is not {what}"));
        }
        Ok(copy)
    };
    let socket = take(kept.control, "the daemon's end of its channel")?;
    let output = match kept.output {
        Some(pipe) => Some(take(pipe, "its output pipe")?),
        None => None,
    };
    let uffd = sys::pidfd_getfd(pidfd.as_fd(), kept.uffd)
        .map_err(|e| format!("pidfd_getfd of its descriptor {}: {e}", kept.uffd))?;
    let kind = std::fs::read_link(format!("/proc/self/fd/{}", uffd.as_raw_fd()))
        .map_err(|e| format!("cannot inspect its descriptor {}: {e}", kept.uffd))?;
    if kind.as_os_str() != "anon_inode:[userfaultfd]" {
        return Err(format!(
            "its descriptor {} is {}, not a userfaultfd",
            kept.uffd,
            kind.display()
        ));
    }
    let socket = fd::register(socket).map_err(|e| format!("cannot watch the channel: {e}"))?;
    Ok(TakenBack {
        socket,
        uffd,
        output,
    })
}
