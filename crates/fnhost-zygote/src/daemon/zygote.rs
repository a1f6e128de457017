//! A zygote seen from the daemon ([`ZygoteHandle`]): its process (reaped
//! through a pidfd), its control channel (one request at a time, in order)
//! and its output. Dropping the last handle kills the zygote — and with it,
//! through its pid namespace, every clone — and removes its snapshot.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fnhost_sandbox::sys;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::clone_request::CloneRequest;
use crate::control::Received;
use crate::protocol::{DaemonMessage, InitFailure, ZygoteMessage};
use crate::reap::IMPORT_DONE;
use crate::spec::ZygoteSpec;

use super::channel::{recv_msg, send_msg, Channel};
use super::fd;
use super::output::{forward_output, Forwarding, OutputTail};
use super::sleep::{WakeError, Woken};
use super::spawn::{spawn_zygote, IdMap, SpawnError, ZygoteProcess};

/// Why a zygote did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The zygote reported a structured failure (mounts, runtime, import).
    #[error("zygote init failed ({}): {}", .0.stage, .0)]
    Init(InitFailure),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// Its pidfd, control socket or output could not be watched.
    #[error(transparent)]
    Watch(io::Error),
    #[error("the runtime did not become ready within {} ms; output: {output}", .timeout.as_millis())]
    Timeout { timeout: Duration, output: String },
    #[error("unexpected first message from zygote: {0:?}")]
    Unexpected(Box<ZygoteMessage>),
    /// It died (or its channel failed) without saying why.
    #[error("the zygote exited before it was ready; output: {output}")]
    Exited { output: String },
}

impl StartError {
    /// The failure to report for this error: the zygote's own, or one of
    /// stage "sandbox", type `ZygoteStartFailed`, naming what went wrong.
    pub fn into_init_failure(self) -> InitFailure {
        match self {
            StartError::Init(failure) => failure,
            other => InitFailure::new("sandbox", "ZygoteStartFailed", other.to_string()),
        }
    }
}

