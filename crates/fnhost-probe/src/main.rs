//! fnhost-probe: runs inside a sandbox, tries every escape and privileged
//! operation it knows, and prints a JSON report
//! `{attack: {"denied": bool, "detail": "..."}}` on stdout. The isolation
//! tests assert on that report; nothing here asserts anything itself.
//!
//! Usage: `fnhost-probe [--pids PID,PID,...] [--port PORT]` where `--pids`
//! are host pids the sandbox must not be able to see or touch (the daemon,
//! zygotes, other clones) and `--port` a host loopback port it must not
//! reach.
//!
//! Every attempt is chosen so that, should it unexpectedly succeed, it does
//! no harm outside the probe: nothing is ever written to a kernel knob that
//! opened, reboot is asked for an invalid-in-a-pid-namespace command, the
//! clock is "set" on a clock that cannot be set, and so on.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::os::raw::c_long;

use serde_json::{json, Value};

/// What one attempt came to.
struct Outcome {
    denied: bool,
    detail: String,
}

fn denied(detail: impl Into<String>) -> Outcome {
    Outcome {
        denied: true,
        detail: detail.into(),
    }
}

fn allowed(detail: impl Into<String>) -> Outcome {
    Outcome {
        denied: false,
        detail: detail.into(),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_name(e: i32) -> String {
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
fn verdict(ret: c_long) -> Outcome {
    if ret < 0 {
        denied(errno_name(errno()))
    } else {
        allowed(format!("succeeded (returned {ret})"))
    }
}

fn close(fd: c_long) {
    if fd >= 0 {
        // SAFETY: closing a descriptor this probe opened.
        unsafe { libc::close(fd as i32) };
    }
}

/// Like [`verdict`] for calls returning a descriptor, closing it on success.
fn fd_verdict(ret: c_long) -> Outcome {
    let outcome = verdict(ret);
    close(ret);
    outcome
}

/// Several attempts that must all be denied.
fn all_denied(parts: Vec<(String, Outcome)>) -> Outcome {
    let denied = parts.iter().all(|(_, o)| o.denied);
    let detail = parts
        .iter()
        .map(|(what, o)| format!("{what}: {}", o.detail))
        .collect::<Vec<_>>()
        .join("; ");
    Outcome { denied, detail }
}

/// Opens `path` with `flags`, never reading or writing it.
fn open_only(path: &CStr, flags: i32) -> Outcome {
    // SAFETY: `path` is NUL-terminated; the descriptor is closed right away.
    fd_verdict(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) } as c_long)
}

fn path_absent_or_unusable(path: &str) -> Outcome {
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
fn reap_if_child(ret: c_long) -> Outcome {
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
fn in_child(attempt: impl FnOnce() -> c_long) -> Outcome {
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

fn mounts() -> Vec<(&'static str, Outcome)> {
    // Any success affects only this clone's own mount namespace.
    vec![
        (
            "mount_tmpfs",
            // SAFETY: NUL-terminated string literals and null data.
            verdict(unsafe {
                libc::mount(
                    c"none".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            } as c_long),
        ),
        (
            "remount_usr_rw",
            // SAFETY: NUL-terminated string literals and null data.
            verdict(unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/usr".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND,
                    std::ptr::null(),
                )
            } as c_long),
        ),
        (
            "mount_cgroup2",
            // SAFETY: NUL-terminated string literals and null data.
            verdict(unsafe {
                libc::mount(
                    c"cgroup2".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"cgroup2".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            } as c_long),
        ),
        (
            "umount_proc",
            // SAFETY: NUL-terminated string literals and null data.
            verdict(unsafe { libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) } as c_long),
        ),
        (
            "umount_usr",
            // SAFETY: NUL-terminated string literals and null data.
            verdict(unsafe { libc::umount2(c"/usr".as_ptr(), libc::MNT_DETACH) } as c_long),
        ),
        (
            "pivot_root",
            // SAFETY: NUL-terminated string literals and null data.
            verdict(unsafe {
                libc::syscall(libc::SYS_pivot_root, c"/tmp".as_ptr(), c"/tmp".as_ptr())
            }),
        ),
        (
            "chroot",
            // SAFETY: NUL-terminated string literals and null data.
            verdict(unsafe { libc::chroot(c"/tmp".as_ptr()) } as c_long),
        ),
    ]
}

fn namespaces() -> Vec<(&'static str, Outcome)> {
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

fn processes(host_pids: &[i32]) -> Vec<(&'static str, Outcome)> {
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

fn kernel_interfaces() -> Vec<(&'static str, Outcome)> {
    let mut out = Vec::new();
    out.push((
        "keyctl_join_session_keyring",
        // SAFETY: integer arguments and NUL-terminated string literals.
        verdict(unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                1, /* KEYCTL_JOIN_SESSION_KEYRING */
                std::ptr::null::<u8>(),
            )
        }),
    ));
    out.push((
        "add_key",
        // SAFETY: integer arguments and NUL-terminated string literals.
        verdict(unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"fnhost-probe".as_ptr(),
                c"x".as_ptr(),
                1usize,
                -3i32, /* KEY_SPEC_SESSION_KEYRING */
            )
        }),
    ));
    out.push((
        "request_key",
        // SAFETY: integer arguments and NUL-terminated string literals.
        verdict(unsafe {
            libc::syscall(
                libc::SYS_request_key,
                c"user".as_ptr(),
                c"fnhost-probe".as_ptr(),
                std::ptr::null::<u8>(),
                0,
            )
        }),
    ));
    // union bpf_attr for BPF_MAP_CREATE: map_type, key_size, value_size, max_entries.
    let mut attr = [0u32; 32];
    attr[..4].copy_from_slice(&[1 /* BPF_MAP_TYPE_HASH */, 4, 4, 1]);
    out.push((
        "bpf_map_create",
        // SAFETY: `attr` is valid for the size passed; a map fd is closed.
        fd_verdict(unsafe {
            libc::syscall(
                libc::SYS_bpf,
                0, /* BPF_MAP_CREATE */
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        }),
    ));
    // struct perf_event_attr (VER0, 64 bytes): type, size, config.
    let mut pattr = [0u8; 128];
    pattr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    pattr[4..8].copy_from_slice(&64u32.to_ne_bytes());
    out.push((
        "perf_event_open",
        // SAFETY: `pattr` is larger than the size it declares; fd closed.
        fd_verdict(unsafe {
            libc::syscall(libc::SYS_perf_event_open, pattr.as_ptr(), 0, -1, -1, 0)
        }),
    ));
    out.push((
        "reboot",
        // SAFETY: LINUX_REBOOT_CMD_CAD_OFF: outside the initial pid namespace
        // the kernel answers EINVAL even to a capable caller; nothing reboots.
        verdict(unsafe {
            libc::syscall(
                libc::SYS_reboot,
                0xfee1_deadu32 as c_long,
                672_274_793 as c_long,
                0 as c_long,
                std::ptr::null::<u8>(),
            )
        }),
    ));
    // Invalid descriptor, missing module or path, empty image: harmless
    // even if a capability check passed.
    out.push((
        "finit_module",
        // SAFETY: integers, null pointers and NUL-terminated literals.
        verdict(unsafe { libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0) }),
    ));
    out.push((
        "delete_module",
        // SAFETY: integers, null pointers and NUL-terminated literals.
        verdict(unsafe {
            libc::syscall(
                libc::SYS_delete_module,
                c"fnhost_probe_none".as_ptr(),
                libc::O_NONBLOCK,
            )
        }),
    ));
    out.push((
        "kexec_load",
        // SAFETY: integers, null pointers and NUL-terminated literals.
        verdict(unsafe { libc::syscall(libc::SYS_kexec_load, 0, 0, std::ptr::null::<u8>(), 0) }),
    ));
    out.push((
        "swapon",
        // SAFETY: integers, null pointers and NUL-terminated literals.
        verdict(unsafe { libc::syscall(libc::SYS_swapon, c"/tmp/fnhost-probe-none".as_ptr(), 0) }),
    ));
    out.push((
        "acct",
        // SAFETY: integers, null pointers and NUL-terminated literals.
        verdict(unsafe { libc::syscall(libc::SYS_acct, c"/tmp/fnhost-probe-none".as_ptr()) }),
    ));
    let ts = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    out.push((
        "clock_settime",
        // SAFETY: CLOCK_MONOTONIC cannot be set (EINVAL even when capable).
        verdict(unsafe {
            libc::syscall(
                libc::SYS_clock_settime,
                libc::CLOCK_MONOTONIC,
                &ts as *const libc::timespec,
            )
        }),
    ));
    out.push((
        "sethostname",
        // SAFETY: own UTS namespace; a short constant name.
        verdict(unsafe { libc::sethostname(c"probed".as_ptr(), 6) } as c_long),
    ));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: iopl(3) would only grant port I/O to this process.
    out.push(("iopl", verdict(unsafe { libc::syscall(libc::SYS_iopl, 3) })));
    out.push((
        "userfaultfd",
        // SAFETY: plain syscall; a uffd is closed.
        fd_verdict(unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) }),
    ));
    let mut params = [0u8; 120];
    out.push((
        "io_uring_setup",
        // SAFETY: `params` is a zeroed io_uring_params; a ring fd is closed.
        fd_verdict(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) }),
    ));
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[8]; }
    let mut handle = [0u8; 16];
    handle[0..4].copy_from_slice(&8u32.to_ne_bytes());
    handle[4..8].copy_from_slice(&1i32.to_ne_bytes());
    out.push((
        "open_by_handle_at",
        // SAFETY: AT_FDCWD and a valid 16-byte handle; an opened fd is closed.
        fd_verdict(unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                libc::AT_FDCWD,
                handle.as_ptr(),
                libc::O_RDONLY,
            )
        }),
    ));
    let mut mount_id = 0i32;
    let mut handle = [0u8; 136];
    handle[0..4].copy_from_slice(&128u32.to_ne_bytes());
    out.push((
        "name_to_handle_at",
        // SAFETY: a 128-byte handle buffer and a mount id out-parameter.
        verdict(unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                libc::AT_FDCWD,
                c"/".as_ptr(),
                handle.as_mut_ptr(),
                &mut mount_id,
                0,
            )
        }),
    ));
    out
}

