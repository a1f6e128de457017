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
    /// `None` while a hibernated zygote keeps the daemon's end itself (see
    /// `sleep`): the wake-up takes it back.
    pub(super) socket: Option<AsyncFd<OwnedFd>>,
    pub(super) sleep: Option<Sleep>,
}

impl Channel {
    pub(super) fn new(fd: AsyncFd<OwnedFd>) -> Channel {
        Channel {
            socket: Some(fd),
            sleep: None,
        }
    }

    /// The daemon's end, unless the zygote keeps it while it sleeps.
    pub(super) fn fd(&self) -> io::Result<&AsyncFd<OwnedFd>> {
        self.socket.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                "the hibernated zygote keeps the daemon's end of its channel until it is woken",
            )
        })
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
