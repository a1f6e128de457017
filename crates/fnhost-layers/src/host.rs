//! The built-in host layer: a small skeleton layer (mount points, an /etc
//! subset, symlinks mirroring the host's merged-/usr layout) plus read-only
//! binds of the host directories too large to copy, so a function can run
//! with no image at all.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::LayerError;
use crate::plan::{FileData, Node, Plan};
use crate::source::{scan_entry, ScanOptions, SourceDir};
use crate::store::{Layer, LayerStore};

/// A host directory to bind read-only into the sandbox root (the sandbox's
/// one bind type, carried unchanged to the mount call).
pub use fnhost_sandbox::mount::Bind;
use fnhost_sandbox::mount::{DEVICES, DEV_SYMLINKS};

/// The skeleton layer and the binds that complete it.
#[derive(Debug, Clone)]
pub struct HostLayer {
    pub skeleton: Layer,
    pub binds: Vec<Bind>,
}

/// Directories of the skeleton, with their modes. `.fnhost/rw` is where the
/// per-sandbox tmpfs is mounted, `.fnhost/lower` where a zygote binds its
/// bare root for its clones' overlays; `var/task` and `.fnhost/runtime` are
/// covered by the code and runtime layers.
const SKELETON_DIRS: &[(&str, u32)] = &[
    ("proc", 0o755),
    ("dev", 0o755),
    ("sys", 0o755),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("root", 0o700),
    ("home", 0o755),
    ("mnt", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("var/task", 0o755),
    (".fnhost", 0o755),
    (".fnhost/rw", 0o755),
    (".fnhost/lower", 0o755),
    (".fnhost/runtime", 0o755),
    ("etc", 0o755),
];

/// Top-level host directories that are mirrored as symlinks or bound.
const BOUND_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Entries of the host's /etc copied into the skeleton; missing ones are
/// skipped. Names starting with `python3` are added to these.
const ETC_ENTRIES: &[&str] = &[
    "passwd",
    "group",
    "nsswitch.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "os-release",
    "protocols",
    "services",
    "mime.types",
    "ssl",
    "ca-certificates.conf",
];

/// Not copied (paths relative to /etc): private keys of the host never go
/// into a sandbox.
const ETC_EXCLUDED: &[&str] = &["ssl/private"];

/// Larger /etc files are skipped with a warning.
const ETC_MAX_FILE_SIZE: u64 = 4 << 20;

/// Files written fresh rather than copied: the network is loopback only.
const ETC_FRESH: &[(&str, &[u8])] = &[
    ("hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
    ("hostname", b"fnhost\n"),
    ("resolv.conf", b""),
];

impl LayerStore {
    /// Builds the host layer from the host root `host_root` (normally `/`).
    /// The skeleton is content-addressed like any layer, so a change to the
    /// host's /etc yields a new one; the binds are returned, not stored.
    pub fn host_layer(&self, host_root: &Path) -> Result<HostLayer, LayerError> {
        let mut plan = Plan::new();
        for (dir, mode) in SKELETON_DIRS {
            plan.insert(PathBuf::from(dir), Node::Dir { mode: *mode })?;
        }
        add_dev(&mut plan)?;
        let binds = add_bound_dirs(&mut plan, host_root)?;
        add_etc(&mut plan, &host_root.join("etc"))?;
        self.build(&plan)
            .map(|skeleton| HostLayer { skeleton, binds })
    }
}

/// Directories of the mountpoints layer that sits above an image's layers.
const MOUNTPOINT_DIRS: &[(&str, u32)] = &[
    ("proc", 0o755),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("var/task", 0o755),
    (".fnhost", 0o755),
    (".fnhost/rw", 0o755),
    (".fnhost/lower", 0o755),
    (".fnhost/runtime", 0o755),
    ("etc", 0o755),
];

impl LayerStore {
    /// The small layer put above an image's layers so any image works: the
    /// mount points a sandbox needs (`proc`, `dev`, `tmp`, `.fnhost/rw`,
    /// `.fnhost/lower`, `.fnhost/runtime`, `var/task`) and the generated `/etc/hosts`,
    /// `hostname` and `resolv.conf` of a loopback-only sandbox.
    pub fn mountpoints_layer(&self) -> Result<Layer, LayerError> {
        let mut plan = Plan::new();
        for (dir, mode) in MOUNTPOINT_DIRS {
            plan.insert(PathBuf::from(dir), Node::Dir { mode: *mode })?;
        }
        add_dev(&mut plan)?;
        for (name, contents) in ETC_FRESH {
            let node = Node::File {
                mode: 0o644,
                data: FileData::Bytes(Cow::Borrowed(contents)),
            };
            plan.insert(Path::new("etc").join(name), node)?;
        }
        self.build(&plan)
    }
}

/// The contents of every sandbox's /dev: an empty file for each device the
/// zygote binds from the host, and the /proc/self/fd symlinks. The zygote
/// mounts nothing over /dev itself (no tmpfs of its own, see
/// `fnhost_sandbox::mount`), so /dev is read-only with the root.
fn add_dev(plan: &mut Plan<'_>) -> Result<(), LayerError> {
    for name in DEVICES {
        let node = Node::File {
            mode: 0o644,
            data: FileData::Bytes(Cow::Borrowed(b"")),
        };
        plan.insert(Path::new("dev").join(name), node)?;
    }
    for (name, target) in DEV_SYMLINKS {
        let node = Node::Symlink {
            target: PathBuf::from(target),
        };
        plan.insert(Path::new("dev").join(name), node)?;
    }
    Ok(())
}

/// Mirrors each of [`BOUND_DIRS`]: a host symlink becomes the same symlink,
/// a host directory an empty mount point plus a bind.
fn add_bound_dirs(plan: &mut Plan<'_>, host_root: &Path) -> Result<Vec<Bind>, LayerError> {
    let mut binds = Vec::new();
    for name in BOUND_DIRS {
        let source = host_root.join(name);
        let host_err = |source_err| LayerError::HostPath {
            path: source.clone(),
            source: source_err,
        };
        let meta = match fs::symlink_metadata(&source) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(host_err(e)),
        };
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&source).map_err(host_err)?;
            plan.insert(PathBuf::from(name), Node::Symlink { target })?;
        } else if meta.is_dir() {
            plan.insert(PathBuf::from(name), Node::Dir { mode: 0o755 })?;
            binds.push(Bind {
                source,
                target: PathBuf::from(name),
            });
        } else {
            tracing::warn!(path = %source.display(), "neither a directory nor a symlink, left out of the host layer");
        }
    }
    Ok(binds)
}

