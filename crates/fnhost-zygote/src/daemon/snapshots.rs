//! What every pool of a host shares to hibernate zygotes: the directory
//! their snapshots go to (under the state directory, emptied at start so a
//! crashed run leaves nothing behind) and `/dev/userfaultfd`, from which
//! each zygote creates its own userfaultfd (see `fnhost_snapshot`).

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use fnhost_config::{FunctionSpec, HibernateMode};

/// A function asks for snapshot hibernation on a host that cannot do it.
#[derive(Debug, thiserror::Error)]
#[error(
    "hibernate_mode = \"snapshot\" needs /dev/userfaultfd (Linux 6.1 or later): {reason}; \
     set hibernate_mode = \"reclaim\" or hibernate_after_ms = 0 for function '{function}'"
)]
pub struct SnapshotsUnavailable {
    pub function: String,
    /// Why the device cannot be opened.
    #[source]
    pub reason: DeviceUnavailable,
}

/// `/dev/userfaultfd` could not be opened at start (the error is kept and
/// shared: every pool asking for it gets the same answer).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot open /dev/userfaultfd: {0}")]
pub struct DeviceUnavailable(#[source] pub std::sync::Arc<io::Error>);

/// `statfs` magic of tmpfs: snapshots there would stay in memory.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The snapshot directory and userfaultfd device shared by every pool.
pub struct SnapshotStore {
    dir: PathBuf,
    /// The device, or why it cannot be used.
    device: Result<OwnedFd, DeviceUnavailable>,
}

impl SnapshotStore {
    /// Creates `<state_dir>/snapshots` (mode 0700) and removes snapshots a
    /// previous run left; opens `/dev/userfaultfd` (a failure is kept and
    /// reported only if a function asks for snapshot hibernation).
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
        let device = fnhost_sandbox::sys::uffd::open_device()
            .map_err(|e| DeviceUnavailable(std::sync::Arc::new(e)));
        Ok(SnapshotStore { dir, device })
    }

    /// Where the snapshot of zygote `zygote` of `function` goes.
    pub fn path(&self, function: &str, zygote: u64) -> PathBuf {
        self.dir.join(format!("{function}.z{zygote}.snap"))
    }

    /// The userfaultfd device, for a zygote to create its userfaultfd from.
    pub fn device(&self) -> Result<&OwnedFd, DeviceUnavailable> {
        self.device.as_ref().map_err(Clone::clone)
    }

    /// Checks that `spec`'s hibernation settings can work on this host.
    pub fn check(&self, spec: &FunctionSpec) -> Result<(), SnapshotsUnavailable> {
        let pool = &spec.pool;
        if pool.hibernate_after_ms == 0 || pool.hibernate_mode != HibernateMode::Snapshot {
            return Ok(());
        }
        self.device()
            .map(drop)
            .map_err(|reason| SnapshotsUnavailable {
                function: spec.name.clone(),
                reason,
            })
    }
}
