//! Root filesystems of zygotes and clones.
//!
//! A **zygote root** is a read-only overlayfs of shared layers (same inodes in
//! every zygote, so one page cache), plus read-only binds of host directories
//! that cannot be overlay layers (the host's /usr), a fresh /proc, the
//! host's harmless devices bound into the layers' read-only /dev, and an
//! import-time /tmp that PID 1 unmounts once the function is imported. A **clone root** is built inside a clone's private
//! mount namespace on top of its zygote's root: a size-capped tmpfs holds the
//! upper dir of a second overlay whose lower dir is the zygote's root, so
//! writes anywhere in `/` are private to the clone and vanish with it.
//!
//! The privileged calls go through the [`Syscall`] seam, so the sequence of
//! mounts is unit-tested with a recorder and run for real by [`LinuxSyscall`].

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

pub use crate::syscall::{LinuxSyscall, Syscall};

/// Device nodes bound from the host into every sandbox's /dev, over empty
/// files of the same names the layers carry.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks every sandbox's /dev has (name, target), carried by the layers.
pub const DEV_SYMLINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Where, inside a zygote root, a clone mounts its writable-layer tmpfs.
/// The directory is created by the host skeleton layer.
pub const CLONE_RW_DIR: &str = "/.fnhost/rw";

/// Where a zygote binds its bare read-only root (the layers' overlay
/// without /proc, /dev, /tmp or host binds on it): the lower dir of its
/// clones' overlays. A clone, in a user namespace of its own, may not
/// stack an overlay on "/" itself: its submounts are locked there, and
/// overlayfs refuses a lower dir with locked mounts inside (they would
/// reveal what they cover). Created by the host skeleton layer.
pub const ZYGOTE_LOWER_DIR: &str = "/.fnhost/lower";

/// /proc options: `subset=pid` shows only process directories, hiding
/// /proc/sys, /proc/sysrq-trigger, /proc/kcore and every other global knob
/// that uid 0 could otherwise write or read without capabilities.
const PROC_OPTIONS: &str = "subset=pid";

/// A mount step that failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{step} ({target}): {source}")]
pub struct MountError {
    pub step: &'static str,
    pub target: PathBuf,
    #[source]
    pub source: io::Error,
}

fn step<T>(step: &'static str, target: &Path, r: io::Result<T>) -> Result<T, MountError> {
    r.map_err(|source| MountError {
        step,
        target: target.to_path_buf(),
        source,
    })
}

/// A read-only bind of a host directory into the root: found by the layer
/// store's host layer, carried in the zygote spec, mounted here (one type
/// end to end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// Absolute host path.
    pub source: PathBuf,
    /// Path inside the root, relative (e.g. "usr").
    pub target: PathBuf,
}

/// What a zygote's root is made of.
#[derive(Debug, Clone)]
pub struct ZygoteRoot {
    /// Empty host directory where the root is assembled (only in the
    /// zygote's private mount namespace; the host never sees these mounts).
    pub staging: PathBuf,
    /// Overlay lower dirs, topmost first.
    pub layers: Vec<PathBuf>,
    pub binds: Vec<Bind>,
    /// Size of the zygote's own /tmp (import-time scratch), bytes.
    pub tmp_bytes: u64,
    /// Inside a user namespace: overlayfs must use `user.overlay.*` xattrs.
    pub userxattr: bool,
}

