//! The crash-safe store of API-created functions under
//! `<state_dir>/functions`: one JSON record per function (`records/`),
//! replaced by write-to-temp + fsync + rename, and code extracted once per
//! distinct zip into `code/<sha256>` (shared when identical). A kill at
//! any point leaves each record either old or new, and its code present.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::code_zip::{self, Extracted, ZipError, ZipLimits};
use crate::model::FunctionRecord;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot prepare the function store {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Zip(#[from] ZipError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the function record {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the function record {path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A deployment zip in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRef {
    pub sha256: String,
    pub zip_size: u64,
    pub dir: PathBuf,
}

/// The on-disk store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    seq: AtomicU64,
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err(dir))
}

impl Store {
    /// Opens (creating) `<state_dir>/functions`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let root = state_dir.join("functions");
        for (dir, mode) in [
            (root.clone(), 0o755),
            (root.join("records"), 0o700),
            (root.join("code"), 0o755),
            (root.join("tmp"), 0o700),
        ] {
            fs::create_dir_all(&dir)
                .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(mode)))
                .map_err(|source| StoreError::Open {
                    path: dir.clone(),
                    source,
                })?;
        }
        Ok(Store {
            root,
            seq: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn code_dir(&self, sha256: &str) -> PathBuf {
        self.root.join("code").join(sha256)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root.join("records").join(format!("{name}.json"))
    }

    fn scratch(&self, what: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}.{}.{n}", std::process::id()))
    }

    /// Extracts a zip into `code/<sha256>` unless that code is already
    /// there. Nothing is left behind on error.
    pub fn put_code(
        &self,
        zip: &[u8],
        limits: &ZipLimits,
    ) -> Result<(CodeRef, Option<Extracted>), StoreError> {
        let sha256 = hex::encode(Sha256::digest(zip));
        let dir = self.code_dir(&sha256);
        let code = CodeRef {
            sha256: sha256.clone(),
            zip_size: zip.len() as u64,
            dir: dir.clone(),
        };
        if dir.is_dir() {
            return Ok((code, None));
        }
        let tmp = self.scratch(&sha256);
        let extracted = match code_zip::extract(zip, &tmp, limits).and_then(|e| {
            sync_tree(&tmp).map_err(|source| ZipError::Write {
                path: tmp.clone(),
                source,
            })?;
            Ok(e)
        }) {
            Ok(e) => e,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e.into());
            }
        };
        match fs::rename(&tmp, &dir) {
            Ok(()) => {}
            // Identical code landed meanwhile: share it.
            Err(_) if dir.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(write_err(&dir)(e));
            }
        }
        sync_dir(&self.root.join("code"))?;
        Ok((code, Some(extracted)))
    }

    /// Replaces (or creates) a function's record atomically.
    pub fn save(&self, record: &FunctionRecord) -> Result<(), StoreError> {
        let path = self.record_path(&record.name);
        let tmp = self
            .root
            .join("records")
            .join(format!(".{}.json.tmp", record.name));
        let data = serde_json::to_vec_pretty(record).map_err(|e| write_err(&tmp)(e.into()))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(write_err(&tmp))?;
        f.write_all(&data)
            .and_then(|()| f.sync_all())
            .map_err(write_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(write_err(&path))?;
        sync_dir(&self.root.join("records"))
    }

    /// Removes a function's record (its code stays until [`Store::collect`]).
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let path = self.record_path(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.root.join("records")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(write_err(&path)(e)),
        }
    }

    /// Every stored function whose code is present. Records an interrupted
    /// write left behind (`.name.json.tmp`) are dropped: the old record
    /// (or none) stands.
    pub fn load(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        let dir = self.root.join("records");
        let entries = fs::read_dir(&dir).map_err(|source| StoreError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut records = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| StoreError::Read {
                    path: dir.clone(),
                    source,
                })?
                .path();
            let file = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if file.starts_with('.') {
                let _ = fs::remove_file(&path);
                continue;
            }
            if !file.ends_with(".json") {
                continue;
            }
            let data = fs::read(&path).map_err(|source| StoreError::Read {
                path: path.clone(),
                source,
            })?;
            let record: FunctionRecord =
                serde_json::from_slice(&data).map_err(|source| StoreError::Corrupt {
                    path: path.clone(),
                    source,
                })?;
            if !self.code_dir(&record.code_sha256).is_dir() {
                tracing::error!(function = %record.name, code = %record.code_sha256, "stored function has no code directory; skipped");
                continue;
            }
            records.push(record);
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// Removes scratch files and code no record uses (run at startup, when
    /// no pool can still be using old code).
    pub fn collect(&self, records: &[FunctionRecord]) {
        let used: HashSet<&str> = records.iter().map(|r| r.code_sha256.as_str()).collect();
        if let Ok(entries) = fs::read_dir(self.root.join("tmp")) {
            for e in entries.flatten() {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        if let Ok(entries) = fs::read_dir(self.root.join("code")) {
            for e in entries.flatten() {
                let name = e.file_name();
                if !used.contains(name.to_str().unwrap_or_default()) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// fsyncs every file and directory of a freshly extracted tree.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            fs::File::open(entry.path())?.sync_all()?;
        }
    }
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
