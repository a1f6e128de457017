//! One clone request, whole: what the daemon asks a zygote for
//! ([`CloneRequest`], carried unchanged into the clone's setup) and the
//! descriptors attached to it ([`CloneFds`]), flattened for `SCM_RIGHTS`
//! and rebuilt on receipt by the same code on both sides.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

/// What a new clone is: its id and how its root and credentials are set up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloneRequest {
    pub sandbox: u64,
    /// Size cap of the clone's writable layer, bytes.
    pub writable_bytes: u64,
    /// Absolute paths in the zygote root to carry into the clone root.
    pub carry: Vec<String>,
    /// uid and gid the function runs as inside the sandbox (user namespace
    /// mode); `None`: stay uid 0 without capabilities.
    #[serde(default)]
    pub run_as: Option<(u32, u32)>,
}

/// Which descriptors a clone request carries (sent next to it, so the
/// receiver can check and rebuild [`CloneFds`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FdLayout {
    /// A cgroup2 directory to clone into is attached.
    pub v2_cgroup: bool,
    /// Number of v1 `cgroup.procs` files attached.
    pub v1_procs: u32,
}

/// The descriptors of one clone request.
#[derive(Debug)]
pub struct CloneFds {
    /// The clone's end of its invocation socket.
    pub invocation: OwnedFd,
    /// cgroup2 directory the clone is created in (`CLONE_INTO_CGROUP`).
    pub cgroup_dir: Option<OwnedFd>,
    /// Writable v1 `cgroup.procs` files the clone attaches itself to.
    pub v1_procs: Vec<OwnedFd>,
}

/// A clone request arrived with descriptors that do not match its layout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("clone request carried {got} descriptors, expected {expected}")]
pub struct FdCountError {
    pub got: usize,
    pub expected: usize,
}

impl CloneFds {
    /// The layout to send and the descriptors in wire order: invocation
    /// socket, cgroup2 directory (if any), v1 `cgroup.procs` files.
    pub fn flatten(&self) -> (FdLayout, Vec<RawFd>) {
        let layout = FdLayout {
            v2_cgroup: self.cgroup_dir.is_some(),
            v1_procs: self.v1_procs.len() as u32,
        };
        let mut raw = vec![self.invocation.as_raw_fd()];
        raw.extend(self.cgroup_dir.as_ref().map(AsRawFd::as_raw_fd));
        raw.extend(self.v1_procs.iter().map(AsRawFd::as_raw_fd));
        (layout, raw)
    }

    /// Rebuilds the descriptors received with a request of `layout`.
    pub fn rebuild(layout: FdLayout, fds: Vec<OwnedFd>) -> Result<CloneFds, FdCountError> {
        let expected = 1 + usize::from(layout.v2_cgroup) + layout.v1_procs as usize;
        if fds.len() != expected {
            return Err(FdCountError {
                got: fds.len(),
                expected,
            });
        }
        let mut fds = fds.into_iter();
        let Some(invocation) = fds.next() else {
            return Err(FdCountError { got: 0, expected });
        };
        let cgroup_dir = if layout.v2_cgroup { fds.next() } else { None };
        Ok(CloneFds {
            invocation,
            cgroup_dir,
            v1_procs: fds.collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> OwnedFd {
        tempfile::tempfile().unwrap().into()
    }

    #[test]
    fn flatten_then_rebuild_keeps_every_role() {
        let fds = CloneFds {
            invocation: file(),
            cgroup_dir: Some(file()),
            v1_procs: vec![file(), file()],
        };
        let (layout, raw) = fds.flatten();
        assert_eq!(
            layout,
            FdLayout {
                v2_cgroup: true,
                v1_procs: 2
            }
        );
        assert_eq!(raw[0], fds.invocation.as_raw_fd());
        assert_eq!(raw[1], fds.cgroup_dir.as_ref().unwrap().as_raw_fd());
        // The receiver gets new descriptors: duplicates stand in for them.
        let copies: Vec<OwnedFd> = std::iter::once(&fds.invocation)
            .chain(fds.cgroup_dir.as_ref())
            .chain(&fds.v1_procs)
            .map(|fd| fd.try_clone().unwrap())
            .collect();
        assert_eq!(copies.len(), raw.len());
        let rebuilt = CloneFds::rebuild(layout, copies).unwrap();
        assert!(rebuilt.cgroup_dir.is_some());
        assert_eq!(rebuilt.v1_procs.len(), 2);
    }

    #[test]
    fn without_cgroup2_the_rest_are_v1_files() {
        let layout = FdLayout {
            v2_cgroup: false,
            v1_procs: 1,
        };
        let rebuilt = CloneFds::rebuild(layout, vec![file(), file()]).unwrap();
        assert!(rebuilt.cgroup_dir.is_none());
        assert_eq!(rebuilt.v1_procs.len(), 1);
    }

    #[test]
    fn wrong_count_is_rejected() {
        let layout = FdLayout {
            v2_cgroup: true,
            v1_procs: 0,
        };
        let err = CloneFds::rebuild(layout, vec![file()]).unwrap_err();
        assert_eq!(
            err,
            FdCountError {
                got: 1,
                expected: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "clone request carried 1 descriptors, expected 2"
        );
    }
}
