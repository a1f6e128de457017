//! The daemon's end of a zygote's control socket: sending and receiving
//! control messages through tokio readiness, and the state only the
//! holder of the channel may change (hibernation).

use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use crate::control::{self, Received};
use crate::protocol::{DaemonMessage, ZygoteMessage};

use super::sleep::Sleep;

/// The control socket and what only its holder may change.
pub(super) struct Channel {
    pub(super) fd: AsyncFd<OwnedFd>,
    pub(super) sleep: Option<Sleep>,
}

impl Channel {
    pub(super) fn new(fd: AsyncFd<OwnedFd>) -> Channel {
        Channel { fd, sleep: None }
    }
}

/// Sends `msg` with `fds` attached once the socket is writable.
pub(super) async fn send_msg(
    fd: &AsyncFd<OwnedFd>,
    msg: &DaemonMessage,
    fds: &[RawFd],
) -> io::Result<()> {
    loop {
        let mut guard = fd.writable().await?;
        match guard.try_io(|inner| control::send(inner.as_fd(), msg, fds)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

/// Sends `bytes` as one message, as they are (see `control::send_bytes`).
pub(super) async fn send_bytes(fd: &AsyncFd<OwnedFd>, bytes: &[u8]) -> io::Result<()> {
    loop {
        let mut guard = fd.writable().await?;
        match guard.try_io(|inner| control::send_bytes(inner.as_fd(), bytes, &[])) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

/// Receives the zygote's next message.
pub(super) async fn recv_msg(fd: &AsyncFd<OwnedFd>) -> io::Result<Received<ZygoteMessage>> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| control::recv::<ZygoteMessage>(inner.as_fd())) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}
