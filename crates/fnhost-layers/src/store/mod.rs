//! The content-addressed store: `<root>/sha256/<hex>/` holds finished,
//! read-only layers; `<root>/tmp/` holds builds in progress, each renamed
//! into place in one step once complete; `<root>/locks/` serializes
//! builders of the same digest (see [`digest_lock`]).

mod batch;
mod digest_lock;

use std::borrow::Cow;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::LayerError;
use crate::plan::{normalize_relative, FileData, Node, Plan, DIR_MODE_MASK, FILE_MODE_MASK};
use crate::seal;
use crate::source::{scan_children, ScanOptions, SourceDir};
use crate::write::{remove_tree, write_plan, Durability};
pub use batch::ImportBatch;
pub(crate) use digest_lock::DigestLock;

/// Numbers the builds of this process, so concurrent builds never share a
/// temporary directory.
static BUILD_SEQ: AtomicU64 = AtomicU64::new(0);

/// A finished layer in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:<hex>` over the layer's canonical contents.
    pub digest: String,
    /// Absolute path of the layer directory.
    pub path: PathBuf,
}

/// A file to put in a layer built by [`LayerStore::import_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerFile {
    /// Relative path inside the layer.
    pub path: PathBuf,
    pub contents: Vec<u8>,
    /// Permission bits; setuid and setgid are dropped.
    pub mode: u32,
}

/// A directory of content-addressed, read-only layers.
#[derive(Debug)]
pub struct LayerStore {
    root: PathBuf,
}

