//! Hibernation of one zygote, daemon side: asking it to write its memory
//! to a snapshot and drop it, and waking it (it maps the snapshot back
//! before its next clone) — or, in reclaim mode, only remembering that the
//! kernel was asked to reclaim. Its page faults meanwhile: `faults`; what
//! it keeps for the daemon while it sleeps: `kept`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fnhost_sandbox::sys;
use fnhost_snapshot::{
    ClosedSnapshot, FileId, RestoreError, SharedBase, SharedRun, Snapshot, WakeStats,
};
use tokio::task::JoinError;

use crate::control::Received;
use crate::protocol::{DaemonMessage, ZygoteMessage};

use super::channel::{recv_msg, send_bytes, send_msg, Channel};
use super::faults::{serve_asleep, FaultError};
use super::kept::{take_back, Kept, TakenBack};
use super::zygote::ZygoteHandle;

/// Why a zygote could not be hibernated. Unless it says the zygote was
/// killed, the zygote keeps serving as it was.
#[derive(Debug, thiserror::Error)]
pub enum HibernateError {
    #[error("the zygote has exited")]
    Exited,
    #[error("cannot create snapshot {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot reopen snapshot {path}: {source}")]
    Reopen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot reach the zygote: {0}")]
    Send(#[source] io::Error),
    /// The zygote reported the failure itself (it stays awake).
    #[error("{message}")]
    Refused { message: String },
    #[error("unexpected reply to hibernate: {0}")]
    Unexpected(String),
    #[error("cannot size snapshot {path}: {source}")]
    Size {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// It may be stuck half-way and cannot be trusted again: it was killed.
    #[error("the zygote did not finish hibernating within {} s", .0.as_secs())]
    Timeout(Duration),
    /// Its memory is gone and the snapshot unusable: it was killed.
    #[error("cannot seal snapshot {path}: {source}")]
    Seal {
        path: PathBuf,
        #[source]
        source: RestoreError,
    },
    #[error("snapshot sealing failed: {0}")]
    SealTask(#[source] JoinError),
    /// Serving its page faults during the hibernation failed: it was killed.
    #[error("serving the zygote's page faults while it hibernated failed: {0}")]
    Faults(#[source] FaultError),
}

/// Why a hibernated zygote could not be woken (it is then stopped).
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    #[error("serving the sleeping zygote's page faults failed: {0}")]
    Faults(#[source] FaultError),
    #[error("the page-fault server died: {0}")]
    FaultServerDied(#[source] JoinError),
    #[error("cannot reach the hibernated zygote: {0}")]
    Unreachable(#[source] std::io::Error),
    #[error("cannot take the hibernated zygote's channel and userfaultfd back: {0}")]
    TakeBack(String),
    #[error("restoring the zygote's memory failed: {0}")]
    Restore(#[source] RestoreError),
    #[error("cannot map the shared snapshot base: {0}")]
    Base(#[source] std::io::Error),
    #[error("the zygote did not map its snapshot back: {0}")]
    Remap(String),
    #[error("the zygote did not map its snapshot back within {} s", .0.as_secs())]
    Deadline(Duration),
}

/// How long a zygote may take to write its snapshot, or to be woken.
const HIBERNATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A wake-up that preceded a clone.
#[derive(Debug, Clone)]
pub struct Woken {
    /// Whole wake-up, from the request to the zygote's `woken`.
    pub wake_us: u64,
    /// Restore statistics (snapshot mode only).
    pub restore: Option<WakeStats>,
}

/// What hibernating a zygote gave back (zero in reclaim mode, which does
/// not know).
#[derive(Debug, Clone, Default)]
pub struct Hibernation {
    /// Bytes of memory written to the snapshot (non-zero pages).
    pub snapshot_bytes: u64,
    /// Bytes of address space dropped.
    pub dropped_bytes: u64,
}

/// Where the page cache of a zygote's snapshot is sampled, with the
/// snapshot's layout length.
pub(super) enum SnapshotCache {
    /// Asleep: by the file's name (its descriptor is closed meanwhile).
    Named(PathBuf, u64),
    /// Mapped back to keep a sleeping pool's ready clones: the open file
    /// (its name is gone).
    Open(Arc<std::fs::File>, u64),
}

/// Why a zygote is asleep.
pub(super) enum Sleep {
    /// Its memory is in a snapshot; pages come back through the
    /// userfaultfd, which only the zygote holds while it sleeps (as
    /// descriptor `uffd`): the wake-up takes a copy back and serves it.
    Snapshot {
        /// Closed while it sleeps, like the uffd and the channel: a host of
        /// thousands of hibernated functions would hold descriptors for each.
        snapshot: ClosedSnapshot,
        /// Its userfaultfd and the daemon's ends of its channel and output.
        kept: Box<Kept>,
        prefetch: bool,
        /// Pages it maps from its sharing group's base.
        shared: Option<Box<SharedSleep>>,
    },
    /// The kernel was asked to reclaim its cgroup's memory; pages fault
    /// back in by themselves.
    Reclaimed,
}

/// A sleeping zygote's share of its group's base (see
/// `fnhost_snapshot::shared`): the runs of identical pages its wake-up
/// maps from it, and the wake-up message that carries them, built when the
/// snapshot is sealed rather than on the request's path.
pub(super) struct SharedSleep {
    base: Arc<SharedBase>,
    runs: Vec<SharedRun>,
    wake_message: Vec<u8>,
}

impl SharedSleep {
    fn new(base: Arc<SharedBase>, runs: Vec<SharedRun>) -> SharedSleep {
        SharedSleep {
            wake_message: crate::protocol::wake_message(&runs),
            base,
            runs,
        }
    }
}

impl ZygoteHandle {
    /// True while the zygote hibernates.
    pub fn is_asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }

    /// Data bytes of the snapshot the zygote's memory is in: while it
    /// hibernates, and after a wake-up maps it back (until it hibernates
    /// again).
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of that snapshot in the page cache now (reclaimable; charged
    /// to the daemon, see `fnhost_snapshot::snapshot`).
    pub fn snapshot_cached_bytes(&self) -> u64 {
        let held = self.snapshot_file.lock().unwrap_or_else(|e| e.into_inner());
        let cached = |file: BorrowedFd<'_>, layout: u64| {
            sys::fd::cached_pages(file, 0, layout)
                .map_or(0, |pages| pages * fnhost_snapshot::page_size())
        };
        match held.as_ref() {
            None => 0,
            Some(SnapshotCache::Open(file, layout)) => cached(file.as_fd(), *layout),
            // Gone (woken and unlinked meanwhile): nothing cached.
            Some(SnapshotCache::Named(path, layout)) => {
                std::fs::File::open(path).map_or(0, |file| cached(file.as_fd(), *layout))
            }
        }
    }

    /// Bytes of its memory mapped from its sharing group's base rather
    /// than its own snapshot (0 outside a group).
    pub fn snapshot_shared_bytes(&self) -> u64 {
        self.snapshot_shared_bytes.load(Ordering::Relaxed)
    }

    /// Hibernates the zygote with a snapshot at `path`: it creates its own
    /// (user-mode-only) userfaultfd and hands it over, writes its private
    /// memory to the file and drops it. With `base` (its sharing group's),
    /// pages identical to the base's are mapped from the base on wake-up.
    /// `Ok(None)`: it already sleeps.
    pub async fn hibernate_snapshot(
        &self,
        path: PathBuf,
        prefetch: bool,
        base: Option<Arc<SharedBase>>,
    ) -> Result<Option<Hibernation>, HibernateError> {
        let mut channel = self.control.lock().await;
        if channel.sleep.is_some() {
            return Ok(None);
        }
        if !self.is_alive() {
            return Err(HibernateError::Exited);
        }
        // The output pipe's read end goes to the zygote too: nothing writes
        // while it sleeps (its clones were stopped; none is forked before
        // the wake-up takes the pipe back). `None`: its output has ended.
        let forwarding = self.output.lock().unwrap_or_else(|e| e.into_inner()).take();
        let output = match forwarding {
            Some(forwarding) => forwarding.stop().await,
            None => None,
        };
        let slept = self
            .hibernate_snapshot_locked(&mut channel, path, prefetch, base, output.as_ref())
            .await;
        match (&slept, output) {
            // The zygote keeps the pipe; the daemon's copy goes.
            (Ok(Some(_)), _) => self.keeps_channel.store(true, Ordering::SeqCst),
            (_, Some(output)) => self.forward(output),
            (_, None) => {}
        }
        slept
    }

    /// Forwards the zygote's output again from `pipe` (its read end).
    fn forward(&self, pipe: OwnedFd) {
        match super::output::forward_output(pipe, self.function.clone(), self.tail.clone()) {
            Ok(forwarding) => {
                *self.output.lock().unwrap_or_else(|e| e.into_inner()) = Some(forwarding)
            }
            Err(e) => {
                tracing::warn!(function = %self.function, zygote = self.id, error = %e, "cannot forward the zygote's output any more")
            }
        }
    }

    /// [`Self::hibernate_snapshot`] with the channel locked and the output
    /// forwarder stopped (`output`: the pipe's read end, if it is open).
    async fn hibernate_snapshot_locked(
        &self,
        channel: &mut Channel,
        path: PathBuf,
        prefetch: bool,
        base: Option<Arc<SharedBase>>,
        output: Option<&OwnedFd>,
    ) -> Result<Option<Hibernation>, HibernateError> {
        let mut snapshot =
            Snapshot::create(path.clone()).map_err(|source| HibernateError::Create {
                path: path.clone(),
                source,
            })?;
        // The zygote gets the base read-only: it maps it, never writes it.
        let base_fd = match &base {
            Some(base) => Some(base.read_only().map_err(|source| HibernateError::Reopen {
                path: base.path().to_path_buf(),
                source,
            })?),
            None => None,
        };
        let socket = channel.fd().map_err(HibernateError::Send)?;
        let control_id = FileId::of(socket.get_ref().as_fd()).map_err(HibernateError::Send)?;
        let output_id = match output {
            Some(pipe) => Some(FileId::of(pipe.as_fd()).map_err(HibernateError::Send)?),
            None => None,
        };
        let mut fds = vec![snapshot.file().as_raw_fd(), socket.as_raw_fd()];
        fds.extend(output.map(AsRawFd::as_raw_fd));
        fds.extend(base_fd.as_ref().map(AsRawFd::as_raw_fd));
        let request = DaemonMessage::Hibernate {
            output: output.is_some(),
            base: base_fd.is_some(),
        };
        let file = snapshot.shared_file();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let function = self.function.clone();
        let id = self.id;
        let pidfd = self.pidfd.clone();
        let exchange = async {
            send_msg(socket, &request, &fds)
                .await
                .map_err(HibernateError::Send)?;
            let (regions, uffd, kept) = match recv_msg(socket).await {
                Ok(Received::Message(
                    ZygoteMessage::Hibernating {
                        regions,
                        uffd: zygote_uffd,
                        control,
                        output: zygote_output,
                    },
                    mut fds,
                )) if fds.len() == 1 && zygote_output.is_some() == output.is_some() => (
                    regions,
                    fds.remove(0),
                    (zygote_uffd, control, zygote_output),
                ),
                Ok(Received::Message(ZygoteMessage::HibernateFailed { message }, _)) => {
                    return Err(HibernateError::Refused { message })
                }
                other => return Err(HibernateError::Unexpected(format!("{other:?}"))),
            };
            // Trailing zero pages stay holes instead of past-EOF reads; the
            // sparse tail covers mremap growth after the wake-up's remap.
            let len = fnhost_snapshot::asleep::layout_len(&regions) + fnhost_snapshot::GROWTH_TAIL;
            file.set_len(len).map_err(|source| HibernateError::Size {
                path: path.clone(),
                source,
            })?;
            // Faults are answered from the moment the pages may be gone
            // until the snapshot is sealed.
            let server = tokio::spawn(serve_asleep(
                uffd,
                file,
                regions.clone(),
                stopped,
                function,
                id,
                pidfd,
            ));
            match recv_msg(socket).await {
                Ok(Received::Message(
                    ZygoteMessage::Hibernated {
                        pages_written: _,
                        bytes_dropped,
                    },
                    _,
                )) => Ok((regions, (server, stop), kept, bytes_dropped)),
                Ok(Received::Message(ZygoteMessage::HibernateFailed { message }, _)) => {
                    Err(HibernateError::Refused { message })
                }
                other => Err(HibernateError::Unexpected(format!("{other:?}"))),
            }
        };
        let (regions, (server, stop), (zygote_uffd, zygote_control, zygote_output), dropped_bytes) =
            match tokio::time::timeout(HIBERNATION_TIMEOUT, exchange).await {
                Ok(Ok(done)) => done,
                Ok(Err(message)) => return Err(message),
                Err(_) => {
                    // It may be stuck half-way: it cannot be trusted again.
                    self.kill();
                    return Err(HibernateError::Timeout(HIBERNATION_TIMEOUT));
                }
            };
        drop(base_fd);
        // fdatasync and dropping the file's page cache block: off the runtime.
        let (function, id) = (self.function.clone(), self.id);
        let sealed = tokio::task::spawn_blocking(move || {
            // The data is read back into the page cache below, once the
            // control lock is free: a wake-up meanwhile reads from disk.
            let sealed = match &base {
                // Compared while the zygote's writes are still cached.
                Some(_) => snapshot.seal_for_sharing(regions),
                None => snapshot.seal(regions, false),
            };
            let shared = match (&sealed, base) {
                (Ok(_), Some(base)) => match base.share(&mut snapshot) {
                    Ok(sharing) => Some((
                        Box::new(SharedSleep::new(base, sharing.runs)),
                        sharing.shared_bytes,
                    )),
                    Err(e) => {
                        // The snapshot keeps every page: nothing shared.
                        snapshot.drop_cache();
                        tracing::warn!(function = %function, zygote = id, error = %e, "cannot share snapshot pages; this zygote keeps its own");
                        None
                    }
                },
                _ => None,
            };
            (snapshot, sealed, shared)
        })
        .await;
        let (snapshot, stats, shared) = match sealed {
            Ok((snapshot, Ok(stats), shared)) => (snapshot, stats, shared),
            Ok((_, Err(e), _)) => {
                // Its memory is gone and the snapshot unusable.
                self.kill();
                return Err(HibernateError::Seal { path, source: e });
            }
            Err(e) => {
                self.kill();
                return Err(HibernateError::SealTask(e));
            }
        };
        // The daemon's copy of the userfaultfd goes: a host of thousands of
        // hibernated functions would hold one each. The zygote keeps its
        // own until it is awake (see `fnhost_snapshot::hibernate`).
        let _ = stop.send(());
        match server.await {
            Ok(Ok(uffd)) => drop(uffd),
            // It was killed when the fault could not be served.
            Ok(Err(e)) => return Err(HibernateError::Faults(e)),
            Err(e) => {
                self.kill();
                return Err(HibernateError::Faults(FaultError::Died(e)));
            }
        }
        self.snapshot_bytes
            .store(stats.data_bytes, Ordering::Relaxed);
        let (shared, shared_bytes) = shared.map_or((None, 0), |(s, bytes)| (Some(s), bytes));
        self.snapshot_shared_bytes
            .store(shared_bytes, Ordering::Relaxed);
        if let Some(read_back) = snapshot.read_back() {
            let (function, id) = (self.function.clone(), self.id);
            let task = tokio::task::spawn_blocking(move || {
                if let Err(e) = read_back.run() {
                    tracing::warn!(function = %function, zygote = id, error = %e, "cannot read a snapshot back into the page cache; its wake-up will read from disk");
                }
            });
            *self.read_back.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
        let layout = fnhost_snapshot::asleep::layout_len(snapshot.regions());
        *self.snapshot_file.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(SnapshotCache::Named(snapshot.path().to_path_buf(), layout));
        // The read-back task keeps its own reference until it is done.
        let snapshot = match snapshot.close() {
            Ok(closed) => closed,
            Err(e) => {
                self.kill();
                return Err(HibernateError::Seal { path, source: e });
            }
        };
        // Likewise the daemon's end of the channel, which the zygote keeps
        // (and its output pipe: the caller closes the daemon's copy).
        channel.socket = None;
        channel.sleep = Some(Sleep::Snapshot {
            snapshot,
            kept: Box::new(Kept {
                uffd: zygote_uffd,
                control: (zygote_control, control_id),
                output: zygote_output.zip(output_id),
            }),
            prefetch,
            shared,
        });
        self.asleep.store(true, Ordering::SeqCst);
        Ok(Some(Hibernation {
            snapshot_bytes: stats.data_bytes,
            dropped_bytes,
        }))
    }

    /// Marks the zygote hibernated after its cgroup's memory was
    /// reclaimed (nothing to restore on wake-up). `false`: it already
    /// sleeps.
    pub async fn mark_reclaimed(&self) -> bool {
        let mut channel = self.control.lock().await;
        if channel.sleep.is_some() {
            return false;
        }
        channel.sleep = Some(Sleep::Reclaimed);
        self.asleep.store(true, Ordering::SeqCst);
        true
    }

    /// Maps a sleeping zygote's snapshot back ahead of any request, once
    /// the background read has put it in the page cache: its memory stays
    /// that clean page cache (charged to the daemon), and clones fork from
    /// it with no wake-up on their path. `Ok(None)`: it was not asleep. A
    /// failure kills the zygote, as for any wake-up.
    pub async fn settle(&self) -> Result<Option<Woken>, WakeError> {
        // Before taking the control lock: a request meanwhile may wake it.
        self.await_read_back().await;
        let mut channel = self.control.lock().await;
        self.wake_locked(&mut channel, true).await
    }

    /// Waits for the background read of the snapshot back into the page
    /// cache, if it still runs. A failed read only means pages come from
    /// disk.
    async fn await_read_back(&self) {
        let read_back = self
            .read_back
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = read_back {
            let _ = task.await;
        }
    }

    /// Wakes the zygote if it sleeps (the channel is locked by the caller).
    /// A failed wake-up kills the zygote: its memory cannot be trusted.
    /// `mapped_back`: it wakes to keep a sleeping pool's ready clones, whose
    /// memory stays the snapshot's page cache (sampled from then on).
    pub(super) async fn wake_locked(
        &self,
        channel: &mut Channel,
        mapped_back: bool,
    ) -> Result<Option<Woken>, WakeError> {
        let Some(sleep) = channel.sleep.take() else {
            return Ok(None);
        };
        let started = Instant::now();
        self.asleep.store(false, Ordering::SeqCst);
        let (snapshot, kept, prefetch, shared) = match sleep {
            Sleep::Reclaimed => {
                self.snapshot_bytes.store(0, Ordering::Relaxed);
                self.snapshot_shared_bytes.store(0, Ordering::Relaxed);
                return Ok(Some(Woken {
                    wake_us: 0,
                    restore: None,
                }));
            }
            Sleep::Snapshot {
                snapshot,
                kept,
                prefetch,
                shared,
            } => (snapshot, kept, prefetch, shared),
        };
        // The same file, as long as when it was sealed.
        let snapshot = match snapshot.reopen() {
            Ok(snapshot) => snapshot,
            Err(e) => return Err(self.wake_failed(WakeError::Restore(e))),
        };
        if let Some(shared) = &shared {
            if let Err(e) = shared.base.check_intact() {
                return Err(self.wake_failed(WakeError::Base(e)));
            }
        }
        // Woken right after hibernating: the rest of the data is read in
        // one sequential pass (tens of ms for 50 MiB) rather than faulted
        // in from disk page by page (the mapping is MADV_RANDOM).
        self.await_read_back().await;
        // Readahead of the data the kernel may have reclaimed since.
        let page = fnhost_snapshot::page_size();
        let read = Instant::now();
        let prefetched = match (&shared, prefetch) {
            (_, false) => 0,
            (None, true) => snapshot.prefetch(),
            (Some(s), true) => snapshot.prefetch() + s.base.prefetch(&s.runs),
        };
        let read = read.elapsed();
        // Its channel and userfaultfd come back from the zygote; its page
        // faults are served from here until it is awake.
        let uffd = match take_back(self.pid, &kept) {
            Ok(TakenBack {
                socket,
                uffd,
                output,
            }) => {
                channel.socket = Some(socket);
                self.keeps_channel.store(false, Ordering::SeqCst);
                if let Some(pipe) = output {
                    self.forward(pipe);
                }
                uffd
            }
            Err(e) => return Err(self.wake_failed(WakeError::TakeBack(e))),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve_asleep(
            uffd,
            snapshot.shared_file(),
            snapshot.regions().to_vec(),
            stopped,
            self.function.clone(),
            self.id,
            self.pidfd.clone(),
        ));
        // The zygote maps the snapshot back and answers; until then the
        // fault server answers any page it touches.
        let wake = shared
            .as_ref()
            .map_or(crate::protocol::WAKE_MESSAGE, |s| &s.wake_message);
        let socket = channel.fd().map_err(WakeError::Unreachable)?;
        if let Err(e) = send_bytes(socket, wake).await {
            return Err(self.wake_failed(WakeError::Unreachable(e)));
        }
        let woken = tokio::time::timeout(HIBERNATION_TIMEOUT, recv_msg(socket)).await;
        let mapped_bytes = match woken {
            Ok(Ok(Received::Message(ZygoteMessage::Woken { mapped_bytes }, _))) => mapped_bytes,
            Ok(other) => {
                let reason = match other {
                    Ok(Received::Closed) => "it exited".to_string(),
                    other => format!("unexpected reply {other:?}"),
                };
                return Err(self.wake_failed(WakeError::Remap(reason)));
            }
            Err(_) => return Err(self.wake_failed(WakeError::Deadline(HIBERNATION_TIMEOUT))),
        };
        // Every region is a file mapping now, registered nowhere: closing
        // the userfaultfd changes nothing, and clones may be forked.
        let _ = stop.send(());
        match server.await {
            Ok(Ok(uffd)) => drop(uffd),
            Ok(Err(e)) => return Err(self.wake_failed(WakeError::Faults(e))),
            Err(e) => return Err(self.wake_failed(WakeError::FaultServerDied(e))),
        }
        // Its next hibernation compares with the base it maps.
        *self.mapped_base.lock().unwrap_or_else(|e| e.into_inner()) = shared.map(|s| s.base);
        let layout = fnhost_snapshot::asleep::layout_len(snapshot.regions());
        *self.snapshot_file.lock().unwrap_or_else(|e| e.into_inner()) =
            mapped_back.then(|| SnapshotCache::Open(snapshot.shared_file(), layout));
        // The zygote's mapping keeps the file's data; its name goes, off
        // the request's path.
        tokio::task::spawn_blocking(move || drop(snapshot));
        Ok(Some(Woken {
            wake_us: started.elapsed().as_micros() as u64,
            restore: Some(WakeStats {
                duration: started.elapsed(),
                read,
                prefetched_pages: prefetched / page,
                mapped_bytes,
                ..WakeStats::default()
            }),
        }))
    }

    /// Kills a zygote whose memory could not be restored (a process blocked
    /// on a userfaultfd fault still dies on SIGKILL) and says why.
    fn wake_failed(&self, failure: WakeError) -> WakeError {
        tracing::error!(function = %self.function, zygote = self.id, error = %failure, "wake-up failed; stopping the zygote");
        self.kill();
        failure
    }
}
