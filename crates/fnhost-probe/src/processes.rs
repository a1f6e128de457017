//! Attempts on other processes: seeing, signalling, tracing and reading
//! the memory of host pids (the daemon, zygotes, other clones).

use std::os::raw::c_long;

use crate::outcome::{all_denied, allowed, denied, fd_verdict, in_child, verdict, Outcome};

/// PTRACE_ATTACH to `pid`; on success waits for the attach stop and
/// detaches again, so the target runs on unharmed.
fn ptrace_attach(pid: i32) -> Outcome {
    // SAFETY: integer arguments and null addresses.
    let ret = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0usize, 0usize) };
    if ret == 0 {
        let mut status = 0;
        // SAFETY: waiting for the tracee's attach stop, then detaching it.
        unsafe {
            libc::waitpid(pid, &mut status, libc::__WALL);
            libc::ptrace(libc::PTRACE_DETACH, pid, 0usize, 0usize);
        }
    }
    verdict(ret)
}

pub(crate) fn processes(host_pids: &[i32]) -> Vec<(&'static str, Outcome)> {
    let mut out = Vec::new();
    let me = std::process::id() as i32;
    let visible: Vec<i32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // The sandbox's own runtime (pid 1) and this probe; nothing else.
    let foreign: Vec<i32> = visible
        .iter()
        .copied()
        .filter(|&p| p != 1 && p != me)
        .collect();
    out.push((
        "see_other_processes",
        if foreign.is_empty() {
            denied(format!("/proc lists {visible:?}"))
        } else {
            allowed(format!("/proc lists {visible:?}"))
        },
    ));
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    out.push(("ptrace_attach_parent", ptrace_attach(parent)));
    out.push((
        "ptrace_traceme",
        // SAFETY: PTRACE_TRACEME takes no pointers.
        in_child(|| unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) }),
    ));
    let mut buf = [0u8; 16];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: 0x40_0000 as *mut libc::c_void,
        iov_len: buf.len(),
    };
    out.push((
        "process_vm_readv_parent",
        // SAFETY: one local iovec over `buf`; the remote address is only read by
        // the kernel on behalf of the target, if it is allowed at all.
        verdict(unsafe { libc::process_vm_readv(parent, &local, 1, &remote, 1, 0) } as c_long),
    ));

    let mut kill = Vec::new();
    let mut trace = Vec::new();
    let mut pidfd = Vec::new();
    for &pid in host_pids {
        kill.push((
            pid.to_string(),
            // SAFETY: signal 0 only checks whether the process can be signalled.
            verdict(unsafe { libc::kill(pid, 0) } as c_long),
        ));
        trace.push((pid.to_string(), ptrace_attach(pid)));
        pidfd.push((
            pid.to_string(),
            // SAFETY: plain syscall; a returned descriptor is closed.
            fd_verdict(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) }),
        ));
    }
    if !host_pids.is_empty() {
        out.push(("kill_host_processes", all_denied(kill)));
        out.push(("ptrace_host_processes", all_denied(trace)));
        out.push(("pidfd_open_host_processes", all_denied(pidfd)));
    }
    out
}