impl LayerStore {
    /// Opens the store at `root` (e.g. `<state_dir>/layers`), creating it
    /// with mode 0700 if needed, and removes builds left in `tmp/` by
    /// processes that no longer run.
    pub fn open(root: &Path) -> Result<Self, LayerError> {
        let create_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LayerError::CreateStore { path, source }
        };
        fs::create_dir_all(root).map_err(create_err(root))?;
        // Searchable but not listable: sandboxes in a user namespace run as
        // unprivileged host ids and must reach their layers' paths.
        fs::set_permissions(root, Permissions::from_mode(0o711)).map_err(create_err(root))?;
        let root = fs::canonicalize(root).map_err(create_err(root))?;
        for (sub, mode) in [
            ("sha256", 0o711),
            ("tmp", 0o700),
            (digest_lock::LOCK_DIR, 0o700),
        ] {
            let path = root.join(sub);
            match DirBuilder::new().mode(mode).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
                Err(source) => return Err(LayerError::CreateStore { path, source }),
            }
        }
        let store = Self { root };
        store.clean_tmp()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Copies the tree at `src` into a layer, below `prefix` (e.g.
    /// `var/task`; empty for the layer root). Symlinks are copied as
    /// symlinks and never followed; devices, fifos and sockets are refused.
    /// Parent directories of `prefix` get mode 0755, `prefix` itself the
    /// mode of `src`. Reuses the existing layer if the digest is known.
    pub fn import_dir(&self, src: &Path, prefix: &Path) -> Result<Layer, LayerError> {
        self.build(&dir_plan(src, prefix)?)
    }

    /// Builds a layer holding exactly `files` (parent directories 0755).
    pub fn import_files(&self, files: &[LayerFile]) -> Result<Layer, LayerError> {
        let mut plan = Plan::new();
        for file in files {
            let path = normalize_relative(&file.path)
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or_else(|| LayerError::InvalidFilePath {
                    path: file.path.clone(),
                })?;
            let node = Node::File {
                mode: file.mode & FILE_MODE_MASK,
                data: FileData::Bytes(Cow::Borrowed(&file.contents)),
            };
            plan.insert(path, node)?;
        }
        self.build(&plan)
    }

    /// Every layer in the store, sorted by digest.
    pub fn list(&self) -> Result<Vec<Layer>, LayerError> {
        let dir = self.root.join("sha256");
        let list_err = |source| LayerError::List {
            path: dir.clone(),
            source,
        };
        let mut layers = Vec::new();
        for entry in fs::read_dir(&dir).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let name = entry.file_name();
            let Some(hex) = name.to_str().filter(|n| is_sha256_hex(n)) else {
                continue;
            };
            if entry.file_type().map_err(list_err)?.is_dir() {
                layers.push(Layer {
                    digest: format!("sha256:{hex}"),
                    path: entry.path(),
                });
            }
        }
        layers.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(layers)
    }

    /// Writes `plan` as a layer unless its digest is already present.
    pub(crate) fn build(&self, plan: &Plan<'_>) -> Result<Layer, LayerError> {
        let digest = plan.digest();
        let hex = digest
            .strip_prefix("sha256:")
            .expect("digest has a sha256: prefix");
        let layer = Layer {
            path: self.root.join("sha256").join(hex),
            digest: digest.clone(),
        };
        // Held while writing too: a second builder of this digest waits
        // and then finds the layer built, instead of building it again.
        let held = self.lock_digest(&layer.digest)?;
        if self.trusted(&layer, &held) {
            tracing::debug!(digest = %layer.digest, "layer already present");
            return Ok(layer);
        }
        self.write_and_commit(plan, layer, &held)
    }

    /// Writes `plan` into a temporary directory and renames it to
    /// `layer.path`; if another builder got there first, keeps theirs.
    fn write_and_commit(
        &self,
        plan: &Plan<'_>,
        layer: Layer,
        held: &DigestLock,
    ) -> Result<Layer, LayerError> {
        let hex = &layer.digest["sha256:".len()..];
        let tmp = self.new_build(hex)?;
        write_plan(plan, &tmp.path, Durability::EachFile)?;
        self.commit(tmp, layer, plan.nodes.len(), held, Durability::EachFile)
    }

    /// Whether `layer` is present and may be used: its directory matches the
    /// seal written when it was committed. A present layer that does not is
    /// moved out of the way (and removed), so that it is built again. Only
    /// under the digest's lock: a layer committed but not yet sealed by
    /// another builder would look tampered with.
    pub(crate) fn trusted(&self, layer: &Layer, _held: &DigestLock) -> bool {
        if !layer.path.is_dir() {
            return false;
        }
        let untrusted = match seal::verify(&layer.path) {
            Ok(()) => return true,
            Err(why) => why,
        };
        tracing::warn!(digest = %layer.digest, path = %layer.path.display(), reason = %untrusted,
            "not using a layer that does not match its seal; building it again");
        let aside = self.root.join("tmp").join(format!(
            "untrusted-{}-{}",
            std::process::id(),
            BUILD_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::rename(&layer.path, &aside) {
            Ok(()) => {
                if let Err(e) = remove_tree(&aside) {
                    tracing::warn!(path = %aside.display(), error = %e, "cannot remove an untrusted layer; the next start removes it");
                }
            }
            Err(e) => {
                tracing::warn!(path = %layer.path.display(), error = %e, "cannot move an untrusted layer aside")
            }
        }
        let _ = fs::remove_file(seal::path_of(&layer.path));
        false
    }

    /// The layer that digest `sha256:<hex>` names (present or not).
    pub(crate) fn layer_for(&self, digest: &str) -> Layer {
        let hex = digest
            .strip_prefix("sha256:")
            .expect("digest has a sha256: prefix");
        Layer {
            path: self.root.join("sha256").join(hex),
            digest: digest.to_owned(),
        }
    }

    /// A fresh, empty build directory in `tmp/`, removed on drop unless
    /// committed. `label` only helps a reader of `tmp/`.
    pub(crate) fn new_build(&self, label: &str) -> Result<TmpBuild, LayerError> {
        let seq = BUILD_SEQ.fetch_add(1, Ordering::Relaxed);
        TmpBuild::create(
            self.root
                .join("tmp")
                .join(format!("{}-{seq}-{label}", std::process::id())),
        )
    }

    /// Renames finished build `tmp` to `layer.path`; if another builder of
    /// the same digest got there first (or the layer already existed),
    /// keeps that one and drops ours. The build's contents must already be
    /// on disk; `durability` says whether the rename and the seal are
    /// synced here or by the caller.
    pub(crate) fn commit(
        &self,
        tmp: TmpBuild,
        layer: Layer,
        entries: usize,
        _held: &DigestLock,
        durability: Durability,
    ) -> Result<Layer, LayerError> {
        match fs::rename(&tmp.path, &layer.path) {
            Ok(()) => {
                tmp.keep();
                seal::write(&layer.path, durability).map_err(|source| LayerError::Write {
                    path: seal::path_of(&layer.path),
                    source,
                })?;
                if durability == Durability::EachFile {
                    let sha_dir = self.root.join("sha256");
                    File::open(&sha_dir)
                        .and_then(|dir| dir.sync_all())
                        .map_err(|source| LayerError::Write {
                            path: sha_dir,
                            source,
                        })?;
                }
                tracing::info!(digest = %layer.digest, path = %layer.path.display(), entries, "layer built");
                Ok(layer)
            }
            // Another builder of the same digest got there first; its
            // layer has the same contents. (Dropping `tmp` removes ours.)
            Err(_) if layer.path.is_dir() => {
                tracing::debug!(digest = %layer.digest, "layer built concurrently, using the existing one");
                Ok(layer)
            }
            Err(source) => Err(LayerError::Commit {
                from: tmp.path.clone(),
                to: layer.path,
                source,
            }),
        }
    }

    /// Removes builds in `tmp/` whose process is gone (or whose name we do
    /// not recognise). Builds of running processes are left alone: another
    /// process may be importing into the same store right now.
    fn clean_tmp(&self) -> Result<(), LayerError> {
        let dir = self.root.join("tmp");
        let clean_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LayerError::CleanTmp { path, source }
        };
        for entry in fs::read_dir(&dir).map_err(clean_err(&dir))? {
            let path = entry.map_err(clean_err(&dir))?.path();
            let owner = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let running = owner.is_some_and(|pid| {
                pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
            });
            if !running {
                tracing::info!(path = %path.display(), "removing stale layer build");
                remove_tree(&path).map_err(clean_err(&path))?;
            }
        }
        Ok(())
    }
}

