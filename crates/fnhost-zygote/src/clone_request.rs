//! One clone request: what the daemon asks a zygote for, carried unchanged
//! into the clone's setup. Exactly one descriptor travels with it, the
//! clone's end of its invocation socket: nothing that names a host
//! directory (no cgroup fd) ever enters a zygote, since the zygote runs
//! code the function controls; the daemon moves each clone into its
//! cgroups itself, by pid.

use serde::{Deserialize, Serialize};

/// uid and gid a function runs as inside its clone's user namespace (the
/// clone maps only this id, to the zygote's own).
pub const SANDBOX_ID: u32 = 1000;

/// What a new clone is: its id and how its root is set up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloneRequest {
    pub sandbox: u64,
    /// Size cap of the clone's writable layer, bytes.
    pub writable_bytes: u64,
    /// Absolute paths in the zygote root to carry into the clone root.
    pub carry: Vec<String>,
}

/// A clone request arrived with other than exactly one descriptor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("clone request carried {got} descriptors, expected 1 (the invocation socket)")]
pub struct FdCountError {
    pub got: usize,
}

/// The invocation socket among the descriptors received with a request.
pub fn invocation_fd(
    mut fds: Vec<std::os::fd::OwnedFd>,
) -> Result<std::os::fd::OwnedFd, FdCountError> {
    match fds.len() {
        1 => Ok(fds.remove(0)),
        got => Err(FdCountError { got }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn file() -> OwnedFd {
        tempfile::tempfile().unwrap().into()
    }

    #[test]
    fn exactly_one_descriptor_is_accepted() {
        assert!(invocation_fd(vec![file()]).is_ok());
        let err = invocation_fd(vec![file(), file()]).unwrap_err();
        assert_eq!(err, FdCountError { got: 2 });
        assert_eq!(
            err.to_string(),
            "clone request carried 2 descriptors, expected 1 (the invocation socket)"
        );
        assert_eq!(
            invocation_fd(Vec::new()).unwrap_err(),
            FdCountError { got: 0 }
        );
    }
}
