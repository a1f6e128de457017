//! A zygote seen from the daemon: its process (reaped through a pidfd), its
//! control channel (one request at a time, in order), its hibernation
//! state, and its output (logged, last lines kept for error messages).
//! Dropping the last handle kills the zygote — and with it, through its pid
//! namespace, every clone — and removes its snapshot.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fnhost_sandbox::sys;
use fnhost_snapshot::WorkingSet;
use fnhost_zygote::control::{self, Received};
use fnhost_zygote::protocol::{DaemonMessage, ZygoteMessage};
use fnhost_zygote::spec::ZygoteSpec;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncBufReadExt;
use tokio::sync::Notify;

use crate::process::{spawn_zygote, ZygoteProcess};

mod sleep;

use sleep::Sleep;
pub use sleep::{Hibernation, Woken};

/// How many output lines of a zygote are kept for error messages.
const OUTPUT_TAIL_LINES: usize = 20;
/// Longest output line logged; longer lines are cut.
const MAX_LINE: usize = 4096;

/// Why a zygote did not become ready.
#[derive(Debug, Clone)]
pub enum StartError {
    /// The zygote reported a structured failure (mounts, runtime, import).
    Init {
        stage: String,
        error_type: String,
        message: String,
        trace: Vec<String>,
    },
    /// It could not be started or died without saying why.
    Failed(String),
}

/// Why a clone request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CloneError {
    /// The zygote was hibernated and could not be woken; it was stopped.
    #[error("wake-up failed: {0}")]
    WakeFailed(String),
    #[error("{0}")]
    Failed(String),
}

/// A clone created by a zygote.
#[derive(Debug)]
pub struct Cloned {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub fork_us: u64,
    /// Set when the zygote was hibernated and had to be woken first.
    pub woke: Option<Woken>,
}

/// The control socket and what only its holder may change.
struct Channel {
    fd: AsyncFd<OwnedFd>,
    sleep: Option<Sleep>,
    /// Pages earlier wake-ups faulted on, prefetched first next time.
    working_set: WorkingSet,
}

/// Where a new zygote goes: its cgroups and, optionally, a user namespace.
pub struct Placement<'a> {
    /// cgroup2 directory to clone into.
    pub cgroup_dir: Option<&'a OwnedFd>,
    /// v1 `cgroup.procs` files the zygote writes itself into.
    pub v1_procs: &'a [OwnedFd],
    pub userns: Option<crate::process::IdMap>,
}

/// A running, ready zygote.
pub struct Zygote {
    pub id: u64,
    pub function: Arc<str>,
    pub pid: i32,
    pub import_us: u64,
    pub started_in: Duration,
    pidfd: Arc<AsyncFd<OwnedFd>>,
    control: tokio::sync::Mutex<Channel>,
    alive: Arc<AtomicBool>,
    /// Mirrors `Channel::sleep.is_some()` for lock-free status reads.
    asleep: AtomicBool,
    /// Data bytes of the current snapshot (0 when awake).
    snapshot_bytes: AtomicU64,
    carry: Vec<String>,
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote")
            .field("id", &self.id)
            .field("function", &self.function)
            .field("pid", &self.pid)
            .finish()
    }
}