fn overlay_lowerdir(layers: &[PathBuf]) -> Result<String, MountError> {
    let mut out = String::from("lowerdir=");
    for (i, layer) in layers.iter().enumerate() {
        let s = layer.to_str().filter(|s| !s.contains([':', ',', '\\'])).ok_or_else(|| MountError {
            step: "layer path unusable as an overlay lowerdir (contains ':', ',' or '\\' or is not UTF-8)",
            target: layer.clone(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        if i > 0 {
            out.push(':');
        }
        out.push_str(s);
    }
    Ok(out)
}

/// Assembles a zygote root and pivots into it. Runs as PID 1 of a fresh
/// mount+pid namespace.
pub fn enter_zygote_root(sys: &dyn Syscall, root: &ZygoteRoot) -> Result<(), MountError> {
    let slash = Path::new("/");
    // Nothing below may propagate back to the host.
    step(
        "make mounts private",
        slash,
        sys.mount(
            None,
            slash,
            None,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None,
        ),
    )?;
    let staging = &root.staging;
    let mut lower = overlay_lowerdir(&root.layers)?;
    if root.userxattr {
        lower.push_str(",userxattr");
    }
    step(
        "mount read-only overlay root",
        staging,
        sys.mount(
            Some("overlay"),
            staging,
            Some("overlay"),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            Some(&lower),
        ),
    )?;
    let lower = staging.join(ZYGOTE_LOWER_DIR.trim_start_matches('/'));
    step(
        "bind the bare root for clones",
        &lower,
        sys.mount(staging.to_str(), &lower, None, MsFlags::MS_BIND, None),
    )?;
    for bind in &root.binds {
        let target = staging.join(&bind.target);
        let source = bind.source.to_str().ok_or_else(|| MountError {
            step: "bind source is not UTF-8",
            target: bind.source.clone(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        step(
            "bind host directory",
            &target,
            sys.mount(
                Some(source),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            ),
        )?;
        step(
            "make host bind read-only",
            &target,
            sys.mount(
                None,
                &target,
                None,
                MsFlags::MS_REMOUNT
                    | MsFlags::MS_BIND
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV,
                None,
            ),
        )?;
    }
    mount_proc(sys, &staging.join("proc"))?;
    mount_dev(sys, &staging.join("dev"))?;
    let tmp = staging.join("tmp");
    step(
        "mount zygote /tmp",
        &tmp,
        sys.mount(
            Some("tmpfs"),
            &tmp,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&format!("size={},mode=1777", root.tmp_bytes.max(4096))),
        ),
    )?;
    step(
        "pivot into zygote root",
        staging,
        sys.pivot_root_to(staging),
    )
}

fn mount_proc(sys: &dyn Syscall, target: &Path) -> Result<(), MountError> {
    step(
        "mount /proc",
        target,
        sys.mount(
            Some("proc"),
            target,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(PROC_OPTIONS),
        ),
    )
}

/// The host's harmless devices bound over the empty files the layers
/// carry in /dev ([`DEVICES`], [`DEV_SYMLINKS`]). /dev itself stays a
/// directory of the read-only overlay, not a tmpfs of its own: every
/// superblock a zygote holds makes each memory cgroup on the host larger
/// (see `cgroup::names`), and a device bind is a mount, not a superblock.
fn mount_dev(sys: &dyn Syscall, dev: &Path) -> Result<(), MountError> {
    for name in DEVICES {
        let target = dev.join(name);
        let source = format!("/dev/{name}");
        step(
            "bind host device",
            &target,
            sys.mount(Some(&source), &target, None, MsFlags::MS_BIND, None),
        )?;
    }
    Ok(())
}

/// What a clone's root is made of.
#[derive(Debug, Clone)]
pub struct CloneRoot {
    /// Size cap of the clone's writable layer, bytes.
    pub writable_bytes: u64,
    /// Absolute paths in the zygote root that are separate mounts and must be
    /// carried into the clone root (read-only host binds, and /dev).
    pub carry: Vec<PathBuf>,
    /// uid and gid that own the writable layer's root (the user the
    /// function runs as); `None`: root.
    pub owner: Option<(u32, u32)>,
    /// Inside a user namespace: overlayfs must use `user.overlay.*` xattrs.
    pub userxattr: bool,
}

/// Builds a clone's private root over its zygote's root and enters it.
///
/// The clone moves its root over `/` and `chroot`s into it instead of
/// `pivot_root`, whose cost grows with the host: it visits every thread on
/// the host, under the lock fork and exit take, to re-point those whose
/// root was the old one (`chroot_fs_refs`): ~0.8 µs a process, so ~15 ms
/// and a stall of every fork per clone on a host of 10,000 zygotes, where
/// the move costs ~30 µs on any host. The zygote's root stays mounted
/// beneath, out of reach: a path that climbs to it (`..`, a chroot escape)
/// lands on the mount over it, and that mount cannot be lifted: the clone
/// has no capability left, and in a nested user namespace it is locked
/// (the probe's `chroot_escape` attack). The zygote itself still pivots,
/// once: what it leaves behind is the host's tree.
/// Runs in the clone, right after `clone3(CLONE_NEWNS | CLONE_NEWPID | ...)`.
pub fn enter_clone_root(sys: &dyn Syscall, root: &CloneRoot) -> Result<(), MountError> {
    let rw = Path::new(CLONE_RW_DIR);
    step(
        "mount writable-layer tmpfs",
        rw,
        sys.mount(
            Some("tmpfs"),
            rw,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&format!("size={},mode=755", root.writable_bytes.max(4096))),
        ),
    )?;
    let upper = rw.join("upper");
    let work = rw.join("work");
    let merged = rw.join("root");
    step("create upper dir", &upper, sys.mkdir(&upper, 0o755))?;
    if let Some((uid, gid)) = root.owner {
        step(
            "hand the writable layer to the function's user",
            &upper,
            sys.chown(&upper, uid, gid),
        )?;
    }
    step("create work dir", &work, sys.mkdir(&work, 0o700))?;
    step("create merged dir", &merged, sys.mkdir(&merged, 0o755))?;
    let mut options = format!(
        "lowerdir={ZYGOTE_LOWER_DIR},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    if root.userxattr {
        options.push_str(",userxattr");
    }
    step(
        "mount writable overlay root",
        &merged,
        sys.mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&options),
        ),
    )?;
    // The layers belong to ids a clone's user namespace does not map, so
    // overlayfs cannot copy their directories up: /tmp is a directory of
    // the writable layer itself, bound over the layers' /tmp.
    let tmp = rw.join("tmp");
    step("create /tmp dir", &tmp, sys.mkdir(&tmp, 0o777))?;
    if let Some((uid, gid)) = root.owner {
        step(
            "hand /tmp to the function's user",
            &tmp,
            sys.chown(&tmp, uid, gid),
        )?;
    }
    let tmp_target = merged.join("tmp");
    step(
        "bind the writable /tmp",
        &tmp_target,
        sys.mount(tmp.to_str(), &tmp_target, None, MsFlags::MS_BIND, None),
    )?;
    for path in &root.carry {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let target = merged.join(rel);
        let source = path.to_str().ok_or_else(|| MountError {
            step: "carried mount path is not UTF-8",
            target: path.clone(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        step(
            "carry mount into clone root",
            &target,
            sys.mount(
                Some(source),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            ),
        )?;
    }
    mount_proc(sys, &merged.join("proc"))?;
    step(
        "move clone root over / and chroot",
        &merged,
        sys.move_root_to(&merged),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Recorder;

    fn zygote_root() -> ZygoteRoot {
        ZygoteRoot {
            staging: PathBuf::from("/state/run/z1"),
            layers: vec![
                PathBuf::from("/l/code"),
                PathBuf::from("/l/runtime"),
                PathBuf::from("/l/skel"),
            ],
            binds: vec![Bind {
                source: PathBuf::from("/usr"),
                target: PathBuf::from("usr"),
            }],
            tmp_bytes: 1 << 20,
            userxattr: false,
        }
    }

    #[test]
    fn zygote_root_sequence() {
        let rec = Recorder::default();
        enter_zygote_root(&rec, &zygote_root()).unwrap();
        let calls = rec.into_calls();
        assert!(
            calls[0].starts_with("mount - / - MsFlags(MS_REC | MS_PRIVATE)"),
            "{}",
            calls[0]
        );
        assert!(calls[1].contains("overlay /state/run/z1 overlay"));
        assert!(
            calls[1].ends_with("lowerdir=/l/code:/l/runtime:/l/skel"),
            "{}",
            calls[1]
        );
        assert!(calls[1].contains("MS_RDONLY"));
        // The bare root (before anything is mounted on it), non-recursive:
        // the lower dir of every clone's overlay.
        assert_eq!(
            calls[2],
            "mount /state/run/z1 /state/run/z1/.fnhost/lower - MsFlags(MS_BIND) -"
        );
        assert!(calls[3].starts_with("mount /usr /state/run/z1/usr - MsFlags(MS_BIND | MS_REC)"));
        assert!(calls[4].contains("MS_REMOUNT") && calls[4].contains("MS_RDONLY"));
        assert!(calls
            .iter()
            .any(|c| c.contains("proc /state/run/z1/proc proc") && c.ends_with("subset=pid")));
        for dev in DEVICES {
            assert!(calls
                .iter()
                .any(|c| c.starts_with(&format!("mount /dev/{dev} /state/run/z1/dev/{dev}"))));
        }
        // /dev is the read-only overlay's directory: no superblock of its
        // own (the /tmp tmpfs is the only one mounted besides overlay and
        // proc).
        assert!(
            !calls.iter().any(|c| c.contains("/state/run/z1/dev tmpfs")),
            "{calls:?}"
        );
        assert_eq!(calls.last().unwrap(), "pivot /state/run/z1");
    }

    #[test]
    fn layer_path_with_colon_is_rejected() {
        let mut root = zygote_root();
        root.layers.push(PathBuf::from("/l/a:b"));
        let err = enter_zygote_root(&Recorder::default(), &root).unwrap_err();
        assert!(err.to_string().contains("/l/a:b"), "{err}");
    }

    #[test]
    fn failure_names_step_and_target() {
        let rec = Recorder::failing_on("/usr");
        let err = enter_zygote_root(&rec, &zygote_root()).unwrap_err();
        assert_eq!(err.step, "bind host directory");
        assert_eq!(err.target, PathBuf::from("/state/run/z1/usr"));
    }

    fn clone_root() -> CloneRoot {
        CloneRoot {
            writable_bytes: 64 << 20,
            carry: vec![PathBuf::from("/usr"), PathBuf::from("/dev")],
            owner: Some((1000, 1000)),
            userxattr: true,
        }
    }

    #[test]
    fn a_failed_root_move_names_its_step() {
        let rec = Recorder::failing_on("move-root");
        let err = enter_clone_root(&rec, &clone_root()).unwrap_err();
        assert_eq!(err.step, "move clone root over / and chroot");
        assert_eq!(err.target, PathBuf::from("/.fnhost/rw/root"));
    }

    #[test]
    fn clone_root_sequence() {
        let rec = Recorder::default();
        let root = clone_root();
        enter_clone_root(&rec, &root).unwrap();
        let calls = rec.into_calls();
        assert!(calls[0].starts_with("mount tmpfs /.fnhost/rw tmpfs"));
        assert!(
            calls
                .iter()
                .any(|c| c == "chown /.fnhost/rw/upper 1000:1000"),
            "{calls:?}"
        );
        assert!(calls[0].ends_with(&format!("size={},mode=755", 64u64 << 20)));
        assert!(calls.iter().any(|c| c.ends_with(
            "lowerdir=/.fnhost/lower,upperdir=/.fnhost/rw/upper,workdir=/.fnhost/rw/work,userxattr"
        ) && c.contains("overlay /.fnhost/rw/root overlay")));
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mount /usr /.fnhost/rw/root/usr - MsFlags(MS_BIND | MS_REC)")));
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mount /dev /.fnhost/rw/root/dev - MsFlags(MS_BIND | MS_REC)")));
        assert!(calls
            .iter()
            .any(|c| c.contains("proc /.fnhost/rw/root/proc proc")));
        // /tmp is the writable layer's own directory, the function's.
        assert!(calls.iter().any(|c| c == "chown /.fnhost/rw/tmp 1000:1000"));
        assert!(
            calls
                .iter()
                .any(|c| c
                    .starts_with("mount /.fnhost/rw/tmp /.fnhost/rw/root/tmp - MsFlags(MS_BIND)")),
            "{calls:?}"
        );
        // Entering the root is the last step, and the only switch.
        assert_eq!(calls.last().unwrap(), "move-root /.fnhost/rw/root");
        assert!(!calls.iter().any(|c| c.starts_with("pivot")), "{calls:?}");
    }
}
