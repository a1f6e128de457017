//! What one attempt came to ([`Outcome`]), and the few raw calls every
//! attempt is made of: turning a return value into a verdict, opening
//! without touching, running an attempt in a throw-away child.

use std::ffi::CStr;
use std::os::raw::c_long;

/// What one attempt came to.
pub(crate) struct Outcome {
    pub(crate) denied: bool,
    pub(crate) detail: String,
}

pub(crate) fn denied(detail: impl Into<String>) -> Outcome {
    Outcome {
        denied: true,
        detail: detail.into(),
    }
}

pub(crate) fn allowed(detail: impl Into<String>) -> Outcome {
    Outcome {
        denied: false,
        detail: detail.into(),
    }
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub(crate) fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// Turns a raw return value into an outcome: failure is a denial.
pub(crate) fn verdict(ret: c_long) -> Outcome {
    if ret < 0 {
        denied(errno_name(errno()))
    } else {
        allowed(format!("succeeded (returned {ret})"))
    }
}

pub(crate) fn close(fd: c_long) {
    if fd >= 0 {
        // SAFETY: closing a descriptor this probe opened.
        unsafe { libc::close(fd as i32) };
    }
}

/// Like [`verdict`] for calls returning a descriptor, closing it on success.
pub(crate) fn fd_verdict(ret: c_long) -> Outcome {
    let outcome = verdict(ret);
    close(ret);
    outcome
}

/// Several attempts that must all be denied.
pub(crate) fn all_denied(parts: Vec<(String, Outcome)>) -> Outcome {
    let denied = parts.iter().all(|(_, o)| o.denied);
    let detail = parts
        .iter()
        .map(|(what, o)| format!("{what}: {}", o.detail))
        .collect::<Vec<_>>()
        .join("; ");
    Outcome { denied, detail }
}

/// Opens `path` with `flags`, never reading or writing it.
pub(crate) fn open_only(path: &CStr, flags: i32) -> Outcome {
    // SAFETY: `path` is NUL-terminated; the descriptor is closed right away.
    fd_verdict(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) } as c_long)
}

pub(crate) fn path_absent_or_unusable(path: &str) -> Outcome {
    match std::fs::read_dir(path) {
        Err(e) => denied(format!("{path}: {e}")),
        Ok(entries) => {
            let names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if names.is_empty() {
                denied(format!("{path} is an empty directory"))
            } else {
                allowed(format!("{path} lists {names:?}"))
            }
        }
    }
}

/// Attempts run in a forked child that cannot harm the probe (unshare, a
/// clone that succeeded): the child exits at once.
pub(crate) fn reap_if_child(ret: c_long) -> Outcome {
    if ret == 0 {
        // SAFETY: in the unexpectedly created child: leave at once.
        unsafe { libc::_exit(0) };
    }
    if ret > 0 {
        // SAFETY: waiting for the child just created.
        unsafe { libc::waitpid(ret as i32, std::ptr::null_mut(), 0) };
    }
    verdict(ret)
}

/// Runs `attempt` in a forked child, so a success cannot affect the probe
/// (an unshared namespace, a tracer): the child exits with the errno.
pub(crate) fn in_child(attempt: impl FnOnce() -> c_long) -> Outcome {
    // SAFETY: plain fork; the child makes one syscall and _exits, the
    // parent waits for it.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = if attempt() < 0 { errno() } else { 0 };
        // SAFETY: leaving the child without running destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child forked above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WEXITSTATUS(status) {
        0 => allowed("succeeded"),
        code => denied(errno_name(code)),
    }
}
