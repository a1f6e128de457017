//! Attempts on the mount table and the filesystem view: mounting,
//! remounting the read-only layers, leaving the root, and reading what the
//! host keeps secret (keys, shadow, kernel memory).

use std::os::raw::c_long;

use crate::outcome::{
    allowed, denied, in_child, open_only, path_absent_or_unusable, verdict, Outcome,
};

pub(crate) fn mounts() -> Vec<(&'static str, Outcome)> {
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
        ("chroot_escape", in_child(climb_out_of_root)),
    ]
}

/// The classic chroot escape, with the capability a new user namespace
/// would give: chroot into a subdirectory, climb `..` past it, chroot
/// there. Succeeds (0) only if that lands beside the clone's own root:
/// in its zygote's root, where the clone's writable layer is mounted at
/// /.fnhost/rw (in the clone's own root that directory is empty). Runs in
/// a throw-away child.
fn climb_out_of_root() -> c_long {
    const DIR: &std::ffi::CStr = c"/tmp/.fnhost-probe-chroot";
    const ZYGOTE_ONLY: &std::ffi::CStr = c"/.fnhost/rw/root";
    // Every call's failure is checked or harmless; the child exits after.
    // SAFETY: plain syscalls on NUL-terminated string literals.
    unsafe {
        if libc::access(ZYGOTE_ONLY.as_ptr(), libc::F_OK) == 0 {
            return -1; // not a clone's root to begin with: nothing to learn
        }
        // Before the new namespace, whose ids map nothing.
        libc::mkdir(DIR.as_ptr(), 0o755);
        // Ignored if refused: chroot below then needs a capability the
        // clone has dropped.
        libc::unshare(libc::CLONE_NEWUSER);
        if libc::chroot(DIR.as_ptr()) < 0 {
            return -1;
        }
        for _ in 0..64 {
            libc::chdir(c"..".as_ptr());
        }
        if libc::chroot(c".".as_ptr()) < 0 {
            return -1;
        }
        libc::access(ZYGOTE_ONLY.as_ptr(), libc::F_OK) as c_long
    }
}

pub(crate) fn filesystem() -> Vec<(&'static str, Outcome)> {
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
