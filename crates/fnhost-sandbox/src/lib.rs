//! Sandbox primitives for fnhost: each raw syscall wrapped once (`sys`),
//! a clone's whole setup (id map, mounts, privileges, seccomp) behind a
//! recordable `Syscall` trait, capabilities, loopback networking and
//! cgroups. Nothing here knows about functions or pools; it only builds and
//! tears down isolation.

pub mod caps;
pub mod cgroup;
pub mod clone_setup;
pub mod mount;
pub mod net;
#[cfg(test)]
mod recorder;
pub mod seccomp;
pub mod sys;
pub mod syscall;
pub mod userns_support;

/// True when the calling process is in a user namespace other than the
/// host's (its uid map is not the identity map of every id). Overlay mounts
/// there need the `userxattr` option.
pub fn in_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|map| map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(false)
}

/// Namespaces of a zygote container: everything but user (and cgroup).
pub const ZYGOTE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWNET) as u64;

/// Namespaces of each clone: a user namespace of its own (the unprivileged
/// zygote gets capabilities only there, over the namespaces created with
/// it), fresh pid/mount/ipc/uts, plus [`CLONE_NETWORK`] unless the
/// function shares its zygote's loopback (`network = "shared-loopback"`).
pub const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS) as u64;

/// A clone's own network namespace (loopback only): what one invocation
/// listens on, no other invocation can reach. Creating one costs a global
/// lock and a few hundred microseconds, paid by ready clones ahead of time.
pub const CLONE_NETWORK: u64 = libc::CLONE_NEWNET as u64;