fn sockets(port: Option<u16>) -> Vec<(&'static str, Outcome)> {
    let mut out = Vec::new();
    let eth_p_all = (libc::ETH_P_ALL as u16).to_be() as i32;
    out.push((
        "socket_packet_raw",
        // SAFETY: integer arguments; the descriptor is closed by fd_verdict.
        fd_verdict(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, eth_p_all) } as c_long),
    ));
    out.push((
        "socket_inet_raw",
        fd_verdict(
            // SAFETY: integer arguments; the descriptor is closed by fd_verdict.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) } as c_long,
        ),
    ));
    out.push((
        "socket_inet6_raw",
        fd_verdict(
            // SAFETY: integer arguments; the descriptor is closed by fd_verdict.
            unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6) } as c_long,
        ),
    ));
    out.push((
        "socket_netlink_route",
        fd_verdict(
            // SAFETY: integer arguments; the descriptor is closed by fd_verdict.
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) }
                as c_long,
        ),
    ));
    if let Some(port) = port {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        out.push((
            "connect_host_loopback",
            match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)) {
                Ok(_) => allowed(format!("connected to {addr}")),
                Err(e) => denied(format!("{addr}: {e}")),
            },
        ));
    }
    out
}

fn filesystem() -> Vec<(&'static str, Outcome)> {
    let mut out = vec![
        ("read_etc_shadow", open_only(c"/etc/shadow", libc::O_RDONLY)),
        (
            "read_etc_ssh_host_keys",
            path_absent_or_unusable("/etc/ssh"),
        ),
        ("read_root_home", path_absent_or_unusable("/root")),
        ("read_proc_kcore", open_only(c"/proc/kcore", libc::O_RDONLY)),
        ("read_proc_keys", open_only(c"/proc/keys", libc::O_RDONLY)),
        (
            "read_proc_kallsyms",
            open_only(c"/proc/kallsyms", libc::O_RDONLY),
        ),
        ("read_sys", path_absent_or_unusable("/sys")),
        ("cgroupfs_access", path_absent_or_unusable("/sys/fs/cgroup")),
        ("read_dev_mem", open_only(c"/dev/mem", libc::O_RDONLY)),
        (
            "open_dev_userfaultfd",
            open_only(c"/dev/userfaultfd", libc::O_RDONLY),
        ),
        // Opened for writing only; never written, even if the open worked.
        (
            "write_proc_sysrq_trigger",
            open_only(c"/proc/sysrq-trigger", libc::O_WRONLY),
        ),
        (
            "write_proc_sys_kernel",
            open_only(c"/proc/sys/kernel/core_pattern", libc::O_WRONLY),
        ),
        (
            "write_usr",
            open_only(c"/usr/bin/fnhost-probe-x", libc::O_WRONLY | libc::O_CREAT),
        ),
        (
            "write_dev",
            open_only(c"/dev/fnhost-probe-x", libc::O_WRONLY | libc::O_CREAT),
        ),
    ];
    // Writes anywhere else in / land in the clone's private writable layer:
    // allowed inside; the test checks that the layer on the host is unchanged.
    let wrote = std::fs::write("/var/task/fnhost-probe-x", b"probe");
    out.push((
        "write_code_layer",
        match wrote {
            Ok(()) => allowed("written to the clone's private writable layer"),
            Err(e) => denied(e.to_string()),
        },
    ));
    // Device nodes: the filter refuses S_IFCHR/S_IFBLK, and the writable
    // layer is nodev besides.
    for (name, kind, dev) in [
        ("mknod_char_device", libc::S_IFCHR, libc::makedev(1, 3)),
        ("mknod_block_device", libc::S_IFBLK, libc::makedev(8, 0)),
    ] {
        let path = std::ffi::CString::new(format!("/tmp/fnhost-probe-{name}")).expect("no NUL");
        // SAFETY: NUL-terminated path; a created node is removed below.
        let ret = unsafe { libc::mknod(path.as_ptr(), kind | 0o666, dev) };
        let outcome = verdict(ret as c_long);
        if ret == 0 {
            // SAFETY: removing the node created above.
            unsafe { libc::unlink(path.as_ptr()) };
        }
        out.push((name, outcome));
    }
    out
}

