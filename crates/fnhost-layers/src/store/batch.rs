//! Importing many layers with two filesystem syncs in all. Built one by
//! one, a layer costs several `fsync`s (each file, each directory, the
//! seal, the store directory), each a journal commit: at 10,000 functions
//! that was most of a host's first start. A batch writes its builds
//! unsynced, syncs the filesystem once, renames every build into place and
//! seals it, and syncs once more. A layer is never in place before its
//! contents are on disk, so a crash at any point leaves at worst a build
//! in `tmp/` (removed at the next start) or a layer without a valid seal
//! (built again at the next start).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use super::{dir_plan, Layer, LayerStore, TmpBuild};
use crate::error::LayerError;
use crate::write::{sync_filesystem, write_plan, Durability};

/// Layers being imported together; see the module documentation.
pub struct ImportBatch<'s> {
    store: &'s LayerStore,
    /// Builds waiting for [`ImportBatch::finish`], by digest: a digest
    /// imported twice is built once.
    pending: Mutex<BTreeMap<String, Pending>>,
}

struct Pending {
    tmp: TmpBuild,
    layer: Layer,
    entries: usize,
}

impl LayerStore {
    /// Starts a batch of imports into this store.
    pub fn batch(&self) -> ImportBatch<'_> {
        ImportBatch {
            store: self,
            pending: Mutex::new(BTreeMap::new()),
        }
    }
}

impl ImportBatch<'_> {
    /// [`LayerStore::import_dir`], except that a layer that has to be
    /// built is in place only once [`ImportBatch::finish`] has returned:
    /// nothing may use the returned path before that. Callable from
    /// several threads at once.
    pub fn import_dir(&self, src: &Path, prefix: &Path) -> Result<Layer, LayerError> {
        let plan = dir_plan(src, prefix)?;
        let layer = self.store.layer_for(&plan.digest());
        let held = self.store.lock_digest(&layer.digest)?;
        if self.pending().contains_key(&layer.digest) || self.store.trusted(&layer, &held) {
            return Ok(layer);
        }
        let tmp = self.store.new_build(&layer.digest["sha256:".len()..])?;
        write_plan(&plan, &tmp.path, Durability::Deferred)?;
        self.pending().insert(
            layer.digest.clone(),
            Pending {
                tmp,
                layer: layer.clone(),
                entries: plan.nodes.len(),
            },
        );
        Ok(layer)
    }

    /// How many layers this batch has built so far.
    pub fn built(&self) -> usize {
        self.pending().len()
    }

    /// Puts every layer the batch built in place, durably, and returns how
    /// many it put there (not those another process committed first). On
    /// an error the layers not yet in place are removed; those already
    /// committed stay (they are complete and sealed).
    pub fn finish(self) -> Result<usize, LayerError> {
        let pending = self
            .pending
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if pending.is_empty() {
            return Ok(0);
        }
        let root = self.store.root();
        // Every build's contents, before any of them is renamed into place.
        sync_filesystem(root)?;
        let mut count = 0;
        for Pending {
            tmp,
            layer,
            entries,
        } in pending.into_values()
        {
            let held = self.store.lock_digest(&layer.digest)?;
            // Another process may have built it meanwhile: keep theirs.
            if self.store.trusted(&layer, &held) {
                continue;
            }
            self.store
                .commit(tmp, layer, entries, &held, Durability::Deferred)?;
            count += 1;
        }
        // The renames and the seals.
        sync_filesystem(root)?;
        Ok(count)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Pending>> {
        // A panic while holding it cannot leave the map half-updated.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::seal;

    fn code_dir(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("handler.py"), text).expect("write");
        dir
    }

    #[test]
    fn a_batch_gives_the_layers_one_at_a_time_would_once_finished() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = LayerStore::open(state.path()).expect("open");
        let (a, b) = (code_dir("a = 1\n"), code_dir("b = 2\n"));
        let prefix = Path::new("var/task");
        let batch = store.batch();
        let layer_a = batch.import_dir(a.path(), prefix).expect("import a");
        let layer_b = batch.import_dir(b.path(), prefix).expect("import b");
        // Same code again: the same layer, not a second build.
        let again = batch.import_dir(a.path(), prefix).expect("import a again");
        assert_eq!(again, layer_a);
        assert_eq!(batch.built(), 2);
        assert!(!layer_a.path.exists(), "in place before finish");
        assert_eq!(batch.finish().expect("finish"), 2);
        for (layer, text) in [(&layer_a, "a = 1\n"), (&layer_b, "b = 2\n")] {
            let file = layer.path.join("var/task/handler.py");
            assert_eq!(fs::read_to_string(file).expect("read"), text);
            seal::verify(&layer.path).expect("sealed");
        }
        // Identical to what a single import builds, and trusted by it.
        assert_eq!(
            store.import_dir(a.path(), prefix).expect("single import"),
            layer_a
        );
        assert_eq!(fs::read_dir(state.path().join("tmp")).unwrap().count(), 0);
        // A second batch finds everything present and builds nothing.
        let batch = store.batch();
        batch.import_dir(b.path(), prefix).expect("import b");
        assert_eq!(batch.finish().expect("finish"), 0);
    }

    #[test]
    fn a_batch_dropped_unfinished_leaves_nothing_behind() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = LayerStore::open(state.path()).expect("open");
        let code = code_dir("x = 1\n");
        let batch = store.batch();
        let layer = batch
            .import_dir(code.path(), Path::new("var/task"))
            .expect("import");
        drop(batch);
        assert!(!layer.path.exists());
        assert_eq!(fs::read_dir(state.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_layer_committed_elsewhere_meanwhile_is_kept() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = LayerStore::open(state.path()).expect("open");
        let code = code_dir("y = 1\n");
        let prefix = Path::new("var/task");
        let batch = store.batch();
        let layer = batch.import_dir(code.path(), prefix).expect("import");
        // Another builder (another fnhost process) commits it first.
        let theirs = store.import_dir(code.path(), prefix).expect("single");
        assert_eq!(theirs, layer);
        let inode = || {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(&layer.path).expect("stat").ino()
        };
        let before = inode();
        assert_eq!(batch.finish().expect("finish"), 0);
        assert_eq!(inode(), before);
        seal::verify(&layer.path).expect("still sealed");
        assert_eq!(fs::read_dir(state.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_source_is_the_import_error_of_that_source() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = LayerStore::open(state.path()).expect("open");
        let batch = store.batch();
        let err = batch
            .import_dir(&state.path().join("no-such-dir"), Path::new("var/task"))
            .expect_err("missing source");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
        assert_eq!(batch.finish().expect("finish"), 0);
    }
}
