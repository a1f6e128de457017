//! Attempts on kernel interfaces a sandbox must not reach: module loading,
//! kexec, reboot, clocks, keyrings, BPF, perf, userfaultfd, io_uring, sysctls
//! and the like.

use std::os::raw::c_long;

use crate::outcome::{fd_verdict, verdict, Outcome};

pub(crate) fn kernel_interfaces() -> Vec<(&'static str, Outcome)> {
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