/// Capability sets of this process, from /proc/self/status.
fn cap_line(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        })
        .unwrap_or_default()
}

fn privileges() -> Vec<(&'static str, Outcome)> {
    // struct __user_cap_header_struct { version, pid } (v3) and two data
    // words { effective, permitted, inheritable } with every bit set.
    let header = [0x2008_0522u32, 0];
    let data = [u32::MAX; 6];
    let capset =
        // SAFETY: valid v3 header and two data structs.
        verdict(unsafe { libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()) });
    // SAFETY: plain syscall; uid 0 setting uid 0 changes nothing.
    let setuid = verdict(unsafe { libc::setuid(0) } as c_long);
    let eff = cap_line("CapEff:");
    let bnd = cap_line("CapBnd:");
    let prm = cap_line("CapPrm:");
    let empty = |s: &str| !s.is_empty() && s.chars().all(|c| c == '0');
    let still_empty = empty(&eff) && empty(&bnd) && empty(&prm);
    let nnp = cap_line("NoNewPrivs:");
    let seccomp = cap_line("Seccomp:");
    vec![(
        "regain_capabilities",
        Outcome {
            denied: capset.denied && still_empty,
            detail: format!(
                "capset: {}; setuid(0): {}; CapEff {eff} CapPrm {prm} CapBnd {bnd}; NoNewPrivs {nnp}; Seccomp {seccomp}",
                capset.detail, setuid.detail
            ),
        },
    )]
}

fn parse_args() -> (Vec<i32>, Option<u16>) {
    let mut pids = Vec::new();
    let mut port = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--pids" => {
                pids = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|p| p.trim().parse().ok())
                    .collect()
            }
            "--port" => port = args.next().and_then(|p| p.parse().ok()),
            other => {
                eprintln!("fnhost-probe: unknown argument {other:?}; usage: fnhost-probe [--pids P,P] [--port N]");
                std::process::exit(2);
            }
        }
    }
    (pids, port)
}

fn main() {
    let (pids, port) = parse_args();
    let mut report: BTreeMap<&'static str, Outcome> = BTreeMap::new();
    for group in [
        mounts(),
        namespaces(),
        processes(&pids),
        kernel_interfaces(),
        sockets(port),
        filesystem(),
        privileges(),
    ] {
        report.extend(group);
    }
    let json: serde_json::Map<String, Value> = report
        .into_iter()
        .map(|(name, o)| {
            (
                name.to_string(),
                json!({ "denied": o.denied, "detail": o.detail }),
            )
        })
        .collect();
    println!("{}", Value::Object(json));
}
