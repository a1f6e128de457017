//! Reading an image source: members of a directory or of an uncompressed
//! tar archive (indexed once, then read at their offsets), compression
//! detected from magic bytes, and readers that hash and count what passes
//! through them so blobs are verified against their digests.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::ImageError;
use super::extract::normalize_entry;

/// Largest JSON document (index, manifest, config) we read.
pub(crate) const MAX_JSON: u64 = 16 << 20;
/// Most members an image archive may hold.
const MAX_MEMBERS: usize = 100_000;
/// How many symlinks between archive members we follow.
const MAX_MEMBER_LINKS: usize = 8;

/// Where the members of an image source are.
pub(crate) enum Members {
    /// An unpacked layout: members are files below this directory.
    Dir(PathBuf),
    /// An uncompressed tar archive: member path → (offset, length) or a
    /// symlink to another member.
    Tar {
        path: PathBuf,
        file: File,
        members: BTreeMap<PathBuf, Member>,
    },
}

pub(crate) enum Member {
    Data { offset: u64, len: u64 },
    Link(PathBuf),
}

impl Members {
    /// Indexes the regular files and symlinks of the tar archive at `path`.
    pub(crate) fn index_tar(path: &Path) -> Result<Members, ImageError> {
        let read_err = |source| ImageError::ReadSource {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let mut archive = tar::Archive::new(file.try_clone().map_err(read_err)?);
        let mut members = BTreeMap::new();
        for entry in archive.entries_with_seek().map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let raw = entry.path_bytes();
            let Ok(name) = normalize_entry(Path::new(std::ffi::OsStr::from_bytes(&raw))) else {
                continue;
            };
            let member = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Member::Data {
                    offset: entry.raw_file_position(),
                    len: entry.size(),
                },
                tar::EntryType::Symlink => match entry.link_name_bytes() {
                    Some(target) => {
                        Member::Link(PathBuf::from(std::ffi::OsStr::from_bytes(&target)))
                    }
                    None => continue,
                },
                _ => continue,
            };
            members.insert(name, member);
            if members.len() > MAX_MEMBERS {
                return Err(ImageError::Unsupported {
                    what: format!("archive {}", path.display()),
                    detail: format!("more than {MAX_MEMBERS} members"),
                });
            }
        }
        Ok(Members::Tar {
            path: path.to_owned(),
            file,
            members,
        })
    }

    pub(crate) fn source(&self) -> &Path {
        match self {
            Members::Dir(path) | Members::Tar { path, .. } => path,
        }
    }

    pub(crate) fn contains(&self, member: &str) -> bool {
        match self {
            Members::Dir(dir) => dir.join(member).is_file(),
            Members::Tar { members, .. } => members.contains_key(Path::new(member)),
        }
    }

    /// Opens `member` (a relative path, checked) with its length.
    pub(crate) fn open(&self, member: &str) -> Result<(Box<dyn Read + '_>, u64), ImageError> {
        let missing = || ImageError::MissingMember {
            path: self.source().to_owned(),
            member: member.to_owned(),
        };
        let mut rel = normalize_entry(Path::new(member)).map_err(|_| missing())?;
        match self {
            Members::Dir(dir) => {
                let path = dir.join(&rel);
                let file = File::open(&path).map_err(|source| match source.kind() {
                    io::ErrorKind::NotFound => missing(),
                    _ => ImageError::ReadSource {
                        path: path.clone(),
                        source,
                    },
                })?;
                let len = file
                    .metadata()
                    .map_err(|source| ImageError::ReadSource { path, source })?
                    .len();
                Ok((Box::new(file), len))
            }
            Members::Tar { file, members, .. } => {
                for _ in 0..=MAX_MEMBER_LINKS {
                    match members.get(&rel).ok_or_else(missing)? {
                        Member::Data { offset, len } => {
                            let section = Section {
                                file,
                                pos: *offset,
                                end: offset + len,
                            };
                            return Ok((Box::new(section), *len));
                        }
                        // Relative to the link's directory, and it must stay
                        // inside the archive.
                        Member::Link(target) => {
                            let joined = rel.parent().unwrap_or(Path::new("")).join(target);
                            rel = resolve_inside(&joined).ok_or_else(missing)?;
                        }
                    }
                }
                Err(missing())
            }
        }
    }

    /// Reads and parses a JSON member.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        member: &str,
    ) -> Result<(T, [u8; 32]), ImageError> {
        let (reader, len) = self.open(member)?;
        let what = format!("{member} in {}", self.source().display());
        let bytes = read_small(reader, len, &what)?;
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        let value =
            serde_json::from_slice(&bytes).map_err(|source| ImageError::Json { what, source })?;
        Ok((value, sha))
    }
}