/// The plan of a layer holding the tree at `src` below `prefix` (see
/// [`LayerStore::import_dir`]).
fn dir_plan(src: &Path, prefix: &Path) -> Result<Plan<'static>, LayerError> {
    let prefix = normalize_relative(prefix).ok_or_else(|| LayerError::InvalidPrefix {
        prefix: prefix.to_owned(),
    })?;
    let read_err = |source| LayerError::ReadSource {
        path: src.to_owned(),
        source,
    };
    let root = Arc::new(SourceDir::open(src).map_err(read_err)?);
    let mode = root.metadata().map_err(read_err)?.permissions().mode() & DIR_MODE_MASK;
    let mut plan = Plan::new();
    if prefix.as_os_str().is_empty() {
        plan.root_mode = mode;
    } else {
        plan.insert(prefix.clone(), Node::Dir { mode })?;
    }
    let opts = ScanOptions {
        max_file_size: None,
        skip_special: false,
        exclude: &[],
    };
    scan_children(&root, &root, Path::new(""), &prefix, &mut plan, opts)?;
    Ok(plan)
}

fn is_sha256_hex(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A build directory that is removed unless the build is committed.
pub(crate) struct TmpBuild {
    pub(crate) path: PathBuf,
    committed: bool,
}

impl TmpBuild {
    fn create(path: PathBuf) -> Result<Self, LayerError> {
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| LayerError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            path,
            committed: false,
        })
    }

    fn keep(mut self) {
        self.committed = true;
    }
}

impl Drop for TmpBuild {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(e) = remove_tree(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove unfinished layer build");
        }
    }
}

#[cfg(test)]
mod tests;
