//! One clone, seen from the daemon ([`CloneHandle`]): created from a zygote
//! into a pooled cgroup, waits (already isolated) for exactly one
//! invocation, answers it, exits. Teardown kills it (its one invocation is
//! over), waits for the pid namespace to be gone and the cgroup to be empty,
//! then the cgroup goes back to the pool.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fnhost_sandbox::cgroup::Cgroup;
use fnhost_sandbox::sys;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::protocol::{
    decode_frame_rest, encode_frame, frame_len, Frame, FrameError, FrameKind, InvokeMeta,
    PageFaults, ResultMeta, SetupFailure, SetupTimes,
};

use super::fd;
use super::sleep::Woken;
use super::zygote::{CloneError, ZygoteHandle};

/// Why a new clone did not report `Ready`.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Socket(io::Error),
    /// Its first frame could not be read.
    #[error("{}", .0.describe())]
    Read(ReadError),
    #[error("clone setup failed at '{}': {}", .0.step, .0.message)]
    Failed(SetupFailure),
    #[error("unexpected {0:?} frame from a new clone")]
    Unexpected(FrameKind),
    #[error("clone did not finish setup within {} s", SETUP_TIMEOUT.as_secs())]
    Timeout,
}

/// Room for frame metadata on top of a response body.
const META_ALLOWANCE: usize = 64 * 1024;
/// How long a clone may take to set itself up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long teardown waits for a sandbox to vanish before escalating.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled cgroup with the OOM-kill count seen when it was last released.
#[derive(Debug)]
pub struct Slot {
    pub cgroup: Cgroup,
    pub oom_seen: u64,
}

/// A clone that is set up and waiting for its invocation.
pub struct CloneHandle {
    pub id: u64,
    stream: UnixStream,
    pidfd: AsyncFd<OwnedFd>,
    pub slot: Slot,
    pub zygote: Arc<ZygoteHandle>,
    pub fork_us: u64,
    pub setup: SetupTimes,
    /// Time from the clone request to the clone's `Ready`, as seen here
    /// (including a wake-up of the zygote, if there was one).
    pub create_us: u64,
    /// The zygote was hibernated and woken for this clone.
    pub woke: Option<Woken>,
}

/// How an invocation inside a sandbox ended.
#[derive(Debug)]
pub enum RunOutcome {
    Result {
        body: Vec<u8>,
        handler_us: u64,
        page_faults: Option<PageFaults>,
    },
    FunctionError {
        body: Vec<u8>,
        handler_us: u64,
        page_faults: Option<PageFaults>,
    },
    Timeout,
    TooLarge {
        size: usize,
    },
    /// The clone died or broke protocol without answering.
    NoResponse {
        detail: String,
    },
}

impl RunOutcome {
    /// The clone's page faults, when it answered and its runtime counts them.
    pub fn page_faults(&self) -> Option<PageFaults> {
        match self {
            RunOutcome::Result { page_faults, .. }
            | RunOutcome::FunctionError { page_faults, .. } => *page_faults,
            _ => None,
        }
    }
}

async fn read_frame(stream: &mut UnixStream, limit: usize) -> Result<Frame, ReadError> {
    let mut prefix = [0u8; 4];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(ReadError::Io)?;
    let len = frame_len(prefix, limit).map_err(|e| match e {
        FrameError::TooLarge { len, .. } => ReadError::TooLarge(len),
        other => ReadError::Protocol(other),
    })?;
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await.map_err(ReadError::Io)?;
    decode_frame_rest(rest).map_err(ReadError::Protocol)
}

/// Why a frame from a clone could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    TooLarge(usize),
    Protocol(FrameError),
}

impl ReadError {
    /// The text a failed setup has always reported for this error (the
    /// debug form of the enum it replaced); users see it.
    fn describe(&self) -> String {
        match self {
            ReadError::Io(e) => format!("Io({e:?})"),
            ReadError::TooLarge(len) => format!("TooLarge({len})"),
            ReadError::Protocol(e) => format!("Protocol({:?})", e.to_string()),
        }
    }
}

