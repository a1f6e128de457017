//! A recording fake of the [`Syscall`] seam for unit tests: every call
//! becomes one line, so tests assert the sequence of privileged calls
//! without root, and a chosen call can be made to fail.

use std::cell::RefCell;
use std::io;
use std::path::Path;

use nix::mount::MsFlags;

use crate::seccomp::{Filter, SeccompError};
use crate::syscall::Syscall;

/// Capabilities above this report EINVAL, like a kernel whose
/// `CAP_LAST_CAP` is 40.
pub const LAST_CAP: u32 = 40;

/// Records every call as a line; the first call whose line contains
/// `fail_on` fails with EPERM (after being recorded).
#[derive(Default)]
pub struct Recorder {
    pub calls: RefCell<Vec<String>>,
    pub fail_on: Option<&'static str>,
}

impl Recorder {
    pub fn failing_on(needle: &'static str) -> Recorder {
        Recorder {
            fail_on: Some(needle),
            ..Recorder::default()
        }
    }

    pub fn into_calls(self) -> Vec<String> {
        self.calls.into_inner()
    }

    fn record(&self, line: String) -> io::Result<()> {
        let fail = self.fail_on.is_some_and(|needle| line.contains(needle));
        self.calls.borrow_mut().push(line);
        if fail {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }
}

impl Syscall for Recorder {
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.record(format!(
            "mount {} {} {} {:?} {}",
            source.unwrap_or("-"),
            target.display(),
            fstype.unwrap_or("-"),
            flags,
            data.unwrap_or("-")
        ))
    }
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(format!("mkdir {} {mode:o}", path.display()))
    }
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        self.record(format!("chown {} {uid}:{gid}", path.display()))
    }
    fn pivot_root_to(&self, new_root: &Path) -> io::Result<()> {
        self.record(format!("pivot {}", new_root.display()))
    }
    fn move_root_to(&self, new_root: &Path) -> io::Result<()> {
        self.record(format!("move-root {}", new_root.display()))
    }
    fn map_own_ids(&self, inside: (u32, u32), outside: (u32, u32)) -> io::Result<()> {
        self.record(format!(
            "map_ids {}:{} -> {}:{}",
            inside.0, inside.1, outside.0, outside.1
        ))
    }
    fn drop_bounding_cap(&self, cap: u32) -> io::Result<()> {
        if cap > LAST_CAP {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.record(format!("capbset_drop {cap}"))
    }
    fn clear_ambient_caps(&self) -> io::Result<()> {
        self.record("ambient_clear".into())
    }
    fn set_ids(&self, uid: u32, gid: u32) -> io::Result<()> {
        self.record(format!("set_ids {uid}:{gid}"))
    }
    fn set_dumpable(&self) -> io::Result<()> {
        self.record("dumpable".into())
    }
    fn clear_capability_sets(&self) -> io::Result<()> {
        self.record("capset 0".into())
    }
    fn set_no_new_privs(&self) -> io::Result<()> {
        self.record("no_new_privs".into())
    }
    fn keep_small_pages(&self) -> io::Result<()> {
        self.record("thp off".into())
    }
    fn bring_up_loopback(&self) -> Result<(), crate::net::NetError> {
        self.record("loopback up".into())
            .map_err(|source| crate::net::NetError::SetFlags { source })
    }

    fn install_clone_seccomp(&self, _filter: &Filter) -> Result<(), SeccompError> {
        // A seccompiler error stands in for the kernel refusing the filter.
        self.record("seccomp clone stage".into())
            .map_err(|e| SeccompError::Install {
                source: seccompiler::Error::Seccomp(e),
            })
    }
}
