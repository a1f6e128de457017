//! A layer's contents before they are written: every entry keyed by its
//! relative path, in the canonical order the digest is computed in.
//!
//! The digest covers the layer root's mode and, for each entry, its path, its
//! type, its permission bits, a file's length and SHA-256 and a symlink's
//! target. Owners and timestamps are deliberately left out, so the same tree
//! always yields the same digest.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::LayerError;
use crate::source::SourceDir;

/// Permission bits kept on regular files. Setuid and setgid are dropped: the
/// copy is owned by root, so keeping them would turn a user's setuid file
/// into a setuid-root one.
pub(crate) const FILE_MODE_MASK: u32 = 0o777;
/// Permission bits kept on directories: rwx plus sticky (for `tmp`).
pub(crate) const DIR_MODE_MASK: u32 = 0o1777;

/// Where a regular file's bytes come from.
pub(crate) enum FileData<'a> {
    /// Bytes held in memory.
    Bytes(Cow<'a, [u8]>),
    /// A file below a source directory, already hashed; it is re-read (and
    /// re-hashed) when the layer is written.
    Source {
        root: Arc<SourceDir>,
        rel: PathBuf,
        len: u64,
        sha256: [u8; 32],
    },
}

/// One entry of a layer.
pub(crate) enum Node<'a> {
    Dir { mode: u32 },
    File { mode: u32, data: FileData<'a> },
    Symlink { target: PathBuf },
}

/// The full contents of a layer, in canonical (component-wise sorted) order,
/// which puts every directory before its children.
pub(crate) struct Plan<'a> {
    pub(crate) root_mode: u32,
    pub(crate) nodes: BTreeMap<PathBuf, Node<'a>>,
}

impl<'a> Plan<'a> {
    pub(crate) fn new() -> Self {
        Self {
            root_mode: 0o755,
            nodes: BTreeMap::new(),
        }
    }

    /// Adds `node` at `path`, creating missing parent directories with mode
    /// 0755. Fails if `path` is already present or a parent is not a
    /// directory.
    pub(crate) fn insert(&mut self, path: PathBuf, node: Node<'a>) -> Result<(), LayerError> {
        self.ensure_parents(&path)?;
        if self.nodes.contains_key(&path) {
            return Err(LayerError::ConflictingPath { path });
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    /// Creates each missing ancestor of `path` as a 0755 directory.
    pub(crate) fn ensure_parents(&mut self, path: &Path) -> Result<(), LayerError> {
        let mut parent = PathBuf::new();
        let mut components = path.components().peekable();
        while let Some(component) = components.next() {
            if components.peek().is_none() {
                break;
            }
            parent.push(component);
            match self.nodes.get(&parent) {
                Some(Node::Dir { .. }) => {}
                Some(_) => return Err(LayerError::ConflictingPath { path: parent }),
                None => {
                    self.nodes.insert(parent.clone(), Node::Dir { mode: 0o755 });
                }
            }
        }
        Ok(())
    }

    /// The layer's digest, `sha256:<hex>`.
    pub(crate) fn digest(&self) -> String {
        layer_digest(
            self.root_mode,
            self.nodes.iter().map(|(path, node)| {
                let entry = match node {
                    Node::Dir { mode } => DigestEntry::Dir {
                        mode: *mode,
                        opaque: false,
                    },
                    Node::File { mode, data } => {
                        let (len, sha256): (u64, [u8; 32]) = match data {
                            FileData::Bytes(bytes) => {
                                (bytes.len() as u64, Sha256::digest(bytes).into())
                            }
                            FileData::Source { len, sha256, .. } => (*len, *sha256),
                        };
                        DigestEntry::File {
                            mode: *mode,
                            len,
                            sha256,
                        }
                    }
                    Node::Symlink { target } => DigestEntry::Symlink { target },
                };
                (path.as_path(), entry)
            }),
        )
    }
}

/// What the digest records of one entry. Layers extracted from images add
/// overlayfs whiteouts and opaque directories, which plans never hold.
pub(crate) enum DigestEntry<'a> {
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
        target: &'a Path,
    },
    Whiteout,
}

/// The digest, `sha256:<hex>`, of a layer with root mode `root_mode` and
/// `entries` in canonical (component-wise sorted) order.
pub(crate) fn layer_digest<'a>(
    root_mode: u32,
    entries: impl Iterator<Item = (&'a Path, DigestEntry<'a>)>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"fnhost-layer-v1\0");
    hasher.update(root_mode.to_le_bytes());
    for (path, entry) in entries {
        put_bytes(&mut hasher, path.as_os_str().as_bytes());
        match entry {
            DigestEntry::Dir { mode, opaque } => {
                hasher.update(if opaque { b"o" } else { b"d" });
                hasher.update(mode.to_le_bytes());
            }
            DigestEntry::File { mode, len, sha256 } => {
                hasher.update(b"f");
                hasher.update(mode.to_le_bytes());
                hasher.update(len.to_le_bytes());
                hasher.update(sha256);
            }
            DigestEntry::Symlink { target } => {
                hasher.update(b"l");
                put_bytes(&mut hasher, target.as_os_str().as_bytes());
            }
            DigestEntry::Whiteout => hasher.update(b"w"),
        }
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// Length-prefixed, so that no two different entry lists hash the same bytes.
fn put_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// `path` rebuilt from its components if they are all plain names (so it
/// cannot escape the layer); `None` otherwise. An empty path stays empty.
pub(crate) fn normalize_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::RootDir
            | Component::CurDir
            | Component::ParentDir
            | Component::Prefix(_) => {
                return None;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_rejects_escapes() {
        assert_eq!(
            normalize_relative(Path::new("var/task/")),
            Some(PathBuf::from("var/task"))
        );
        assert_eq!(normalize_relative(Path::new("")), Some(PathBuf::new()));
        assert_eq!(normalize_relative(Path::new("/var")), None);
        assert_eq!(normalize_relative(Path::new("a/../b")), None);
        assert_eq!(normalize_relative(Path::new("./a")), None);
    }

    #[test]
    fn insert_rejects_duplicates_and_file_parents() {
        let mut plan = Plan::new();
        let file = || Node::File {
            mode: 0o644,
            data: FileData::Bytes(Cow::Borrowed(b"x")),
        };
        plan.insert("a/b".into(), file()).expect("first insert");
        assert!(matches!(
            plan.nodes.get(Path::new("a")),
            Some(Node::Dir { mode: 0o755 })
        ));
        assert!(plan.insert("a/b".into(), file()).is_err());
        assert!(plan.insert("a/b/c".into(), file()).is_err());
        assert!(plan.insert("a".into(), file()).is_err());
    }

    #[test]
    fn digest_is_order_independent_and_covers_modes() {
        let build = |order: &[(&str, u32)]| {
            let mut plan = Plan::new();
            for (path, mode) in order {
                let data = FileData::Bytes(Cow::Borrowed(b"x"));
                plan.insert(PathBuf::from(path), Node::File { mode: *mode, data })
                    .expect("insert");
            }
            plan.digest()
        };
        let a = build(&[("x/1", 0o644), ("y", 0o644)]);
        assert_eq!(a, build(&[("y", 0o644), ("x/1", 0o644)]));
        assert_ne!(a, build(&[("y", 0o755), ("x/1", 0o644)]));
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
    }
}