impl CloneHandle {
    /// Clones a sandbox from `zygote` into `slot` and waits for it to be ready.
    pub async fn create(
        id: u64,
        zygote: Arc<ZygoteHandle>,
        slot: Slot,
        writable_bytes: u64,
    ) -> Result<CloneHandle, (Slot, CloneError)> {
        let started = Instant::now();
        let (ours, theirs) = match std::os::unix::net::UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => return Err((slot, CloneError::Socket(e))),
        };
        let theirs = OwnedFd::from(theirs);
        let request = zygote.clone_request(id, writable_bytes);
        let cloned = zygote.clone_sandbox(request, &theirs).await;
        // The clone has its own copy now.
        drop(theirs);
        let cloned = match cloned {
            Ok(c) => c,
            Err(e) => return Err((slot, e)),
        };
        let pidfd = match fd::register(cloned.pidfd) {
            Ok(fd) => fd,
            Err(e) => return Err((slot, CloneError::WatchClone(e))),
        };
        // The daemon, not the zygote, moves the clone into its cgroups:
        // no cgroup descriptor ever enters a process that runs function
        // code. The clone sets itself up meanwhile; its function code runs
        // only once the invocation is sent, after this. (A v1 migration may
        // wait for an RCU grace period: off the async threads.)
        let attach_started = Instant::now();
        let attach_error = match cloned.host_pid {
            Some(host_pid) => {
                let cgroup = slot.cgroup.clone();
                match tokio::task::spawn_blocking(move || cgroup.attach(host_pid)).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(CloneError::Cgroup(e)),
                    Err(e) => Some(CloneError::Attach(e.to_string())),
                }
            }
            None => Some(CloneError::Attach(
                "it exited before it could be moved".into(),
            )),
        };
        let cgroup_us = attach_started.elapsed().as_micros() as u64;
        // A clone whose setup failed has exited already: its own report
        // (read below) says more than the failed attach.
        let exited = || matches!(sys::poll_readable(pidfd.get_ref().as_fd(), 0), Ok(true));
        let attach_error = match attach_error {
            Some(error) if !exited() => {
                let _ = sys::pidfd_send_signal(pidfd.get_ref().as_fd(), libc::SIGKILL);
                return Err((slot, error));
            }
            other => other,
        };
        let setup = async {
            ours.set_nonblocking(true).map_err(SetupError::Socket)?;
            let mut stream = UnixStream::from_std(ours).map_err(SetupError::Socket)?;
            let frame = read_frame(&mut stream, META_ALLOWANCE)
                .await
                .map_err(SetupError::Read)?;
            match frame.kind {
                FrameKind::Ready => {
                    let mut times: SetupTimes =
                        serde_json::from_slice(&frame.meta).unwrap_or_default();
                    times.cgroup_us = cgroup_us;
                    Ok((stream, times))
                }
                FrameKind::SetupFailed => {
                    let f: SetupFailure =
                        serde_json::from_slice(&frame.meta).unwrap_or(SetupFailure {
                            step: "unknown".into(),
                            message: "unreadable".into(),
                        });
                    Err(SetupError::Failed(f))
                }
                other => Err(SetupError::Unexpected(other)),
            }
        };
        let failed = match tokio::time::timeout(SETUP_TIMEOUT, setup).await {
            Ok(Ok(_)) if attach_error.is_some() => {
                let _ = sys::pidfd_send_signal(pidfd.get_ref().as_fd(), libc::SIGKILL);
                let error = attach_error.expect("checked: some");
                return Err((slot, error));
            }
            Ok(Ok((stream, setup))) => {
                return Ok(CloneHandle {
                    id,
                    stream,
                    pidfd,
                    slot,
                    zygote,
                    fork_us: cloned.fork_us,
                    setup,
                    create_us: started.elapsed().as_micros() as u64,
                    woke: cloned.woke,
                })
            }
            Ok(Err(e)) => e,
            Err(_) => SetupError::Timeout,
        };
        let _ = sys::pidfd_send_signal(pidfd.get_ref().as_fd(), libc::SIGKILL);
        Err((slot, failed.into()))
    }

    /// True while the clone process exists and its zygote is alive.
    pub fn is_alive(&self) -> bool {
        if !self.zygote.is_alive() {
            return false;
        }
        // A pidfd turns readable when its process exits.
        matches!(
            sys::poll_readable(self.pidfd.get_ref().as_fd(), 0),
            Ok(false)
        )
    }

    /// Sends the invocation and waits for its answer until `deadline`.
    pub async fn run(
        &mut self,
        meta: &InvokeMeta,
        payload: &[u8],
        deadline: Instant,
        max_response: usize,
    ) -> RunOutcome {
        let meta = serde_json::to_vec(meta).unwrap_or_default();
        let mut header = encode_frame(FrameKind::Invoke, &meta, &[]);
        let total = 1 + 4 + meta.len() + payload.len();
        header[..4].copy_from_slice(&(total as u32).to_le_bytes());
        let exchange = async {
            self.stream
                .write_all(&header)
                .await
                .map_err(ReadError::Io)?;
            self.stream
                .write_all(payload)
                .await
                .map_err(ReadError::Io)?;
            read_frame(&mut self.stream, max_response + META_ALLOWANCE).await
        };
        let frame = match tokio::time::timeout_at(deadline.into(), exchange).await {
            Err(_) => {
                self.kill();
                return RunOutcome::Timeout;
            }
            Ok(Err(ReadError::TooLarge(size))) => {
                self.kill();
                return RunOutcome::TooLarge { size };
            }
            Ok(Err(ReadError::Io(e))) => {
                return RunOutcome::NoResponse {
                    detail: format!("invocation channel closed ({e})"),
                }
            }
            Ok(Err(ReadError::Protocol(e))) => {
                self.kill();
                return RunOutcome::NoResponse {
                    detail: format!("protocol error: {e}"),
                };
            }
            Ok(Ok(frame)) => frame,
        };
        let meta = serde_json::from_slice::<ResultMeta>(&frame.meta).unwrap_or_default();
        let (handler_us, page_faults) = (meta.handler_us, meta.page_faults);
        if frame.body.len() > max_response {
            return RunOutcome::TooLarge {
                size: frame.body.len(),
            };
        }
        match frame.kind {
            FrameKind::Result => RunOutcome::Result {
                body: frame.body,
                handler_us,
                page_faults,
            },
            FrameKind::Error => RunOutcome::FunctionError {
                body: frame.body,
                handler_us,
                page_faults,
            },
            other => {
                self.kill();
                RunOutcome::NoResponse {
                    detail: format!("unexpected {other:?} frame"),
                }
            }
        }
    }

    /// SIGKILL the clone (PID 1 of its namespace: everything in it dies).
    pub fn kill(&self) {
        let _ = sys::pidfd_send_signal(self.pidfd.get_ref().as_fd(), libc::SIGKILL);
    }

    /// Kills the clone, waits until it and everything in its cgroup is gone, then
    /// returns its slot with the current OOM count, or `None` if the cgroup
    /// could not be emptied (it is then not reused).
    pub async fn teardown(self) -> Option<Slot> {
        let CloneHandle {
            id,
            stream,
            pidfd,
            mut slot,
            zygote,
            ..
        } = self;
        drop(stream);
        // Its one invocation is over (answered, failed or abandoned): what
        // it still runs must not keep the CPU past the concurrency permit.
        let _ = sys::pidfd_send_signal(pidfd.get_ref().as_fd(), libc::SIGKILL);
        match tokio::time::timeout(EXIT_TIMEOUT, pidfd.readable()).await {
            Ok(Ok(mut guard)) => guard.clear_ready(),
            _ => tracing::warn!(
                sandbox = id,
                "a killed clone did not exit within the teardown time"
            ),
        }
        drop(zygote);
        // The pid namespace is gone once its PID 1 has exited; processes
        // still listed are exiting. Wait briefly, then force.
        let mut waited = Duration::ZERO;
        let step = Duration::from_micros(200);
        loop {
            match slot.cgroup.is_empty() {
                Ok(true) => break,
                Ok(false) if waited < EXIT_TIMEOUT => {
                    if waited > Duration::from_millis(100) {
                        let _ = slot.cgroup.kill_all();
                    }
                    tokio::time::sleep(step).await;
                    waited += step;
                }
                Ok(false) | Err(_) => {
                    tracing::error!(
                        cgroup = slot.cgroup.name(),
                        "sandbox cgroup did not empty; not reusing it"
                    );
                    return None;
                }
            }
        }
        slot.oom_seen = slot.cgroup.oom_kills().unwrap_or(slot.oom_seen);
        Some(slot)
    }
}
