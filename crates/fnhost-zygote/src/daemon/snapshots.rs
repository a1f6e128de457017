//! What every pool of a host shares to hibernate zygotes: the directory
//! their snapshots go to (under the state directory, emptied at start so a
//! crashed run leaves nothing behind). Nothing else: each zygote creates
//! its own user-mode-only userfaultfd (see `fnhost_snapshot`).

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// `statfs` magic of tmpfs: snapshots there would stay in memory.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The snapshot directory shared by every pool.
pub struct SnapshotStore {
    dir: PathBuf,
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
        Ok(SnapshotStore { dir })
    }

    /// Where the snapshot of zygote `zygote` of `function` goes.
    pub fn path(&self, function: &str, zygote: u64) -> PathBuf {
        self.dir.join(format!("{function}.z{zygote}.snap"))
    }
}
