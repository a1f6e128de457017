//! Extracting one layer tarball into a build directory of the store, as a
//! hostile archive would not like: every path is checked component by
//! component against what this layer already holds, every directory on the
//! way is opened with `O_NOFOLLOW` relative to its parent, and nothing is
//! ever created through a symlink. OCI whiteouts become overlayfs ones.
//!
//! What a layer may hold: directories, regular files, symlinks (with any
//! target: they are resolved inside the sandbox root, never on the host),
//! hardlinks to earlier regular files of the same layer, and the whiteouts
//! and opaque directories this module writes itself. Devices and fifos are
//! refused, except below `dev/`, where they are skipped (the sandbox mounts
//! its own `/dev` over it). Setuid, setgid and owners are dropped: every
//! entry is owned by the store's owner (root).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, XattrFlags};
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::error::ImageError;
use super::whiteout::{classify, WhiteoutName};
use super::ImportLimits;
use crate::plan::{layer_digest, DigestEntry, DIR_MODE_MASK, FILE_MODE_MASK};

/// Longest entry path we accept, bytes (the kernel's PATH_MAX).
const MAX_PATH: usize = 4096;

/// What one entry of the extracted layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir {
        mode: u32,
        opaque: bool,
    },
    File {
        mode: u32,
        len: u64,
        sha256: [u8; 32],
    },
    Symlink {
        target: PathBuf,
    },
    Whiteout,
}

/// Counters shared by every layer of one image import.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

/// A layer being extracted into `root`, an empty directory we created.
pub(crate) struct Extraction<'a> {
    /// Names the layer in errors (its blob digest or archive member).
    layer: String,
    root: OwnedFd,
    root_mode: u32,
    entries: BTreeMap<PathBuf, Kind>,
    limits: &'a ImportLimits,
    budget: &'a mut Budget,
    as_root: bool,
    /// Last parent directory opened, for runs of entries in one directory.
    cached: Option<(PathBuf, OwnedFd)>,
}

