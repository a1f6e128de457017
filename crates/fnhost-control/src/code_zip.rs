//! Safe extraction of a deployment zip into a fresh directory: size limits
//! (zipped, unzipped, per-entry expansion ratio), an entry count, and no
//! entry that could land outside the directory (`..`, absolute paths,
//! symlinks pointing out) or is a device, FIFO or socket.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Bounds of one deployment zip (`server.max_code_zip_bytes`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipLimits {
    pub max_zipped_bytes: u64,
    pub max_unzipped_bytes: u64,
    pub max_entries: usize,
    /// Most bytes one entry may expand to per compressed byte (entries
    /// under 1 MiB are exempt): beyond it the zip is treated as a bomb.
    pub max_ratio: u64,
}

impl Default for ZipLimits {
    /// Lambda's limits: 50 MiB zipped, 250 MiB unzipped.
    fn default() -> Self {
        ZipLimits {
            max_zipped_bytes: 50 << 20,
            max_unzipped_bytes: 250 << 20,
            max_entries: 20_000,
            max_ratio: 200,
        }
    }
}

/// Why a zip was refused.
#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    #[error("the code is not a valid zip file: {0}")]
    NotAZip(#[source] zip::result::ZipError),
    #[error("the zip is {size} bytes, over the {limit}-byte limit (server.max_code_zip_bytes)")]
    TooLargeZipped { size: u64, limit: u64 },
    #[error("the zip unpacks to more than {limit} bytes (server.max_code_unzipped_bytes)")]
    TooLargeUnzipped { limit: u64 },
    #[error("the zip has {count} entries, over the limit of {limit}")]
    TooManyEntries { count: usize, limit: usize },
    #[error(
        "zip entry {name:?} expands more than {ratio}x its compressed size: refused as a zip bomb"
    )]
    Bomb { name: String, ratio: u64 },
    #[error("zip entry {name:?} {reason}")]
    UnsafeEntry { name: String, reason: &'static str },
    #[error("zip entry {name:?} appears twice")]
    Duplicate { name: String },
    #[error("cannot read zip entry {name:?}: {source}")]
    Entry {
        name: String,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What was extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extracted {
    pub files: usize,
    pub bytes: u64,
}

const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// The entry's path relative to the root, or why it is refused.
fn relative_path(name: &str) -> Result<PathBuf, &'static str> {
    if name.contains('\0') || name.contains('\\') {
        return Err("has a NUL or backslash in its name");
    }
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err("has a `..` component: it would land outside the code directory")
            }
            Component::RootDir | Component::Prefix(_) => return Err("has an absolute path"),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("has an empty name");
    }
    Ok(out)
}

/// Whether a symlink at `link` (relative to the root) pointing to `target`
/// stays inside the root, judged lexically.
fn link_stays_inside(link: &Path, target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for c in Path::new(target).components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> ZipError + '_ {
    move |source| ZipError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Extracts `data` into `dest` (which must not exist yet; created 0755).
/// On error `dest` may hold part of the zip: the caller removes it.
pub fn extract(data: &[u8], dest: &Path, limits: &ZipLimits) -> Result<Extracted, ZipError> {
    let size = data.len() as u64;
    if size > limits.max_zipped_bytes {
        return Err(ZipError::TooLargeZipped {
            size,
            limit: limits.max_zipped_bytes,
        });
    }
    let mut archive = zip::ZipArchive::new(io::Cursor::new(data)).map_err(ZipError::NotAZip)?;
    if archive.len() > limits.max_entries {
        return Err(ZipError::TooManyEntries {
            count: archive.len(),
            limit: limits.max_entries,
        });
    }
    fs::create_dir(dest).map_err(write_err(dest))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755)).map_err(write_err(dest))?;
    let mut total = 0u64;
    let mut files = 0usize;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|source| ZipError::Entry {
            name: format!("#{i}"),
            source,
        })?;
        let name = entry.name().to_string();
        let unsafe_entry = |reason| ZipError::UnsafeEntry {
            name: name.clone(),
            reason,
        };
        let rel = relative_path(&name).map_err(unsafe_entry)?;
        let mode = entry.unix_mode().unwrap_or(0);
        let kind = mode & S_IFMT;
        let target = dest.join(&rel);
        if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dirs(dest, parent)?;
        }
        if entry.is_dir() || kind == S_IFDIR {
            create_dirs(dest, &rel)?;
            continue;
        }
        if kind == S_IFLNK {
            let mut link = String::new();
            (&mut entry)
                .take(4096)
                .read_to_string(&mut link)
                .map_err(|_| unsafe_entry("is a symlink whose target is not text"))?;
            if !link_stays_inside(&rel, &link) {
                return Err(unsafe_entry(
                    "is a symlink pointing outside the code directory",
                ));
            }
            std::os::unix::fs::symlink(&link, &target).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    ZipError::Duplicate { name: name.clone() }
                } else {
                    write_err(&target)(e)
                }
            })?;
            files += 1;
            continue;
        }
        if kind != 0 && kind != S_IFREG {
            return Err(unsafe_entry(
                "is a device, FIFO or socket: only files, directories and symlinks are allowed",
            ));
        }
        let exec = mode & 0o111 != 0;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if exec { 0o755 } else { 0o644 })
            .open(&target)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    ZipError::Duplicate { name: name.clone() }
                } else {
                    write_err(&target)(e)
                }
            })?;
        let compressed = entry.compressed_size();
        let left = limits.max_unzipped_bytes - total;
        let entry_cap = compressed.saturating_mul(limits.max_ratio).max(1 << 20);
        let mut buf = [0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(|e| ZipError::Entry {
                name: name.clone(),
                source: e.into(),
            })?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > left {
                return Err(ZipError::TooLargeUnzipped {
                    limit: limits.max_unzipped_bytes,
                });
            }
            if written > entry_cap {
                return Err(ZipError::Bomb {
                    name,
                    ratio: limits.max_ratio,
                });
            }
            out.write_all(&buf[..n]).map_err(write_err(&target))?;
        }
        // Modes are set explicitly: the umask must not hide code from the
        // sandbox user.
        fs::set_permissions(
            &target,
            fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
        )
        .map_err(write_err(&target))?;
        total += written;
        files += 1;
    }
    Ok(Extracted {
        files,
        bytes: total,
    })
}

/// Creates `rel` and its parents under `root`, refusing to pass through a
/// symlink an earlier entry made.
fn create_dirs(root: &Path, rel: &Path) -> Result<(), ZipError> {
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ZipError::UnsafeEntry {
                    name: rel.display().to_string(),
                    reason: "passes through a symlink or file of another entry",
                })
            }
            Err(_) => {
                fs::create_dir(&at).map_err(write_err(&at))?;
                fs::set_permissions(&at, fs::Permissions::from_mode(0o755))
                    .map_err(write_err(&at))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
