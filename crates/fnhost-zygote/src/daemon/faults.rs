//! Answering the page faults of a hibernated zygote from its snapshot,
//! through its userfaultfd: while it hibernates, and from its wake-up
//! until it has mapped the snapshot back.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use fnhost_sandbox::sys;
use fnhost_snapshot::RestoreError;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinError;

use super::fd;

/// Why the page faults of a sleeping zygote could not be served.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("cannot watch the userfaultfd: {0}")]
    Watch(#[source] std::io::Error),
    #[error(transparent)]
    Poll(std::io::Error),
    #[error("cannot duplicate the userfaultfd: {0}")]
    Duplicate(#[source] std::io::Error),
    #[error(transparent)]
    Serve(RestoreError),
    #[error("the page-fault server died: {0}")]
    Died(#[source] JoinError),
}

/// Answers the page faults of a sleeping zygote from its snapshot until
/// `stop` fires (or its sender is dropped); returns the userfaultfd for the
/// wake-up. See `fnhost_snapshot::asleep`. If a fault cannot be served the
/// zygote is killed at once (rather than left blocked on the fault) and
/// the pool replaces it.
pub(super) async fn serve_asleep(
    uffd: OwnedFd,
    snapshot: Arc<std::fs::File>,
    regions: Vec<fnhost_snapshot::Region>,
    stop: tokio::sync::oneshot::Receiver<()>,
    function: Arc<str>,
    zygote: u64,
    pidfd: Arc<AsyncFd<OwnedFd>>,
) -> Result<OwnedFd, FaultError> {
    let served = serve_faults(uffd, snapshot, regions, stop, &function, zygote).await;
    if let Err(e) = &served {
        tracing::error!(function = %function, zygote, error = %e, "cannot serve a sleeping zygote's page fault; stopping the zygote");
        let _ = sys::pidfd_send_signal(pidfd.get_ref().as_fd(), libc::SIGKILL);
    }
    served
}

async fn serve_faults(
    uffd: OwnedFd,
    snapshot: Arc<std::fs::File>,
    regions: Vec<fnhost_snapshot::Region>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    function: &str,
    zygote: u64,
) -> Result<OwnedFd, FaultError> {
    let uffd = fd::register(uffd).map_err(FaultError::Watch)?;
    let source = Arc::new((snapshot, regions));
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(uffd.into_inner()),
            ready = uffd.readable() => {
                let mut guard = ready.map_err(FaultError::Poll)?;
                // Serving reads the snapshot file (a disk read when its page
                // cache was dropped): on a blocking thread, with its own
                // duplicate of the userfaultfd.
                let fd = uffd
                    .get_ref()
                    .try_clone()
                    .map_err(FaultError::Duplicate)?;
                let source = source.clone();
                let served = tokio::task::spawn_blocking(move || {
                    let (snapshot, regions) = &*source;
                    let mut page = Vec::new();
                    let mut total = 0;
                    loop {
                        match fnhost_snapshot::asleep::serve_pending(fd.as_fd(), snapshot, regions, &mut page) {
                            Ok(0) => return Ok(total),
                            Ok(n) => total += n,
                            Err(e) => return Err(FaultError::Serve(e)),
                        }
                    }
                })
                .await
                .map_err(FaultError::Died)??;
                tracing::debug!(function = %function, zygote, served, "served page faults of a sleeping zygote");
                guard.clear_ready();
            }
        }
    }
}
