//! What fnhost's integration tests, benchmark harness and load tester share:
//! starting and stopping a real `fnhost serve`, a small HTTP client, the
//! root/CI gate of privileged tests, and checks for leftover cgroups, mounts
//! and processes. External crates only, so any crate can dev-depend on it.

pub mod config;
pub mod daemon;
pub mod fake;
pub mod gate;
pub mod http;
pub mod launch;
pub mod leaks;
mod log;

pub use config::{toml_string, unique_cgroup_root, Scratch, ServerSection};
pub use daemon::Daemon;
pub use gate::{in_ci, is_root, require, require_root, skip};
pub use http::{http, http_with, request, Response};
pub use launch::{AdminLine, Launch, LogTo};
pub use leaks::{
    alive, cgroup_dirs, children, comm, descendants, eventually, fd_count, fds_of_kind,
    forker_processes, has_mounts_below, mount_count, remove_cgroups, sandbox_processes,
};
