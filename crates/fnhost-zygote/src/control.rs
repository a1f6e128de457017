//! Blocking send/receive of control messages with attached descriptors over
//! a `SOCK_SEQPACKET` socket. Used by the zygote side (single-threaded,
//! blocking); the daemon side wraps the same calls in tokio readiness.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest control message accepted (they are small JSON objects).
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;
/// Most descriptors attached to one control message.
pub const MAX_CONTROL_FDS: usize = 16;

/// Sends `msg` as JSON with `fds` attached.
pub fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fds: &[RawFd]) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    send_bytes(sock, &bytes, fds)
}

/// Sends one message as it is given (a hibernated zygote's wake-up, which
/// it reads without deserializing), with `fds` attached.
pub fn send_bytes(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Outcome of a receive.
#[derive(Debug)]
pub enum Received<T> {
    Message(T, Vec<OwnedFd>),
    /// The peer closed the socket.
    Closed,
}

/// Receives one message with its descriptors. Non-blocking sockets report
/// `WouldBlock` as an error.
pub fn recv<T: DeserializeOwned>(sock: BorrowedFd<'_>) -> io::Result<Received<T>> {
    let mut buf = vec![0u8; MAX_CONTROL_MESSAGE];
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_CONTROL_FDS]);
    let (len, fds, truncated) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        for fd in raw {
                            // SAFETY: SCM_RIGHTS delivered a new descriptor
                            // that nothing else owns.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                let truncated = msg
                    .flags
                    .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                break (msg.bytes, fds, truncated);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message truncated",
        ));
    }
    if len == 0 {
        return Ok(Received::Closed);
    }
    let msg = serde_json::from_slice(&buf[..len]).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad control message: {e}"),
        )
    })?;
    Ok(Received::Message(msg, fds))
}

/// A connected pair of blocking, close-on-exec seqpacket sockets: a control
/// channel (message boundaries kept, descriptors passed alongside).
pub fn channel_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ZygoteMessage;
    use std::os::fd::AsFd;

    #[test]
    fn message_with_fd_round_trip() {
        let (a, b) = channel_pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        let msg = ZygoteMessage::Cloned {
            sandbox: 1,
            pid: 2,
            fork_us: 3,
        };
        send(a.as_fd(), &msg, &[file.as_raw_fd()]).unwrap();
        match recv::<ZygoteMessage>(b.as_fd()).unwrap() {
            Received::Message(got, fds) => {
                assert_eq!(got, msg);
                assert_eq!(fds.len(), 1);
            }
            Received::Closed => panic!("closed"),
        }
        drop(a);
        assert!(matches!(
            recv::<ZygoteMessage>(b.as_fd()).unwrap(),
            Received::Closed
        ));
    }
}
