//! Networking inside a fresh network namespace: only the loopback device
//! exists, and it starts down. `network = "none"` means exactly that
//! loopback, brought up.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Error bringing loopback up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a socket to configure loopback: {source}")]
    Socket { source: io::Error },
    #[error("cannot read flags of interface lo: {source}")]
    GetFlags { source: io::Error },
    #[error("cannot bring interface lo up: {source}")]
    SetFlags { source: io::Error },
}

/// Sets `IFF_UP` on `lo` in the calling process's network namespace.
pub fn bring_up_loopback() -> Result<(), NetError> {
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(NetError::Socket {
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `raw` is a new descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into `req`, which is valid for writes.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(NetError::GetFlags {
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: the kernel filled ifru_flags for SIOCGIFFLAGS.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `req`, a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(NetError::SetFlags {
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}
