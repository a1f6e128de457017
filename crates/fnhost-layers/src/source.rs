//! Reading a source tree without ever following a symlink inside it.
//!
//! A source directory (a function's code, the host's /etc) may be modified
//! while we read it as root, so paths are never resolved from the top again:
//! each directory is held open and its entries are reached through
//! `/proc/self/fd/<fd>/<name>` with `O_NOFOLLOW`. Swapping a directory for a
//! symlink mid-import therefore cannot make us read a file outside the tree.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::LayerError;
use crate::plan::{FileData, Node, Plan, DIR_MODE_MASK, FILE_MODE_MASK};

/// An open directory of a source tree.
#[derive(Debug)]
pub(crate) struct SourceDir {
    file: File,
    /// Where it was when opened, for messages only.
    path: PathBuf,
}

impl SourceDir {
    /// Opens the top of a source tree. `path` itself may be a symlink (the
    /// caller chose it); nothing below it is followed.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    pub(crate) fn metadata(&self) -> io::Result<Metadata> {
        self.file.metadata()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A path that reaches entry `name` of this very directory, whatever
    /// happened to the path it was opened by.
    fn at(&self, name: &OsStr) -> PathBuf {
        Path::new("/proc/self/fd")
            .join(self.file.as_raw_fd().to_string())
            .join(name)
    }

    pub(crate) fn lstat(&self, name: &OsStr) -> io::Result<Metadata> {
        fs::symlink_metadata(self.at(name))
    }

    pub(crate) fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
        fs::read_link(self.at(name))
    }

    /// Opens subdirectory `name`, failing if it is a symlink.
    pub(crate) fn open_dir(&self, name: &OsStr) -> io::Result<SourceDir> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(self.at(name))?;
        Ok(Self {
            file,
            path: self.path.join(name),
        })
    }

    /// Opens regular file `name` for reading, failing if it is anything else
    /// (`O_NONBLOCK` keeps a fifo swapped in from blocking the open).
    pub(crate) fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.at(name))?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(file)
    }

    /// Entry names, sorted.
    pub(crate) fn names(&self) -> io::Result<Vec<OsString>> {
        let dir = Path::new("/proc/self/fd").join(self.file.as_raw_fd().to_string());
        let mut names = fs::read_dir(dir)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    /// Opens the directory at `rel` below this one, one component at a time.
    pub(crate) fn open_beneath(&self, rel: &Path) -> io::Result<SourceDir> {
        let mut components = rel.components();
        let Some(first) = components.next() else {
            return SourceDir::open(&self.at(OsStr::new("."))).map(|dir| Self {
                path: self.path.clone(),
                ..dir
            });
        };
        let mut dir = self.open_dir(first.as_os_str())?;
        for component in components {
            dir = dir.open_dir(component.as_os_str())?;
        }
        Ok(dir)
    }
}

/// How to treat what a layer cannot hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanOptions {
    /// Skip (with a warning) regular files larger than this.
    pub(crate) max_file_size: Option<u64>,
    /// Skip (with a warning) devices, fifos and sockets instead of failing.
    pub(crate) skip_special: bool,
    /// Paths (relative to the scanned root) left out with all they hold.
    pub(crate) exclude: &'static [&'static str],
}

/// Adds every entry of `dir` (found at `rel` below `root`) to `plan` below
/// `dest`, recursively.
pub(crate) fn scan_children(
    root: &Arc<SourceDir>,
    dir: &SourceDir,
    rel: &Path,
    dest: &Path,
    plan: &mut Plan<'_>,
    opts: ScanOptions,
) -> Result<(), LayerError> {
    let names = dir.names().map_err(|source| LayerError::ReadSource {
        path: dir.path().to_owned(),
        source,
    })?;
    for name in names {
        scan_entry(
            root,
            dir,
            &name,
            &rel.join(&name),
            &dest.join(&name),
            plan,
            opts,
        )?;
    }
    Ok(())
}

/// Adds entry `name` of `dir` (found at `rel` below `root`) to `plan` at
/// `dest`, recursing into directories. Symlinks are recorded, never followed.
pub(crate) fn scan_entry(
    root: &Arc<SourceDir>,
    dir: &SourceDir,
    name: &OsStr,
    rel: &Path,
    dest: &Path,
    plan: &mut Plan<'_>,
    opts: ScanOptions,
) -> Result<(), LayerError> {
    if opts.exclude.iter().any(|e| Path::new(e) == rel) {
        return Ok(());
    }
    let path = dir.path().join(name);
    let read_err = |source| LayerError::ReadSource {
        path: path.clone(),
        source,
    };
    let meta = dir.lstat(name).map_err(read_err)?;
    let file_type = meta.file_type();
    if file_type.is_dir() {
        let mode = meta.permissions().mode() & DIR_MODE_MASK;
        plan.insert(dest.to_owned(), Node::Dir { mode })?;
        let sub = dir.open_dir(name).map_err(read_err)?;
        scan_children(root, &sub, rel, dest, plan, opts)
    } else if file_type.is_symlink() {
        let target = dir.read_link(name).map_err(read_err)?;
        plan.insert(dest.to_owned(), Node::Symlink { target })
    } else if file_type.is_file() {
        if let Some(max) = opts.max_file_size {
            if meta.len() > max {
                tracing::warn!(path = %path.display(), size = meta.len(), max, "file too large for the layer, skipped");
                return Ok(());
            }
        }
        let file = dir.open_file(name).map_err(read_err)?;
        let (len, sha256) = hash_reader(file).map_err(read_err)?;
        let mode = meta.permissions().mode() & FILE_MODE_MASK;
        let data = FileData::Source {
            root: Arc::clone(root),
            rel: rel.to_owned(),
            len,
            sha256,
        };
        plan.insert(dest.to_owned(), Node::File { mode, data })
    } else {
        let kind = special_kind(&meta);
        if opts.skip_special {
            tracing::warn!(path = %path.display(), kind, "cannot be in a layer, skipped");
            return Ok(());
        }
        Err(LayerError::UnsupportedFileType { path, kind })
    }
}

fn special_kind(meta: &Metadata) -> &'static str {
    let file_type = meta.file_type();
    if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Length and SHA-256 of everything `reader` yields.
pub(crate) fn hash_reader(mut reader: impl Read) -> io::Result<(u64, [u8; 32])> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    let mut len = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize().into()))
}
