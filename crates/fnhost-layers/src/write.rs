//! Writing a [`Plan`] into a fresh directory: files, symlinks and
//! directories with their modes, owned by root when we are root, and synced
//! to disk before the directory is renamed into the store.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::LayerError;
use crate::plan::{FileData, Node, Plan};
use crate::source::SourceDir;

/// When what a build wrote reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Every file and directory is synced as it is finished: one layer
    /// built on its own.
    EachFile,
    /// Nothing is synced here: the caller syncs the whole filesystem once
    /// for many builds (see `ImportBatch`), instead of several `fsync`s,
    /// each a journal commit, per layer.
    Deferred,
}

/// Writes every entry of `plan` below `dest`, an empty directory we created.
pub(crate) fn write_plan(
    plan: &Plan<'_>,
    dest: &Path,
    durability: Durability,
) -> Result<(), LayerError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| LayerError::Write { path, source }
    };
    // Files we create are ours; only when that is root do we pin root:root
    // (the group could otherwise come from our egid or a setgid parent).
    let as_root = fs::metadata(dest).map_err(write_err(dest))?.uid() == 0;
    let mut sources = SourceCache::default();
    let mut dirs = Vec::new();
    for (rel, node) in &plan.nodes {
        let path = dest.join(rel);
        match node {
            Node::Dir { mode } => {
                DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(write_err(&path))?;
                dirs.push((path, *mode));
            }
            Node::File { mode, data } => {
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(write_err(&path))?;
                match data {
                    FileData::Bytes(bytes) => out.write_all(bytes).map_err(write_err(&path))?,
                    FileData::Source {
                        root,
                        rel,
                        len,
                        sha256,
                    } => {
                        let src_path = root.path().join(rel);
                        let read_err = |source| LayerError::ReadSource {
                            path: src_path.clone(),
                            source,
                        };
                        let src = sources.open_file(root, rel).map_err(read_err)?;
                        let modified = src
                            .metadata()
                            .and_then(|m| m.modified())
                            .map_err(read_err)?;
                        let (copied, digest) = copy_hashing(src, &mut out, &src_path, &path)?;
                        if copied != *len || digest != *sha256 {
                            return Err(LayerError::SourceChanged { path: src_path });
                        }
                        // Keeps .pyc files valid against their sources; not
                        // part of the digest.
                        out.set_modified(modified).map_err(write_err(&path))?;
                    }
                }
                if as_root {
                    std::os::unix::fs::fchown(&out, Some(0), Some(0)).map_err(write_err(&path))?;
                }
                out.set_permissions(Permissions::from_mode(*mode))
                    .map_err(write_err(&path))?;
                if durability == Durability::EachFile {
                    out.sync_all().map_err(write_err(&path))?;
                }
            }
            Node::Symlink { target } => {
                std::os::unix::fs::symlink(target, &path).map_err(write_err(&path))?;
                if as_root {
                    std::os::unix::fs::lchown(&path, Some(0), Some(0)).map_err(write_err(&path))?;
                }
            }
        }
    }
    // Deepest first, so a read-only directory is finished only after
    // everything inside it is written.
    for (path, mode) in dirs.iter().rev() {
        finish_dir(path, *mode, as_root, durability)?;
    }
    finish_dir(dest, plan.root_mode, as_root, durability)
}

fn finish_dir(
    path: &Path,
    mode: u32,
    as_root: bool,
    durability: Durability,
) -> Result<(), LayerError> {
    let write_err = |source| LayerError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = File::open(path).map_err(write_err)?;
    if as_root {
        std::os::unix::fs::fchown(&dir, Some(0), Some(0)).map_err(write_err)?;
    }
    dir.set_permissions(Permissions::from_mode(mode))
        .map_err(write_err)?;
    if durability == Durability::EachFile {
        dir.sync_all().map_err(write_err)?;
    }
    Ok(())
}

/// Syncs the whole filesystem holding `path` (`syncfs(2)`): the one
/// barrier of a deferred batch.
pub(crate) fn sync_filesystem(path: &Path) -> Result<(), LayerError> {
    let write_err = |source| LayerError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = File::open(path).map_err(write_err)?;
    rustix::fs::syncfs(&dir).map_err(|e| write_err(e.into()))
}

/// Copies `src` into `out`, returning the length and SHA-256 of what was
/// actually copied.
fn copy_hashing(
    mut src: File,
    out: &mut File,
    src_path: &Path,
    out_path: &Path,
) -> Result<(u64, [u8; 32]), LayerError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    let mut len = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(LayerError::ReadSource {
                    path: src_path.to_owned(),
                    source,
                });
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|source| LayerError::Write {
                path: out_path.to_owned(),
                source,
            })?;
        len += n as u64;
    }
    Ok((len, hasher.finalize().into()))
}

/// Keeps the last opened source directory, since files of one directory
/// are mostly written one after another.
#[derive(Default)]
struct SourceCache {
    last: Option<(Arc<SourceDir>, PathBuf, SourceDir)>,
}

impl SourceCache {
    fn open_file(&mut self, root: &Arc<SourceDir>, rel: &Path) -> io::Result<File> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().unwrap_or(OsStr::new(""));
        let hit = matches!(&self.last, Some((r, p, _)) if Arc::ptr_eq(r, root) && p == parent);
        if !hit {
            let dir = root.open_beneath(parent)?;
            self.last = Some((Arc::clone(root), parent.to_owned(), dir));
        }
        let (_, _, dir) = self.last.as_ref().expect("just filled");
        dir.open_file(name)
    }
}

/// Removes a tree we built, even one holding read-only directories.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    make_writable(path)?;
    fs::remove_dir_all(path)
}

fn make_writable(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(());
    }
    fs::set_permissions(path, Permissions::from_mode(0o700))?;
    for entry in fs::read_dir(path)? {
        make_writable(&entry?.path())?;
    }
    Ok(())
}
