//! One builder per digest at a time. Two builders of the same layer (two
//! functions with the same code imported on parallel threads at start, or
//! an image pull beside a running daemon) must not interleave: the second
//! would see the first's layer renamed into place but not yet sealed, take
//! it for a tampered one, move it aside and break the first's commit.
//!
//! The lock is an exclusive `flock` on one of 256 files in
//! `<root>/locks/`, chosen by the digest's first byte: it holds across
//! threads (each lock opens its own file description) and across processes
//! sharing the store, is released by the kernel if its holder dies, and
//! never leaves more than 256 empty files behind. Two digests that share
//! a stripe merely wait for each other.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

use super::LayerStore;
use crate::error::LayerError;

/// Directory of the lock files, under the store root.
pub(crate) const LOCK_DIR: &str = "locks";

/// Held while a layer is checked against its seal and committed; released
/// on drop (closing the file releases the `flock`).
#[derive(Debug)]
pub(crate) struct DigestLock {
    _file: File,
}

impl LayerStore {
    /// Waits for and takes the lock of layer digest `sha256:<hex>`.
    pub(crate) fn lock_digest(&self, digest: &str) -> Result<DigestLock, LayerError> {
        let path = self.root.join(LOCK_DIR).join(stripe(digest));
        let lock_err = |source| LayerError::Lock {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(lock_err)?;
        file.lock().map_err(lock_err)?;
        Ok(DigestLock { _file: file })
    }
}

/// The lock file name of `digest`: the first byte of its hex.
fn stripe(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..2).unwrap_or("00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_maps_to_one_of_256_stripes() {
        let a = format!("sha256:ab{}", "0".repeat(62));
        assert_eq!(stripe(&a), "ab");
        assert_eq!(stripe("sha256:"), "00");
    }
}
