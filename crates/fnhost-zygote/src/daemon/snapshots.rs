//! What every pool of a host shares to hibernate zygotes: the directory
//! their snapshots go to (under the state directory, emptied at start so a
//! crashed run leaves nothing behind), and the shared bases of sharing
//! groups (`hibernate_share_pages`, see `fnhost_snapshot::shared`). Nothing
//! else: each zygote creates its own user-mode-only userfaultfd (see
//! `fnhost_snapshot`).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use fnhost_snapshot::SharedBase;

/// `statfs` magic of tmpfs: snapshots there would stay in memory.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The snapshot directory shared by every pool.
pub struct SnapshotStore {
    dir: PathBuf,
    /// Each sharing group's base while a zygote of the group sleeps on it
    /// or maps it; a new one is made when none is held.
    bases: Mutex<HashMap<u64, Weak<SharedBase>>>,
    /// Names new bases apart (a dropped base's file may still be in use
    /// under its name until its last holder goes).
    next_base: AtomicU64,
}

impl SnapshotStore {
    /// Creates `<state_dir>/snapshots` (mode 0700) and removes snapshots a
    /// previous run left.
    pub fn open(state_dir: &Path) -> io::Result<SnapshotStore> {
        let dir = state_dir.join("snapshots");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut stale = 0;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
                stale += 1;
            }
        }
        if stale > 0 {
            tracing::warn!(dir = %dir.display(), files = stale, "removed snapshots left by a previous run");
        }
        if nix::sys::statfs::statfs(&dir).is_ok_and(|s| s.filesystem_type().0 == TMPFS_MAGIC) {
            tracing::warn!(dir = %dir.display(),
                "snapshots are on tmpfs: hibernate_mode = \"snapshot\" saves no memory there; put server.state_dir on a disk");
        }
        Ok(SnapshotStore {
            dir,
            bases: Mutex::new(HashMap::new()),
            next_base: AtomicU64::new(0),
        })
    }

    /// The shared base of sharing group `group`: the one held now, or a
    /// new, empty one (filled by the first snapshot sealed with it).
    pub fn shared_base(&self, group: u64) -> io::Result<Arc<SharedBase>> {
        let mut bases = self.bases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(base) = bases.get(&group).and_then(Weak::upgrade) {
            return Ok(base);
        }
        bases.retain(|_, base| base.strong_count() > 0);
        let n = self.next_base.fetch_add(1, Ordering::Relaxed);
        let base = Arc::new(SharedBase::create(
            self.dir.join(format!("shared-{group:016x}-{n}.base")),
        )?);
        bases.insert(group, Arc::downgrade(&base));
        Ok(base)
    }

    /// Where the snapshot of zygote `zygote` of `function` goes.
    pub fn path(&self, function: &str, zygote: u64) -> PathBuf {
        self.dir.join(format!("{function}.z{zygote}.snap"))
    }
}
