//! The baselines' root filesystem: fnhost's own host-layer skeleton with
//! the work's code at /var/task, and the read-only binds (the host's /usr)
//! the worker mounts in its private mount namespace.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fnhost_layers::LayerStore;

use super::Work;
use crate::daemon::NOOP_HANDLER;

/// Builds the root under `rootfs` from fnhost's own built-in host layer
/// (its skeleton copied, its binds returned), so the baselines run on the
/// same root filesystem as fnhost's sandboxes, with the code of `work` at
/// /var/task; returns the (host dir, mount point) pairs still to bind
/// read-only.
pub(super) fn build_rootfs(rootfs: &Path, work: &Work) -> Result<Vec<(PathBuf, PathBuf)>> {
    let store_dir = rootfs.with_file_name("layers");
    let store =
        LayerStore::open(&store_dir).context("opening a layer store for the baseline root")?;
    let host = store
        .host_layer(Path::new("/"))
        .context("building fnhost's host layer")?;
    copy_tree(&host.skeleton.path, rootfs)?;
    let binds = host
        .binds
        .iter()
        .map(|b| (b.source.clone(), rootfs.join(&b.target)))
        .collect();
    let task = rootfs.join("var/task");
    match work {
        Work::Python => fs::write(task.join("handler.py"), NOOP_HANDLER)
            .with_context(|| format!("writing {}", task.join("handler.py").display()))?,
        Work::Node { code } => {
            if !code.join("index.js").is_file() {
                bail!("{} has no index.js to run", code.display());
            }
            for entry in fs::read_dir(code)
                .with_context(|| format!("reading {}", code.display()))?
                .flatten()
            {
                copy_tree(&entry.path(), &task.join(entry.file_name()))?;
            }
        }
    }
    Ok(binds)
}

/// Copies files, directories and symlinks (never following them).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        symlink(fs::read_link(from)?, to)?;
    } else if meta.is_dir() {
        fs::create_dir_all(to)?;
        for entry in fs::read_dir(from)?.flatten() {
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else if meta.is_file() {
        fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", path.display()))
}

/// Binds `source` on `target`, then remounts the bind read-only.
pub(super) fn bind_readonly(source: &Path, target: &Path) -> Result<()> {
    let (src, dst) = (cstring(source)?, cstring(target)?);
    for flags in [
        libc::MS_BIND | libc::MS_REC,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
    ] {
        // SAFETY: both strings are valid NUL-terminated C strings that
        // outlive the call; fstype and data may be null for bind mounts.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).with_context(|| {
                format!("bind-mounting {} on {}", source.display(), target.display())
            });
        }
    }
    Ok(())
}

/// Lazily unmounts `target`.
pub(super) fn umount(target: &Path) -> Result<()> {
    let dst = cstring(target)?;
    // SAFETY: `dst` is a valid NUL-terminated C string outliving the call.
    if unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("unmounting {}", target.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::node_work;
    use super::*;

    #[test]
    fn rootfs_mirrors_the_skeleton_without_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        let binds = build_rootfs(&rootfs, &Work::Python).expect("rootfs builds");
        assert_eq!(binds[0], (PathBuf::from("/usr"), rootfs.join("usr")));
        assert!(rootfs.join("var/task/handler.py").is_file());
        assert!(rootfs.join("etc/hosts").is_file());
        assert!(rootfs.join("proc").is_dir());
        if fs::symlink_metadata("/bin").is_ok_and(|m| m.file_type().is_symlink()) {
            assert_eq!(
                fs::read_link(rootfs.join("bin")).expect("symlink"),
                fs::read_link("/bin").expect("symlink")
            );
        }
    }

    #[test]
    fn node_rootfs_holds_the_code_tree_at_var_task() {
        let dir = tempfile::tempdir().expect("tempdir");
        let code = dir.path().join("fn");
        fs::create_dir_all(code.join("node_modules/dep0")).expect("mkdir");
        fs::write(code.join("index.js"), "require('dep0');").expect("write");
        fs::write(code.join("node_modules/dep0/index.js"), "").expect("write");
        let rootfs = dir.path().join("rootfs");
        build_rootfs(&rootfs, &node_work(&code)).expect("rootfs builds");
        let task = rootfs.join("var/task");
        assert!(task.join("index.js").is_file());
        assert!(task.join("node_modules/dep0/index.js").is_file());
        assert!(!task.join("handler.py").exists());
        // No index.js: nothing to run, said before any run starts.
        let empty = dir.path().join("empty");
        fs::create_dir_all(&empty).expect("mkdir");
        let err =
            build_rootfs(&dir.path().join("rootfs2"), &node_work(&empty)).expect_err("no index.js");
        assert!(err.to_string().contains("no index.js"), "{err}");
    }
}
