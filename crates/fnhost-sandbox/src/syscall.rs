//! The `Syscall` seam: every privileged call that sandbox setup logic makes
//! (id maps, mounts, privilege drops, the clone's seccomp stage) goes
//! through this trait, so the logic deciding *what* to call and *in which
//! order* is unit-tested with a recorder and run for real by [`LinuxSyscall`].

use std::io;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use crate::seccomp::{Filter, SeccompError};
use crate::sys;

/// The privileged calls sandbox setup needs.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// Creates a directory; an existing one is fine.
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()>;
    /// Makes `new_root` the root of the mount namespace and detaches the old
    /// one (`pivot_root(".", ".")` from inside it, then lazy unmount).
    fn pivot_root_to(&self, new_root: &Path) -> io::Result<()>;
    /// Moves the mount at `new_root` over `/` and makes it the calling
    /// process's root (`chroot`); what was `/` stays mounted beneath it.
    fn move_root_to(&self, new_root: &Path) -> io::Result<()>;

    /// In the calling process's fresh user namespace, maps `inside` ids to
    /// the `outside` ids it had before (the one map an unprivileged process
    /// may write for itself).
    fn map_own_ids(&self, inside: (u32, u32), outside: (u32, u32)) -> io::Result<()>;

    /// `PR_CAPBSET_DROP`: removes `cap` from the bounding set (EINVAL for a
    /// capability above the kernel's last one).
    fn drop_bounding_cap(&self, cap: u32) -> io::Result<()>;
    /// `PR_CAP_AMBIENT_CLEAR_ALL`.
    fn clear_ambient_caps(&self) -> io::Result<()>;
    /// Real, effective and saved uid and gid, supplementary groups cleared.
    fn set_ids(&self, uid: u32, gid: u32) -> io::Result<()>;
    /// `PR_SET_DUMPABLE` back to 1 (a uid change clears it).
    fn set_dumpable(&self) -> io::Result<()>;
    /// `capset` with the effective, permitted and inheritable sets empty.
    fn clear_capability_sets(&self) -> io::Result<()>;
    /// `PR_SET_NO_NEW_PRIVS`.
    fn set_no_new_privs(&self) -> io::Result<()>;
    /// `PR_SET_THP_DISABLE`: no new transparent huge pages for this process
    /// and its children (huge pages it inherited stay mapped).
    fn keep_small_pages(&self) -> io::Result<()>;

    /// Installs the clone stage of a seccomp filter on the calling thread.
    fn install_clone_seccomp(&self, filter: &Filter) -> Result<(), SeccompError>;
    /// Brings `lo` up in the calling process's (fresh) network namespace.
    fn bring_up_loopback(&self) -> Result<(), crate::net::NetError>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(io::Error::from)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(mode).create(path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
    }

    fn pivot_root_to(&self, new_root: &Path) -> io::Result<()> {
        nix::unistd::chdir(new_root)?;
        nix::unistd::pivot_root(".", ".")?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH)?;
        nix::unistd::chdir("/")?;
        Ok(())
    }

    fn move_root_to(&self, new_root: &Path) -> io::Result<()> {
        nix::unistd::chdir(new_root)?;
        nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
        nix::unistd::chroot(".")?;
        nix::unistd::chdir("/")?;
        Ok(())
    }

    fn map_own_ids(&self, inside: (u32, u32), outside: (u32, u32)) -> io::Result<()> {
        sys::map_own_ids(inside, outside)
    }

    fn drop_bounding_cap(&self, cap: u32) -> io::Result<()> {
        sys::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong).map(drop)
    }

    fn clear_ambient_caps(&self) -> io::Result<()> {
        sys::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        )
        .map(drop)
    }

    fn set_ids(&self, uid: u32, gid: u32) -> io::Result<()> {
        sys::set_ids_raw(uid, gid)
    }

    fn set_dumpable(&self) -> io::Result<()> {
        sys::prctl(libc::PR_SET_DUMPABLE, 1).map(drop)
    }

    fn clear_capability_sets(&self) -> io::Result<()> {
        sys::capset_all(0)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map(drop)
    }

    fn keep_small_pages(&self) -> io::Result<()> {
        sys::prctl(libc::PR_SET_THP_DISABLE, 1).map(drop)
    }

    fn bring_up_loopback(&self) -> Result<(), crate::net::NetError> {
        crate::net::bring_up_loopback()
    }

    fn install_clone_seccomp(&self, filter: &Filter) -> Result<(), SeccompError> {
        filter.install_in_clone()
    }
}
