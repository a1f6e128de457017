//! Registering owned descriptors (pidfds, control sockets, userfaultfds)
//! with the tokio reactor: the one place the daemon side does it.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// Hands `fd` to the tokio reactor.
pub fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd owns its descriptor exclusively; it stays open and
    // unchanged until the AsyncFd (its only owner from now on) drops it.
    unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)
}
