//! Credentials of the calling thread: `prctl` integer options, capability
//! sets and uid/gid changes, all as raw per-thread syscalls (safe in the
//! child of a multi-threaded process's `clone3`).

use std::io;

/// `prctl(option, arg2, 0, 0, 0)` for the integer-only options we use.
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the options used with this wrapper take integer arguments only.
    let ret = unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// `capset` with all three sets (effective, permitted, inheritable) set to
/// `mask` for the calling thread (64-bit capability version 3).
pub fn capset_all(mask: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let low = mask as u32;
    let high = (mask >> 32) as u32;
    let data = [
        Data {
            effective: low,
            permitted: low,
            inheritable: low,
        },
        Data {
            effective: high,
            permitted: high,
            inheritable: high,
        },
    ];
    // SAFETY: header and data are valid for the call; version 3 takes two
    // Data elements.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets real, effective and saved uid and gid (and clears supplementary
/// groups) of the calling thread with raw syscalls. Unlike glibc's
/// wrappers this does not broadcast to other threads, so it is safe in the
/// child of `clone3` from a multi-threaded process, where glibc still
/// believes the parent's threads exist.
pub fn set_ids_raw(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscalls with integer arguments; a null list with
    // size 0 clears the supplementary groups.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Maps, in the calling process's fresh user namespace (created by an
/// unprivileged parent), one uid and one gid: `inside` to the ids the
/// process had outside (`outside`), which is the only map an unprivileged
/// process may write for itself. `setgroups` is denied first, as the kernel
/// requires before an unprivileged gid map.
pub fn map_own_ids(inside: (u32, u32), outside: (u32, u32)) -> io::Result<()> {
    use std::io::Write;
    let write = |path: &str, text: &str| -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(text.as_bytes())
            .map_err(|e| io::Error::new(e.kind(), format!("write {path}: {e}")))
    };
    write("/proc/self/setgroups", "deny")?;
    write(
        "/proc/self/uid_map",
        &format!("{} {} 1\n", inside.0, outside.0),
    )?;
    write(
        "/proc/self/gid_map",
        &format!("{} {} 1\n", inside.1, outside.1),
    )
}