/// How long a zygote may take to answer a clone request (fork and reply;
/// a wake-up before it has its own deadline). Generous: a fork of a large
/// heap on a loaded machine takes milliseconds, not seconds.
pub const CLONE_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a clone request failed.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// The zygote was hibernated and could not be woken; it was stopped.
    #[error("wake-up failed: {0}")]
    WakeFailed(#[source] WakeError),
    #[error("the zygote has exited")]
    ZygoteGone,
    #[error("cannot reach the zygote: {0}")]
    Send(#[source] io::Error),
    /// The zygote answered `CloneFailed` (e.g. `clone3` failed).
    #[error("{message}")]
    Refused { message: String },
    #[error("unexpected reply from zygote: {0:?}")]
    Unexpected(Box<ZygoteMessage>),
    #[error("the zygote exited")]
    Closed,
    #[error("zygote control channel failed: {0}")]
    Receive(#[source] io::Error),
    /// The zygote did not answer a clone request in time; it was killed
    /// (a replacement starts) so that nothing waits on it again.
    #[error("the zygote did not answer a clone request within {} ms and was killed", .0.as_millis())]
    Silent(Duration),
    #[error("cannot create invocation socket: {0}")]
    Socket(#[source] io::Error),
    /// The zygote named a process that is not a fresh clone of it; the
    /// zygote (which runs code the function controls) was killed.
    #[error("the zygote reported a clone that is not one ({0}) and was killed")]
    Forged(String),
    #[error(transparent)]
    Cgroup(#[from] fnhost_sandbox::cgroup::CgroupError),
    #[error("cannot move the clone into its cgroup: {0}")]
    Attach(String),
    #[error("cannot watch clone pidfd: {0}")]
    WatchClone(#[source] io::Error),
    #[error(transparent)]
    Setup(#[from] super::clone::SetupError),
}

/// A clone created by a zygote.
#[derive(Debug)]
pub struct Cloned {
    /// Its pid in the daemon's pid namespace (what cgroups are written);
    /// `None`: it has exited already (its setup failed).
    pub host_pid: Option<i32>,
    /// Its pid in the zygote's pid namespace.
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub fork_us: u64,
    /// Set when the zygote was hibernated and had to be woken first.
    pub woke: Option<Woken>,
}

/// Where a new zygote goes: its cgroups and, optionally, a user namespace.
pub struct Placement<'a> {
    /// cgroup2 directory to clone into.
    pub cgroup_dir: Option<&'a OwnedFd>,
    /// v1 `cgroup.procs` files the zygote writes itself into.
    pub v1_procs: &'a [OwnedFd],
    pub userns: Option<IdMap>,
}

/// A running, ready zygote.
pub struct ZygoteHandle {
    pub id: u64,
    pub function: Arc<str>,
    pub pid: i32,
    pub import_us: u64,
    pub started_in: Duration,
    pub(super) pidfd: Arc<AsyncFd<OwnedFd>>,
    pub(super) control: tokio::sync::Mutex<Channel>,
    alive: Arc<AtomicBool>,
    /// Mirrors `Channel::sleep.is_some()` for lock-free status reads.
    pub(super) asleep: AtomicBool,
    /// Mirrors `Channel::socket.is_none()`: the hibernated zygote keeps the
    /// daemon's end of its channel.
    pub(super) keeps_channel: AtomicBool,
    /// The forwarder of its output; `None` while the hibernated zygote
    /// keeps the pipe's read end (or once its output ended).
    pub(super) output: std::sync::Mutex<Option<Forwarding>>,
    /// Its last output lines, for error messages.
    pub(super) tail: OutputTail,
    /// Data bytes of the snapshot its memory is in (0 before the first).
    pub(super) snapshot_bytes: AtomicU64,
    /// Of those, bytes mapped from its sharing group's base instead.
    pub(super) snapshot_shared_bytes: AtomicU64,
    /// The sharing group's base its memory maps since its last wake-up:
    /// held so that its next hibernation compares with the same base.
    pub(super) mapped_base: std::sync::Mutex<Option<Arc<fnhost_snapshot::SharedBase>>>,
    /// Where that snapshot's page cache is sampled.
    pub(super) snapshot_file: std::sync::Mutex<Option<super::sleep::SnapshotCache>>,
    /// The background read of the snapshot back into the page cache, while
    /// it runs (see `settle`).
    pub(super) read_back: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    carry: Vec<String>,
}

impl std::fmt::Debug for ZygoteHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote")
            .field("id", &self.id)
            .field("function", &self.function)
            .field("pid", &self.pid)
            .finish()
    }
}

/// Reaps the zygote when it exits, marks it dead and wakes its pool.
fn watch_exit(
    pidfd: Arc<AsyncFd<OwnedFd>>,
    alive: Arc<AtomicBool>,
    function: Arc<str>,
    id: u64,
    pool: Arc<Notify>,
) {
    tokio::spawn(async move {
        if let Ok(mut guard) = pidfd.readable().await {
            guard.clear_ready();
        }
        let was_alive = alive.swap(false, Ordering::SeqCst);
        let status = sys::waitid_pidfd(pidfd.get_ref().as_fd(), false);
        if was_alive {
            tracing::warn!(function = %function, zygote = id, ?status, "zygote exited");
            metrics::counter!("fnhost_zygote_exits_total", "function" => function.to_string())
                .increment(1);
        }
        pool.notify_one();
    });
}

impl ZygoteHandle {
    /// Starts a zygote, answers its request for settings and waits until
    /// its runtime has imported the function (at most `timeout` in all).
    pub async fn start(
        id: u64,
        function: Arc<str>,
        spec: &ZygoteSpec,
        placement: Placement<'_>,
        timeout: Duration,
        pool: Arc<Notify>,
    ) -> Result<Arc<ZygoteHandle>, StartError> {
        let started = Instant::now();
        let ZygoteProcess {
            pid,
            pidfd,
            control,
            output,
        } = spawn_zygote(
            spec,
            placement.cgroup_dir,
            placement.v1_procs,
            placement.userns,
        )?;
        let tail = OutputTail::default();
        let alive = Arc::new(AtomicBool::new(true));
        let pidfd = Arc::new(fd::register(pidfd).map_err(StartError::Watch)?);
        watch_exit(pidfd.clone(), alive.clone(), function.clone(), id, pool);
        let forwarding =
            forward_output(output, function.clone(), tail.clone()).map_err(StartError::Watch)?;
        let control = fd::register(control).map_err(StartError::Watch)?;
        let kill = |pidfd: &AsyncFd<OwnedFd>| {
            let _ = sys::pidfd_send_signal(pidfd.get_ref().as_fd(), libc::SIGKILL);
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let import_us = loop {
            let received = match tokio::time::timeout_at(deadline, recv_msg(&control)).await {
                Ok(received) => received,
                Err(_) => {
                    kill(&pidfd);
                    return Err(StartError::Timeout {
                        timeout,
                        output: tail.text(),
                    });
                }
            };
            match received {
                Ok(Received::Message(ZygoteMessage::NeedSettings, _)) => {
                    let configure = DaemonMessage::Configure(spec.settings.clone());
                    // If it cannot be sent the zygote is gone: the next
                    // receive says so.
                    if let Err(e) = send_msg(&control, &configure, &[]).await {
                        tracing::debug!(function = %function, zygote = id, error = %e, "cannot send the zygote its settings");
                    }
                }
                Ok(Received::Message(ZygoteMessage::Ready { import_us }, _)) => {
                    // Checked here, not trusted to the zygote: its own
                    // check runs in a process the function's code had.
                    if let Err(message) = check_alone(pid, spec.settings.runtime_threads) {
                        kill(&pidfd);
                        return Err(StartError::Init(InitFailure::new(
                            "import",
                            "ZygoteNotAlone",
                            message,
                        )));
                    }
                    // PID 1 unmounts the import's /tmp (see `reap`); if it
                    // cannot be told, the zygote keeps it, nothing else.
                    if let Err(e) =
                        sys::pidfd_send_signal(pidfd.get_ref().as_fd(), IMPORT_DONE as i32)
                    {
                        tracing::debug!(function = %function, zygote = id, error = %e, "cannot tell the zygote its import is done");
                    }
                    break import_us;
                }
                Ok(Received::Message(ZygoteMessage::InitFailed(f), _)) => {
                    kill(&pidfd);
                    return Err(StartError::Init(f));
                }
                Ok(Received::Message(other, _)) => {
                    kill(&pidfd);
                    return Err(StartError::Unexpected(Box::new(other)));
                }
                Ok(Received::Closed) | Err(_) => {
                    kill(&pidfd);
                    // Give the output forwarder a moment to collect the last words.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    return Err(StartError::Exited {
                        output: tail.text(),
                    });
                }
            }
        };
        Ok(Arc::new(ZygoteHandle {
            id,
            function,
            pid,
            import_us,
            started_in: started.elapsed(),
            pidfd,
            control: tokio::sync::Mutex::new(Channel::new(control)),
            alive,
            asleep: AtomicBool::new(false),
            keeps_channel: AtomicBool::new(false),
            output: std::sync::Mutex::new(Some(forwarding)),
            tail,
            snapshot_bytes: AtomicU64::new(0),
            snapshot_shared_bytes: AtomicU64::new(0),
            mapped_base: std::sync::Mutex::new(None),
            snapshot_file: std::sync::Mutex::new(None),
            read_back: std::sync::Mutex::new(None),
            carry: spec.clone_carry(),
        }))
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Descriptors the daemon holds for it now: its pidfd, control socket
    /// and output pipe (not these two while it hibernates with a snapshot:
    /// it keeps the daemon's ends), and the snapshot file while its page
    /// cache is sampled through it (mapped back for a sleeping pool).
    pub fn descriptors(&self) -> usize {
        let socket = usize::from(!self.keeps_channel.load(Ordering::SeqCst));
        let output = usize::from(
            self.output
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some(),
        );
        let snapshot = usize::from(matches!(
            *self.snapshot_file.lock().unwrap_or_else(|e| e.into_inner()),
            Some(super::sleep::SnapshotCache::Open(..))
        ));
        1 + socket + output + snapshot
    }

    /// The request for clone `sandbox` of this zygote.
    pub fn clone_request(&self, sandbox: u64, writable_bytes: u64) -> CloneRequest {
        CloneRequest {
            sandbox,
            writable_bytes,
            carry: self.carry.clone(),
        }
    }

    /// Asks the zygote to clone a sandbox (waking it first if it sleeps).
    /// `invocation` (the clone's end of its socket) is only borrowed: the
    /// caller closes its copy once this returns.
    pub async fn clone_sandbox(
        &self,
        request: CloneRequest,
        invocation: &OwnedFd,
    ) -> Result<Cloned, CloneError> {
        if !self.is_alive() {
            return Err(CloneError::ZygoteGone);
        }
        let sandbox = request.sandbox;
        let raw = [invocation.as_raw_fd()];
        let msg = DaemonMessage::Clone { request };
        let mut channel = self.control.lock().await;
        let woke = self
            .wake_locked(&mut channel, false)
            .await
            .map_err(CloneError::WakeFailed)?;
        let control = channel.fd().map_err(CloneError::Send)?;
        // The zygote runs code the function controls: every wait on it has
        // a deadline, and a zygote that misses it is killed, not waited on.
        let exchange = async {
            send_msg(control, &msg, &raw)
                .await
                .map_err(CloneError::Send)?;
            recv_msg(control).await.map_err(CloneError::Receive)
        };
        let reply = match tokio::time::timeout(CLONE_REPLY_TIMEOUT, exchange).await {
            Ok(reply) => reply?,
            Err(_) => {
                tracing::warn!(function = %self.function, zygote = self.id, timeout_ms = CLONE_REPLY_TIMEOUT.as_millis() as u64,
                    "zygote did not answer a clone request; killing it");
                self.kill();
                return Err(CloneError::Silent(CLONE_REPLY_TIMEOUT));
            }
        };
        match reply {
            Received::Message(
                ZygoteMessage::Cloned {
                    sandbox: got,
                    pid,
                    fork_us,
                },
                mut fds,
            ) if got == sandbox && fds.len() == 1 => {
                let pidfd = fds.remove(0);
                match verify_clone(pidfd.as_fd(), pid) {
                    Ok(host_pid) => Ok(Cloned {
                        host_pid,
                        pid,
                        pidfd,
                        fork_us,
                        woke,
                    }),
                    Err(reason) => {
                        tracing::warn!(function = %self.function, zygote = self.id, %reason,
                            "zygote reported a clone that is not one; killing it");
                        self.kill();
                        Err(CloneError::Forged(reason))
                    }
                }
            }
            Received::Message(ZygoteMessage::CloneFailed { message, .. }, _) => {
                Err(CloneError::Refused { message })
            }
            Received::Message(other, _) => Err(CloneError::Unexpected(Box::new(other))),
            Received::Closed => Err(CloneError::Closed),
        }
    }

    /// Kills the zygote (and so every clone in its pid namespace).
    pub fn kill(&self) {
        if self.alive.swap(false, Ordering::SeqCst) {
            let _ = sys::pidfd_send_signal(self.pidfd.get_ref().as_fd(), libc::SIGKILL);
        }
    }
}

/// Checks that a zygote whose runtime just reported `Ready` is exactly its
/// init and one runtime with no threads beyond its own: a process or thread its import
/// left behind would outlive the import in a process that serves clones
/// (and see every clone request). `init` is init's pid in the daemon's pid
/// namespace. Orphans are reparented to init, so two passes over init's
/// and the runtime's children see any process that is alive throughout.
/// `allowed_threads` is the runtime's own (1, node: its idle ones).
fn check_alone(init: i32, allowed_threads: u64) -> Result<(), String> {
    let refuse = |what: String| {
        Err(format!(
            "the function {what} while being imported; a zygote must be alone when it forks: \
             start processes and threads inside the handler instead"
        ))
    };
    for _ in 0..2 {
        let read = |pid: i32| {
            super::kept::live_children(pid)
                .map_err(|e| format!("cannot list the zygote's processes: {e}"))
        };
        let runtime = match read(init)?[..] {
            [runtime] => runtime,
            ref others => {
                return refuse(format!(
                    "left {} process(es) running next to its runtime",
                    others.len().saturating_sub(1)
                ))
            }
        };
        let helpers = read(runtime)?;
        if !helpers.is_empty() {
            return refuse(format!("left {} child process(es) running", helpers.len()));
        }
        let threads = sys::thread_count_of(runtime)
            .map_err(|e| format!("cannot count the runtime's threads: {e}"))?;
        let allowed = allowed_threads.max(1);
        if threads > allowed {
            return refuse(format!("started {} extra thread(s)", threads - allowed));
        }
    }
    Ok(())
}

/// Checks that `pidfd` (sent by a zygote, which runs code the function
/// controls) is a fresh clone of it: a process whose pid in the zygote's
/// namespace is `pid` and which is pid 1 of a namespace of its own, so that
/// the daemon never moves or kills anything else by its word. Returns its
/// pid in the daemon's namespace, `None` if it has exited already.
fn verify_clone(pidfd: std::os::fd::BorrowedFd<'_>, pid: i32) -> Result<Option<i32>, String> {
    let pids = sys::pidfd_nspids(pidfd).map_err(|e| format!("cannot read its pids: {e}"))?;
    match pids[..] {
        [host, in_zygote, 1] if in_zygote == pid => Ok(Some(host)),
        [] => Ok(None),
        _ => Err(format!(
            "pids {pids:?} across pid namespaces, expected [host, {pid}, 1]"
        )),
    }
}

impl Drop for ZygoteHandle {
    fn drop(&mut self) {
        // The exit watcher reaps it.
        let _ = sys::pidfd_send_signal(self.pidfd.get_ref().as_fd(), libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_errors_become_sandbox_init_failures() {
        let failure = StartError::Exited {
            output: "no output".into(),
        }
        .into_init_failure();
        assert_eq!(failure.stage, "sandbox");
        assert_eq!(failure.error_type, "ZygoteStartFailed");
        assert_eq!(
            failure.message,
            "the zygote exited before it was ready; output: no output"
        );
        let own = InitFailure::new("import", "ImportError", "no module");
        assert_eq!(StartError::Init(own.clone()).into_init_failure(), own);
    }

    #[test]
    fn timeout_message_names_the_limit_in_ms() {
        let err = StartError::Timeout {
            timeout: Duration::from_secs(30),
            output: "x".into(),
        };
        assert_eq!(
            err.to_string(),
            "the runtime did not become ready within 30000 ms; output: x"
        );
    }
}