/// Copies the /etc subset and writes the fresh files.
fn add_etc(plan: &mut Plan<'_>, etc: &Path) -> Result<(), LayerError> {
    match SourceDir::open(etc) {
        Ok(dir) => copy_etc_subset(plan, &Arc::new(dir))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(path = %etc.display(), "host has no /etc, the host layer gets only generated files");
        }
        Err(source) => {
            return Err(LayerError::HostPath {
                path: etc.to_owned(),
                source,
            });
        }
    }
    for (name, contents) in ETC_FRESH {
        let node = Node::File {
            mode: 0o644,
            data: FileData::Bytes(Cow::Borrowed(contents)),
        };
        let path = Path::new("etc").join(name);
        plan.nodes.remove(&path);
        plan.insert(path, node)?;
    }
    Ok(())
}

fn copy_etc_subset(plan: &mut Plan<'_>, etc: &Arc<SourceDir>) -> Result<(), LayerError> {
    let names = etc.names().map_err(|source| LayerError::HostPath {
        path: etc.path().to_owned(),
        source,
    })?;
    let opts = ScanOptions {
        max_file_size: Some(ETC_MAX_FILE_SIZE),
        skip_special: true,
        exclude: ETC_EXCLUDED,
    };
    for name in names {
        let listed = ETC_ENTRIES.iter().any(|e| OsStr::new(e) == name);
        if !listed && !name.as_bytes().starts_with(b"python3") {
            continue;
        }
        let dest = Path::new("etc").join(&name);
        match scan_entry(etc, etc, &name, Path::new(&name), &dest, plan, opts) {
            Ok(()) => {}
            // Removed since we listed /etc.
            Err(LayerError::ReadSource { source, .. })
                if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    fn write(path: &Path, contents: &[u8]) {
        fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        fs::write(path, contents).expect("write");
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    /// A merged-/usr host: usr is a directory, bin and lib point into it,
    /// lib64 is missing.
    fn fake_host(root: &Path) {
        write(&root.join("usr/bin/python3"), b"\x7fELF");
        write(&root.join("usr/lib/libc.so.6"), b"\x7fELF");
        symlink("usr/bin", root.join("bin")).expect("symlink");
        symlink("usr/lib", root.join("lib")).expect("symlink");
        let etc = root.join("etc");
        write(&etc.join("passwd"), b"root:x:0:0:root:/root:/bin/sh\n");
        write(&etc.join("group"), b"root:x:0:\n");
        write(&etc.join("shadow"), b"root:secret:::\n");
        write(&etc.join("ld.so.cache"), b"ld.so-1.7.0");
        write(
            &etc.join("ld.so.conf.d/x86_64-linux-gnu.conf"),
            b"/usr/lib/x86_64-linux-gnu\n",
        );
        write(
            &etc.join("ssl/certs/ca.pem"),
            b"-----BEGIN CERTIFICATE-----\n",
        );
        symlink(
            "/usr/share/ca-certificates/x.crt",
            etc.join("ssl/certs/x.pem"),
        )
        .expect("symlink");
        write(
            &etc.join("ssl/private/host.key"),
            b"-----BEGIN PRIVATE KEY-----\n",
        );
        fs::set_permissions(etc.join("ssl/private"), Permissions::from_mode(0o700)).expect("chmod");
        write(&etc.join("python3.11/sitecustomize.py"), b"import sys\n");
        write(&etc.join("hosts"), b"10.0.0.1 internal\n");
        symlink("/usr/share/zoneinfo/Etc/UTC", etc.join("localtime")).expect("symlink");
        write(
            &etc.join("services"),
            &vec![b'#'; (ETC_MAX_FILE_SIZE + 1) as usize],
        );
        let _sock =
            std::os::unix::net::UnixListener::bind(etc.join("ssl/agent.sock")).expect("bind");
    }

    /// /dev of a layer: empty bind targets for the devices, the fd links.
    fn assert_dev(layer: &Path) {
        for name in DEVICES {
            let meta = fs::symlink_metadata(layer.join("dev").join(name)).expect(name);
            assert!(meta.is_file() && meta.len() == 0, "dev/{name}: {meta:?}");
        }
        for (name, target) in DEV_SYMLINKS {
            let link = fs::read_link(layer.join("dev").join(name)).expect(name);
            assert_eq!(link, Path::new(target));
        }
    }

    #[test]
    fn the_mountpoints_layer_has_the_mount_points_and_dev() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = LayerStore::open(state.path()).expect("open");
        let layer = store.mountpoints_layer().expect("mountpoints layer");
        for (dir, _) in MOUNTPOINT_DIRS {
            assert!(layer.path.join(dir).is_dir(), "{dir}");
        }
        assert_dev(&layer.path);
        assert_eq!(
            fs::read(layer.path.join("etc/hosts")).expect("hosts"),
            b"127.0.0.1\tlocalhost\n::1\tlocalhost\n"
        );
    }

    #[test]
    fn host_layer_from_a_fake_root() {
        let state = tempfile::tempdir().expect("tempdir");
        let host = tempfile::tempdir().expect("tempdir");
        fake_host(host.path());
        let store = LayerStore::open(state.path()).expect("open");
        let layer = store.host_layer(host.path()).expect("host layer");

        assert_eq!(
            layer.binds,
            vec![Bind {
                source: host.path().join("usr"),
                target: "usr".into()
            }]
        );
        let sk = &layer.skeleton.path;
        assert_dev(sk);
        assert!(sk.join("usr").is_dir());
        assert_eq!(fs::read_dir(sk.join("usr")).expect("read").count(), 0);
        assert_eq!(
            fs::read_link(sk.join("bin")).expect("readlink"),
            Path::new("usr/bin")
        );
        assert_eq!(
            fs::read_link(sk.join("lib")).expect("readlink"),
            Path::new("usr/lib")
        );
        assert!(fs::symlink_metadata(sk.join("lib64")).is_err());

        for (dir, want) in SKELETON_DIRS {
            assert_eq!(mode(&sk.join(dir)), *want, "{dir}");
        }
        assert_eq!(mode(&sk.join("tmp")), 0o1777);
        assert_eq!(mode(&sk.join("root")), 0o700);

        let etc = sk.join("etc");
        assert_eq!(
            fs::read(etc.join("passwd")).expect("read"),
            b"root:x:0:0:root:/root:/bin/sh\n"
        );
        assert!(etc.join("group").is_file());
        assert!(etc.join("ld.so.cache").is_file());
        assert!(etc.join("ld.so.conf.d/x86_64-linux-gnu.conf").is_file());
        assert!(etc.join("ssl/certs/ca.pem").is_file());
        assert_eq!(
            fs::read_link(etc.join("ssl/certs/x.pem")).expect("readlink"),
            Path::new("/usr/share/ca-certificates/x.crt")
        );
        assert_eq!(
            fs::read_link(etc.join("localtime")).expect("readlink"),
            Path::new("/usr/share/zoneinfo/Etc/UTC")
        );
        assert!(etc.join("python3.11/sitecustomize.py").is_file());
        assert!(
            !etc.join("shadow").exists(),
            "only the listed subset is copied"
        );
        assert!(
            !etc.join("ssl/private").exists(),
            "host private keys stay out"
        );
        assert!(!etc.join("ssl/agent.sock").exists(), "sockets are skipped");
        assert!(
            !etc.join("services").exists(),
            "files over 4 MiB are skipped"
        );
        assert_eq!(
            fs::read(etc.join("hosts")).expect("read"),
            b"127.0.0.1\tlocalhost\n::1\tlocalhost\n"
        );
        assert_eq!(fs::read(etc.join("hostname")).expect("read"), b"fnhost\n");
        assert_eq!(fs::read(etc.join("resolv.conf")).expect("read"), b"");
    }

    #[test]
    fn host_layer_follows_changes_to_host_etc() {
        let state = tempfile::tempdir().expect("tempdir");
        let host = tempfile::tempdir().expect("tempdir");
        fake_host(host.path());
        let store = LayerStore::open(state.path()).expect("open");
        let first = store.host_layer(host.path()).expect("host layer");
        let again = store.host_layer(host.path()).expect("host layer");
        assert_eq!(first.skeleton, again.skeleton);

        write(
            &host.path().join("etc/passwd"),
            b"root:x:0:0::/root:/bin/bash\n",
        );
        let changed = store.host_layer(host.path()).expect("host layer");
        assert_ne!(changed.skeleton.digest, first.skeleton.digest);

        fs::remove_dir_all(host.path().join("etc")).expect("rm etc");
        let bare = store
            .host_layer(host.path())
            .expect("host layer without etc");
        assert!(bare.skeleton.path.join("etc/hosts").is_file());
        assert!(!bare.skeleton.path.join("etc/passwd").exists());
    }

    #[test]
    fn host_layer_from_the_real_root() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = LayerStore::open(state.path()).expect("open");
        let layer = store.host_layer(Path::new("/")).expect("host layer of /");
        assert!(
            layer
                .binds
                .iter()
                .any(|b| b.target == Path::new("usr") && b.source == Path::new("/usr")),
            "{:?}",
            layer.binds
        );
        assert!(layer.skeleton.path.join("etc/ld.so.cache").is_file());
        assert!(!layer.skeleton.path.join("etc/shadow").exists());
    }
}
