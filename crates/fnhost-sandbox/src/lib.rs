//! Sandbox primitives for fnhost: each raw syscall wrapped once (`sys`),
//! mounts behind a recordable `Syscall` trait, capabilities, loopback
//! networking and cgroups. Nothing here knows about functions or pools; it
//! only builds and tears down isolation.

pub mod caps;
pub mod cgroup;
pub mod mount;
pub mod net;
pub mod sys;

/// Namespaces of a zygote container: everything but user (and cgroup).
pub const ZYGOTE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWNET) as u64;

/// Namespaces of each clone: fresh pid/mount/ipc/uts; the network namespace
/// (loopback only) is the zygote's, because creating one costs ~0.6 ms and
/// takes a global lock.
pub const CLONE_NAMESPACES: u64 =
    (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) as u64;