impl<'a> Extraction<'a> {
    pub(crate) fn new(
        layer: String,
        root: &Path,
        limits: &'a ImportLimits,
        budget: &'a mut Budget,
    ) -> Result<Self, ImageError> {
        let write_err = |source| ImageError::WriteEntry {
            layer: layer.clone(),
            entry: ".".into(),
            source,
        };
        let root = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| write_err(e.into()))?;
        // As write_plan: pin root:root only when the build dir is root's.
        let as_root = rustix::fs::fstat(&root)
            .map_err(|e| write_err(e.into()))?
            .st_uid
            == 0;
        Ok(Self {
            layer,
            root,
            root_mode: 0o755,
            entries: BTreeMap::new(),
            limits,
            budget,
            as_root,
            cached: None,
        })
    }

    /// Extracts every entry of the tar stream `reader`, returning the reader
    /// (so the caller can drain and verify it).
    pub(crate) fn extract<R: Read>(&mut self, reader: R) -> Result<R, ImageError> {
        let mut archive = tar::Archive::new(reader);
        let read_err = |layer: &str| {
            let layer = layer.to_owned();
            move |source| ImageError::ReadLayer { layer, source }
        };
        for entry in archive.entries().map_err(read_err(&self.layer))? {
            let mut entry = entry.map_err(read_err(&self.layer))?;
            self.budget.entries += 1;
            if self.budget.entries > self.limits.max_entries {
                return Err(ImageError::TooManyEntries {
                    layer: self.layer.clone(),
                    limit: self.limits.max_entries,
                });
            }
            self.entry(&mut entry)?;
        }
        Ok(archive.into_inner())
    }

    fn reject(&self, entry: &Path, reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry {
            layer: self.layer.clone(),
            entry: entry.display().to_string(),
            reason: reason.into(),
        }
    }

    fn write_err(&self, entry: &Path) -> impl Fn(io::Error) -> ImageError {
        let layer = self.layer.clone();
        let entry = entry.display().to_string();
        move |source| ImageError::WriteEntry {
            layer: layer.clone(),
            entry: entry.clone(),
            source,
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry.path_bytes().into_owned();
        let shown = PathBuf::from(OsStr::from_bytes(&raw));
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName
        ) {
            return Ok(());
        }
        let path = self.checked_path(&shown, &raw)?;
        let mode = entry
            .header()
            .mode()
            .map_err(|e| self.reject(&shown, format!("unreadable mode in its header ({e})")))?;

        if path.as_os_str().is_empty() {
            if kind != EntryType::Directory {
                return Err(self.reject(&shown, "the layer root must be a directory"));
            }
            self.root_mode = mode & DIR_MODE_MASK;
            return Ok(());
        }
        let name = path
            .file_name()
            .expect("normalized path has a last component");
        match classify(name) {
            WhiteoutName::Opaque => {
                let dir = path.parent().unwrap_or(Path::new("")).to_owned();
                return self.mark_opaque(&dir, &shown);
            }
            WhiteoutName::Meta => {
                tracing::debug!(layer = %self.layer, entry = %shown.display(), "skipping aufs metadata");
                return Ok(());
            }
            WhiteoutName::Invalid => {
                return Err(self.reject(&shown, "a whiteout must name the entry it removes"));
            }
            WhiteoutName::Whiteout(hidden) => {
                let target = path.with_file_name(hidden);
                return self.whiteout(&target, &shown);
            }
            WhiteoutName::Plain => {}
        }

        match kind {
            EntryType::Directory => self.dir(&path, &shown, mode & DIR_MODE_MASK),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let size = entry.size();
                self.charge(&shown, size)?;
                let mtime = entry.header().mtime().unwrap_or(0);
                self.file(&path, &shown, mode & FILE_MODE_MASK, mtime, entry)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| self.reject(&shown, "symlink with an empty target"))?;
                let target = PathBuf::from(OsStr::from_bytes(&target));
                self.symlink(&path, &shown, target)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.reject(&shown, "hardlink without a target"))?
                    .into_owned();
                self.hardlink(&path, &shown, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let what = match kind {
                    EntryType::Char => "character device",
                    EntryType::Block => "block device",
                    _ => "fifo",
                };
                if path.starts_with("dev") {
                    tracing::warn!(layer = %self.layer, entry = %shown.display(), "skipping {what} below dev/ (the sandbox mounts its own /dev)");
                    return Ok(());
                }
                Err(self.reject(
                    &shown,
                    format!("a {what}; layers may not hold device nodes or fifos"),
                ))
            }
            other => Err(self.reject(&shown, format!("unsupported tar entry type {other:?}"))),
        }
    }

    /// The entry's path as plain components relative to the layer root.
    fn checked_path(&self, shown: &Path, raw: &[u8]) -> Result<PathBuf, ImageError> {
        if raw.len() > MAX_PATH {
            return Err(self.reject(shown, format!("path longer than {MAX_PATH} bytes")));
        }
        normalize_entry(shown).map_err(|reason| self.reject(shown, reason))
    }

    fn charge(&mut self, shown: &Path, size: u64) -> Result<(), ImageError> {
        self.budget.bytes = self.budget.bytes.saturating_add(size);
        if self.budget.bytes > self.limits.max_bytes {
            return Err(ImageError::TooLarge {
                layer: format!("{} entry {}", self.layer, shown.display()),
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    /// Makes sure every ancestor of `path` is a directory of this layer
    /// (creating missing ones 0755), refusing to go through anything else.
    fn parents(&mut self, path: &Path, shown: &Path) -> Result<(), ImageError> {
        let mut parent = PathBuf::new();
        let components: Vec<_> = path.components().collect();
        for component in &components[..components.len() - 1] {
            parent.push(component);
            match self.entries.get(&parent) {
                Some(Kind::Dir { .. }) => {}
                Some(Kind::Symlink { target }) => {
                    return Err(self.reject(
                        shown,
                        format!(
                            "it would be written through symlink {} -> {}",
                            parent.display(),
                            target.display()
                        ),
                    ));
                }
                Some(_) => {
                    return Err(self.reject(
                        shown,
                        format!("its parent {} is not a directory", parent.display()),
                    ));
                }
                None => {
                    let dir = self.open_parent(&parent, shown)?;
                    let name = parent.file_name().expect("non-empty");
                    rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| self.write_err(shown)(e.into()))?;
                    self.entries.insert(
                        parent.clone(),
                        Kind::Dir {
                            mode: 0o755,
                            opaque: false,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Opens the directory holding `path`, one component at a time from the
    /// layer root, never following a symlink.
    fn open_parent(&mut self, path: &Path, shown: &Path) -> Result<OwnedFd, ImageError> {
        let parent = path.parent().unwrap_or(Path::new(""));
        self.open_dir(parent, shown)
    }

    fn open_dir(&mut self, dir: &Path, shown: &Path) -> Result<OwnedFd, ImageError> {
        if let Some((cached, fd)) = &self.cached {
            if cached == dir {
                return fd.try_clone().map_err(self.write_err(shown));
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut fd = self.root.try_clone().map_err(self.write_err(shown))?;
        for component in dir.components() {
            fd = rustix::fs::openat(&fd, component.as_os_str(), flags, Mode::empty())
                .map_err(|e| self.write_err(shown)(e.into()))?;
        }
        let clone = fd.try_clone().map_err(self.write_err(shown))?;
        self.cached = Some((dir.to_owned(), clone));
        Ok(fd)
    }

    /// Removes whatever this layer holds at `path` (a whole subtree for a
    /// directory), so a later entry can take its place.
    fn remove(&mut self, path: &Path, shown: &Path) -> Result<(), ImageError> {
        if !self.entries.contains_key(path) {
            return Ok(());
        }
        self.cached = None;
        let doomed: Vec<(PathBuf, bool)> = self
            .entries
            .range(path.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, k)| (p.clone(), matches!(k, Kind::Dir { .. })))
            .collect();
        for (victim, is_dir) in doomed.iter().rev() {
            let dir = self.open_parent(victim, shown)?;
            let flags = if *is_dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            let name = victim.file_name().expect("non-empty");
            rustix::fs::unlinkat(&dir, name, flags).map_err(|e| self.write_err(shown)(e.into()))?;
            self.entries.remove(victim);
        }
        self.cached = None;
        Ok(())
    }

    fn dir(&mut self, path: &Path, shown: &Path, mode: u32) -> Result<(), ImageError> {
        self.parents(path, shown)?;
        if let Some(Kind::Dir { opaque, .. }) = self.entries.get(path) {
            let opaque = *opaque;
            self.entries
                .insert(path.to_owned(), Kind::Dir { mode, opaque });
            return Ok(());
        }
        self.remove(path, shown)?;
        let parent = self.open_parent(path, shown)?;
        let name = path.file_name().expect("non-empty");
        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
            .map_err(|e| self.write_err(shown)(e.into()))?;
        self.entries.insert(
            path.to_owned(),
            Kind::Dir {
                mode,
                opaque: false,
            },
        );
        Ok(())
    }

    fn file(
        &mut self,
        path: &Path,
        shown: &Path,
        mode: u32,
        mtime: u64,
        data: &mut impl Read,
    ) -> Result<(), ImageError> {
        self.parents(path, shown)?;
        self.remove(path, shown)?;
        let parent = self.open_parent(path, shown)?;
        let name = path.file_name().expect("non-empty");
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&parent, name, flags, Mode::from_raw_mode(0o600))
            .map_err(|e| self.write_err(shown)(e.into()))?;
        let mut out = File::from(fd);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 128 * 1024];
        let mut len = 0u64;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ImageError::ReadLayer {
                        layer: format!("{} entry {}", self.layer, shown.display()),
                        source,
                    })
                }
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(self.write_err(shown))?;
            len += n as u64;
        }
        if self.as_root {
            rustix::fs::fchown(
                &out,
                Some(rustix::fs::Uid::ROOT),
                Some(rustix::fs::Gid::ROOT),
            )
            .map_err(|e| self.write_err(shown)(e.into()))?;
        }
        rustix::fs::fchmod(&out, Mode::from_raw_mode(mode))
            .map_err(|e| self.write_err(shown)(e.into()))?;
        // Keeps .pyc files valid against their sources; not in the digest.
        out.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime))
            .map_err(self.write_err(shown))?;
        self.entries.insert(
            path.to_owned(),
            Kind::File {
                mode,
                len,
                sha256: hasher.finalize().into(),
            },
        );
        Ok(())
    }

    fn symlink(&mut self, path: &Path, shown: &Path, target: PathBuf) -> Result<(), ImageError> {
        self.parents(path, shown)?;
        self.remove(path, shown)?;
        let parent = self.open_parent(path, shown)?;
        let name = path.file_name().expect("non-empty");
        rustix::fs::symlinkat(target.as_os_str(), &parent, name)
            .map_err(|e| self.write_err(shown)(e.into()))?;
        self.entries
            .insert(path.to_owned(), Kind::Symlink { target });
        Ok(())
    }

    fn hardlink(&mut self, path: &Path, shown: &Path, raw_target: &[u8]) -> Result<(), ImageError> {
        let target =
            normalize_entry(Path::new(OsStr::from_bytes(raw_target))).map_err(|reason| {
                self.reject(
                    shown,
                    format!(
                        "hardlink target {:?}: {reason}",
                        String::from_utf8_lossy(raw_target)
                    ),
                )
            })?;
        let Some(Kind::File { mode, len, sha256 }) = self.entries.get(&target).cloned() else {
            return Err(self.reject(
                shown,
                format!(
                    "hardlink to {}, which is not an earlier regular file of this layer",
                    target.display()
                ),
            ));
        };
        if target == path {
            return Ok(());
        }
        self.parents(path, shown)?;
        self.remove(path, shown)?;
        let from_dir = self.open_parent(&target, shown)?;
        let to_dir = self.open_parent(path, shown)?;
        let from_name = target.file_name().expect("non-empty");
        let to_name = path.file_name().expect("non-empty");
        rustix::fs::linkat(&from_dir, from_name, &to_dir, to_name, AtFlags::empty())
            .map_err(|e| self.write_err(shown)(e.into()))?;
        self.entries
            .insert(path.to_owned(), Kind::File { mode, len, sha256 });
        Ok(())
    }

    /// `.wh.<name>`: an overlayfs whiteout (character device 0/0) at `target`.
    fn whiteout(&mut self, target: &Path, shown: &Path) -> Result<(), ImageError> {
        self.parents(target, shown)?;
        self.remove(target, shown)?;
        let parent = self.open_parent(target, shown)?;
        let name = target.file_name().expect("non-empty");
        rustix::fs::mknodat(
            &parent,
            name,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| ImageError::Whiteout {
            layer: self.layer.clone(),
            entry: shown.display().to_string(),
            what: "whiteout",
            source: e.into(),
        })?;
        self.entries.insert(target.to_owned(), Kind::Whiteout);
        Ok(())
    }

    /// `.wh..wh..opq`: directory `dir` hides everything below it in lower
    /// layers (set when the layer is finished).
    fn mark_opaque(&mut self, dir: &Path, shown: &Path) -> Result<(), ImageError> {
        if dir.as_os_str().is_empty() {
            return Err(self.reject(shown, "the layer root cannot be opaque"));
        }
        if !matches!(self.entries.get(dir), Some(Kind::Dir { .. })) {
            self.dir(dir, shown, 0o755)?;
        }
        if let Some(Kind::Dir { opaque, .. }) = self.entries.get_mut(dir) {
            *opaque = true;
        }
        Ok(())
    }

    /// Sets directory owners, modes and opaque marks (deepest first, so a
    /// read-only directory is finished after its contents), syncs the
    /// filesystem, and returns the layer's digest.
    pub(crate) fn finish(mut self) -> Result<(String, usize), ImageError> {
        self.cached = None;
        let dirs: Vec<(PathBuf, u32, bool)> = self
            .entries
            .iter()
            .filter_map(|(p, k)| match k {
                Kind::Dir { mode, opaque } => Some((p.clone(), *mode, *opaque)),
                _ => None,
            })
            .collect();
        for (dir, mode, opaque) in dirs.iter().rev() {
            let fd = self.open_dir(dir, dir)?;
            self.finish_dir(&fd, dir, *mode, *opaque)?;
        }
        let root = self
            .root
            .try_clone()
            .map_err(self.write_err(Path::new(".")))?;
        self.finish_dir(&root, Path::new("."), self.root_mode, false)?;
        rustix::fs::syncfs(&self.root).map_err(|e| self.write_err(Path::new("."))(e.into()))?;
        let digest = layer_digest(
            self.root_mode,
            self.entries.iter().map(|(path, kind)| {
                let entry = match kind {
                    Kind::Dir { mode, opaque } => DigestEntry::Dir {
                        mode: *mode,
                        opaque: *opaque,
                    },
                    Kind::File { mode, len, sha256 } => DigestEntry::File {
                        mode: *mode,
                        len: *len,
                        sha256: *sha256,
                    },
                    Kind::Symlink { target } => DigestEntry::Symlink { target },
                    Kind::Whiteout => DigestEntry::Whiteout,
                };
                (path.as_path(), entry)
            }),
        );
        Ok((digest, self.entries.len()))
    }

    fn finish_dir(
        &self,
        fd: &OwnedFd,
        dir: &Path,
        mode: u32,
        opaque: bool,
    ) -> Result<(), ImageError> {
        if self.as_root {
            rustix::fs::fchown(fd, Some(rustix::fs::Uid::ROOT), Some(rustix::fs::Gid::ROOT))
                .map_err(|e| self.write_err(dir)(e.into()))?;
        }
        // Both namespaces: overlayfs reads trusted.* when mounted by host
        // root and user.* (mount option userxattr) inside a user namespace.
        for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
            if !opaque {
                break;
            }
            rustix::fs::fsetxattr(fd, name, b"y", XattrFlags::empty()).map_err(|e| {
                ImageError::Whiteout {
                    layer: self.layer.clone(),
                    entry: dir.display().to_string(),
                    what: "opaque directory",
                    source: e.into(),
                }
            })?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(|e| self.write_err(dir)(e.into()))
    }
}

/// `path` as plain components (a leading `./` and inner `.` dropped), or why
/// it cannot be a layer entry.
pub(crate) fn normalize_entry(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path; layer entries must be relative to the layer root");
            }
            Component::ParentDir => {
                return Err("path contains '..'; layer entries may not leave the layer");
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_accepts_plain_and_dot_prefixed_paths() {
        assert_eq!(
            normalize_entry(Path::new("./a/b/")),
            Ok(PathBuf::from("a/b"))
        );
        assert_eq!(normalize_entry(Path::new("./")), Ok(PathBuf::new()));
        assert!(normalize_entry(Path::new("/etc/x")).is_err());
        assert!(normalize_entry(Path::new("a/../../x")).is_err());
        assert!(normalize_entry(Path::new("../x")).is_err());
    }
}
