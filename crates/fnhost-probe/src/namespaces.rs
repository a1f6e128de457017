//! Attempts to make or enter namespaces: every `unshare` flag, `setns` into
//! the host's namespaces through /proc, and clones with namespace flags.

use std::os::raw::c_long;

use crate::outcome::{
    all_denied, close, denied, errno, errno_name, in_child, reap_if_child, verdict, Outcome,
};

pub(crate) fn namespaces() -> Vec<(&'static str, Outcome)> {
    let flags = [
        ("unshare_user", libc::CLONE_NEWUSER),
        ("unshare_mnt", libc::CLONE_NEWNS),
        ("unshare_pid", libc::CLONE_NEWPID),
        ("unshare_net", libc::CLONE_NEWNET),
        ("unshare_ipc", libc::CLONE_NEWIPC),
        ("unshare_uts", libc::CLONE_NEWUTS),
        ("unshare_cgroup", libc::CLONE_NEWCGROUP),
        ("unshare_time", 0x80),
    ];
    let mut out = Vec::new();
    for (name, flag) in flags {
        // SAFETY: plain syscall with an integer argument.
        out.push((name, in_child(|| unsafe { libc::unshare(flag) } as c_long)));
    }
    out.push((
        "clone_newuser",
        // SAFETY: fork-like raw clone (no stack given); a created child exits
        // at once in reap_if_child.
        reap_if_child(unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_NEWUSER | libc::SIGCHLD) as c_long,
                0,
                0,
                0,
                0,
            )
        }),
    ));
    out.push((
        "clone_newpid_newns",
        // SAFETY: as above, with new pid and mount namespaces.
        reap_if_child(unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::SIGCHLD) as c_long,
                0,
                0,
                0,
                0,
            )
        }),
    ));
    // struct clone_args v0: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls.
    let args: [u64; 8] = [
        libc::CLONE_NEWUSER as u64,
        0,
        0,
        0,
        libc::SIGCHLD as u64,
        0,
        0,
        0,
    ];
    // SAFETY: `args` is a valid clone_args of the size passed; a created
    // child exits at once in reap_if_child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_ptr(),
            std::mem::size_of_val(&args),
        )
    };
    out.push(("clone3_newuser", reap_if_child(ret)));

    let mut parts = Vec::new();
    for ns in ["mnt", "net", "pid", "user", "ipc", "uts", "cgroup"] {
        let path = std::ffi::CString::new(format!("/proc/1/ns/{ns}")).expect("no NUL");
        // SAFETY: NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        let outcome = if fd < 0 {
            denied(format!("open: {}", errno_name(errno())))
        } else {
            // SAFETY: setns on a descriptor we own; closed right after.
            let ret = unsafe { libc::setns(fd, 0) };
            let o = verdict(ret as c_long);
            close(fd as c_long);
            o
        };
        parts.push((ns.to_string(), outcome));
    }
    out.push(("setns", all_denied(parts)));
    out
}