async fn send_msg(fd: &AsyncFd<OwnedFd>, msg: &DaemonMessage, fds: &[RawFd]) -> io::Result<()> {
    loop {
        let mut guard = fd.writable().await?;
        match guard.try_io(|inner| control::send(inner.as_fd(), msg, fds)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

async fn recv_msg(fd: &AsyncFd<OwnedFd>) -> io::Result<Received<ZygoteMessage>> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| control::recv::<ZygoteMessage>(inner.as_fd())) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let lines = tail.lock().expect("output tail lock poisoned");
    if lines.is_empty() {
        "no output".to_string()
    } else {
        lines.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

/// Most output lines per second a zygote (with all its clones) may log;
/// the rest is counted and dropped, so a chatty function cannot flood the
/// daemon's log.
const MAX_LINES_PER_SECOND: u32 = 1000;

/// Logs a zygote's stdout/stderr line by line (each cut at [`MAX_LINE`]
/// bytes, at most [`MAX_LINES_PER_SECOND`]), keeping the last lines.
fn forward_output(
    output: OwnedFd,
    function: Arc<str>,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> io::Result<()> {
    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(output)?;
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(receiver);
        let mut buf = Vec::new();
        let mut window = Instant::now();
        let (mut logged, mut dropped) = (0u32, 0u64);
        loop {
            buf.clear();
            match lines.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if window.elapsed() >= Duration::from_secs(1) {
                        window = Instant::now();
                        logged = 0;
                        dropped = 0;
                    }
                    if logged >= MAX_LINES_PER_SECOND {
                        dropped += 1;
                        if dropped == 1 {
                            tracing::warn!(function = %function, "function output over {MAX_LINES_PER_SECOND} lines/s; dropping lines for the rest of this second");
                        }
                        metrics::counter!("fnhost_function_output_dropped_lines_total", "function" => function.to_string()).increment(1);
                        continue;
                    }
                    logged += 1;
                    buf.truncate(MAX_LINE);
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    tracing::info!(target: "fnhost::function_output", function = %function, "{line}");
                    let mut tail = tail.lock().expect("output tail lock poisoned");
                    if tail.len() == OUTPUT_TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        }
    });
    Ok(())
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

impl Zygote {
    /// Starts a zygote and waits until its runtime has imported the function.
    pub async fn start(
        id: u64,
        function: Arc<str>,
        spec: &ZygoteSpec,
        placement: Placement<'_>,
        timeout: Duration,
        pool: Arc<Notify>,
    ) -> Result<Arc<Zygote>, StartError> {
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
        )
        .map_err(|e| StartError::Failed(e.to_string()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let alive = Arc::new(AtomicBool::new(true));
        let pidfd =
            Arc::new(crate::fd::register(pidfd).map_err(|e| StartError::Failed(e.to_string()))?);
        watch_exit(pidfd.clone(), alive.clone(), function.clone(), id, pool);
        forward_output(output, function.clone(), tail.clone())
            .map_err(|e| StartError::Failed(e.to_string()))?;
        let control =
            crate::fd::register(control).map_err(|e| StartError::Failed(e.to_string()))?;
        let kill = |pidfd: &AsyncFd<OwnedFd>| {
            let _ = sys::pidfd_send_signal(pidfd.get_ref().as_fd(), libc::SIGKILL);
        };
        let first = match tokio::time::timeout(timeout, recv_msg(&control)).await {
            Ok(result) => result,
            Err(_) => {
                kill(&pidfd);
                return Err(StartError::Failed(format!(
                    "the runtime did not become ready within {} ms; output: {}",
                    timeout.as_millis(),
                    tail_text(&tail)
                )));
            }
        };
        let import_us = match first {
            Ok(Received::Message(ZygoteMessage::Ready { import_us }, _)) => import_us,
            Ok(Received::Message(ZygoteMessage::InitFailed(f), _)) => {
                kill(&pidfd);
                return Err(StartError::Init {
                    stage: f.stage,
                    error_type: f.error_type,
                    message: f.message,
                    trace: f.trace,
                });
            }
            Ok(Received::Message(other, _)) => {
                kill(&pidfd);
                return Err(StartError::Failed(format!(
                    "unexpected first message from zygote: {other:?}"
                )));
            }
            Ok(Received::Closed) | Err(_) => {
                kill(&pidfd);
                // Give the output forwarder a moment to collect the last words.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Err(StartError::Failed(format!(
                    "the zygote exited before it was ready; output: {}",
                    tail_text(&tail)
                )));
            }
        };
        Ok(Arc::new(Zygote {
            id,
            function,
            pid,
            import_us,
            started_in: started.elapsed(),
            pidfd,
            control: tokio::sync::Mutex::new(Channel {
                fd: control,
                sleep: None,
                working_set: WorkingSet::default(),
            }),
            alive,
            asleep: AtomicBool::new(false),
            snapshot_bytes: AtomicU64::new(0),
            carry: spec.clone_carry(),
        }))
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Asks the zygote to clone a sandbox. `fds`: the clone's invocation
    /// socket, then the cgroup2 dir (if any), then v1 `cgroup.procs` files.
    pub async fn clone_sandbox(
        &self,
        sandbox: u64,
        writable_bytes: u64,
        fds: &[RawFd],
        v2_cgroup: bool,
        v1_procs: u32,
        run_as: Option<(u32, u32)>,
    ) -> Result<Cloned, CloneError> {
        if !self.is_alive() {
            return Err(CloneError::Failed("the zygote has exited".into()));
        }
        let msg = DaemonMessage::Clone {
            sandbox,
            writable_bytes,
            carry: self.carry.clone(),
            v2_cgroup,
            v1_procs,
            run_as,
        };
        let mut channel = self.control.lock().await;
        let woke = self.wake_locked(&mut channel).await?;
        let control = &channel.fd;
        send_msg(control, &msg, fds)
            .await
            .map_err(|e| CloneError::Failed(format!("cannot reach the zygote: {e}")))?;
        let failed = |message: String| Err(CloneError::Failed(message));
        match recv_msg(control).await {
            Ok(Received::Message(
                ZygoteMessage::Cloned {
                    sandbox: got,
                    pid,
                    fork_us,
                },
                mut fds,
            )) if got == sandbox && fds.len() == 1 => Ok(Cloned {
                pid,
                pidfd: fds.remove(0),
                fork_us,
                woke,
            }),
            Ok(Received::Message(ZygoteMessage::CloneFailed { message, .. }, _)) => failed(message),
            Ok(Received::Message(other, _)) => {
                failed(format!("unexpected reply from zygote: {other:?}"))
            }
            Ok(Received::Closed) => failed("the zygote exited".into()),
            Err(e) => failed(format!("zygote control channel failed: {e}")),
        }
    }

    /// Kills the zygote (and so every clone in its pid namespace).
    pub fn kill(&self) {
        if self.alive.swap(false, Ordering::SeqCst) {
            let _ = sys::pidfd_send_signal(self.pidfd.get_ref().as_fd(), libc::SIGKILL);
        }
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // The exit watcher reaps it.
        let _ = sys::pidfd_send_signal(self.pidfd.get_ref().as_fd(), libc::SIGKILL);
    }
}