/// Reads a metadata document of at most [`MAX_JSON`] bytes.
pub(crate) fn read_small(reader: impl Read, len: u64, what: &str) -> Result<Vec<u8>, ImageError> {
    if len > MAX_JSON {
        return Err(ImageError::MetadataTooLarge {
            what: what.to_owned(),
            limit: MAX_JSON,
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    reader
        .take(MAX_JSON)
        .read_to_end(&mut bytes)
        .map_err(|source| ImageError::ReadLayer {
            layer: what.to_owned(),
            source,
        })?;
    Ok(bytes)
}

/// `a/b/../c` → `a/c`, or `None` if it climbs out of the top.
fn resolve_inside(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::Normal(name) => out.push(name),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A byte range of a file, read with `pread` so sections never share a
/// file position.
struct Section<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive member is truncated",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// How a stream is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Looks at the first bytes of `reader` without consuming them.
pub(crate) fn sniff(reader: &mut impl BufRead, what: &str) -> Result<Compression, ImageError> {
    let head = reader.fill_buf().map_err(|source| ImageError::ReadLayer {
        layer: what.to_owned(),
        source,
    })?;
    let unsupported = |compression| {
        Err(ImageError::UnsupportedCompression {
            what: what.to_owned(),
            compression,
        })
    };
    match head {
        [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok(Compression::Zstd),
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => unsupported("xz"),
        [b'B', b'Z', b'h', ..] => unsupported("bzip2"),
        _ => Ok(Compression::None),
    }
}

/// A stream decompressed as its [`Compression`] says, whose source can be
/// taken back (to drain and verify it).
pub(crate) enum Decoder<R: BufRead> {
    Plain(R),
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Decoder<R> {
    pub(crate) fn new(reader: R, compression: Compression, what: &str) -> Result<Self, ImageError> {
        Ok(match compression {
            Compression::None => Decoder::Plain(reader),
            Compression::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(reader)),
            Compression::Zstd => {
                Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(reader).map_err(
                    |source| ImageError::ReadLayer {
                        layer: what.to_owned(),
                        source,
                    },
                )?)
            }
        })
    }

    pub(crate) fn into_inner(self) -> R {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
        }
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

/// Hashes and counts what is read through it, and fails once more than
/// `limit` bytes went by (a decompression bomb stops there).
pub(crate) struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    pub(crate) count: u64,
    limit: u64,
}

impl<R: Read> Hashing<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
        }
    }

    /// Reads what is left (tar padding after the end marker, say) and
    /// returns `sha256:<hex>` of everything, its length and the source.
    pub(crate) fn finish(mut self) -> io::Result<(String, u64, R)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
            self.inner,
        ))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(LimitExceeded(self.limit)));
        }
        Ok(n)
    }
}

/// The error a [`Hashing`] reader fails with past its limit.
#[derive(Debug, thiserror::Error)]
#[error("stream is longer than {0} bytes")]
pub(crate) struct LimitExceeded(pub(crate) u64);

/// True if `e` (or what it wraps) is a [`LimitExceeded`].
pub(crate) fn is_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<LimitExceeded>())
}

/// A buffered reader with a buffer large enough for decompressors.
pub(crate) fn buffered<R: Read>(reader: R) -> BufReader<R> {
    BufReader::with_capacity(256 * 1024, reader)
}
