//! Sandbox primitives for fnhost: each raw syscall wrapped once (`sys`),
//! namespaces, mounts, capabilities, loopback networking and cgroups.
//! Nothing here knows about functions or pools; it only builds and tears
//! down isolation.

pub mod cgroup;
