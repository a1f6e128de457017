//! The fork server that runs inside a zygote's language runtime (loaded as
//! a native library by the runtime shim), and the setup each clone does on
//! itself before any function code runs.
//!
//! The fork server runs unprivileged: init dropped every privilege and
//! installed the zygote stage of the seccomp filter before the runtime (and
//! with it the function's import-time code) started. The zygote is
//! single-threaded (node: only node's own parked threads besides the
//! forking one), so the child of `clone3` may allocate and use std freely.
//! The child starts in a user namespace no other live clone is in (a
//! forker's, reused, see [`crate::reused_network`], or a new one), maps its
//! one id if not mapped yet, mounts its private writable root, drops the namespace's
//! capabilities, completes the seccomp filter inherited from the zygote,
//! reports `Ready` on its invocation socket, and returns to the runtime,
//! which waits there for exactly one invocation. The daemon moves it into
//! its cgroups by pid meanwhile, before it sends the invocation.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use fnhost_sandbox::clone_setup::{set_up_clone, CloneIds, ClonePlan};
use fnhost_sandbox::seccomp::Filter;
use fnhost_sandbox::sys::{self, CloneSpec, Forked};
use fnhost_sandbox::syscall::LinuxSyscall;
use fnhost_sandbox::{CLONE_NAMESPACES, CLONE_NETWORK};

use crate::reused_network::{Forkers, InClone, Outcome};

use crate::clone_request::{invocation_fd, CloneRequest, SANDBOX_ID};
use crate::control::{self, Received};
use crate::protocol::{
    encode_frame, encode_hibernated, encode_woken, DaemonMessage, FrameKind, InitFailure,
    SetupFailure, SetupTimes, ZygoteMessage, WAKE_MESSAGE,
};
use crate::settings::SettingsError;

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// Number of threads of the calling process (a zygote must have one when
/// it forks).
pub fn thread_count() -> Option<u64> {
    sys::thread_count_of(std::process::id() as i32).ok()
}

/// What the fork server does the same way for every clone, from the
/// zygote's settings (received once).
struct CloneDefaults {
    /// The compiled filter whose zygote stage is installed; `None`: unconfined.
    seccomp: Option<Filter>,
    /// Clone into a network namespace of its own.
    own_network: bool,
    /// This zygote's uid and gid, which each clone's function id maps to.
    outside_ids: (u32, u32),
    /// Threads the runtime itself has (1, or node's own idle ones).
    runtime_threads: u64,
}

/// Refuses to serve from a zygote with more threads than its runtime's
/// own, or whose other threads are not all parked: a thread running (or
/// holding a lock) at the fork leaves that lock held forever in the clone.
fn check_threads(defaults: &CloneDefaults) -> Result<(), InitFailure> {
    let allowed = defaults.runtime_threads.max(1);
    let threads = thread_count().unwrap_or(u64::MAX);
    if threads > allowed {
        let message = if allowed == 1 {
            format!(
                "the function started {} extra thread(s) while being imported; a zygote must be \
                 single-threaded when it forks: start threads inside the handler instead",
                threads - 1
            )
        } else {
            format!(
                "the function started {} extra thread(s) while being imported (the runtime's own \
                 {allowed} are allowed); a zygote must not fork other threads: start them inside \
                 the handler instead (in node: async fs, crypto, zlib or dns calls at import time \
                 start libuv's threadpool; use their *Sync forms or move them into the handler)",
                threads - allowed
            )
        };
        return Err(InitFailure::new(
            "import",
            "ZygoteNotSingleThreaded",
            message,
        ));
    }
    if allowed > 1 {
        let me = sys::current_tid();
        let busy = || -> Vec<String> {
            sys::task_states(std::process::id() as i32)
                .unwrap_or_default()
                .into_iter()
                .filter(|&(tid, state)| tid != me && state != 'S')
                .map(|(tid, state)| format!("{tid} ({state})"))
                .collect()
        };
        // A runtime thread may still be finishing start-up work: give it
        // up to ~200 ms to park.
        let mut busy_now = busy();
        for _ in 0..100 {
            if busy_now.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            busy_now = busy();
        }
        let busy = busy_now;
        if !busy.is_empty() {
            return Err(InitFailure::new(
                "import",
                "ZygoteNotSingleThreaded",
                format!(
                    "the runtime's own threads must be parked when the zygote forks; thread(s) {} \
                     are not: something still runs in the background after the import",
                    busy.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Asks the daemon for this zygote's settings and compiles the seccomp
/// filter they choose (its zygote stage is already installed, by init).
fn receive_settings(control: BorrowedFd<'_>) -> Result<CloneDefaults, InitFailure> {
    if control::send(control, &ZygoteMessage::NeedSettings, &[]).is_err() {
        // The daemon is gone: nothing to serve.
        sys::exit_immediately(0);
    }
    let settings = match control::recv::<DaemonMessage>(control) {
        Ok(Received::Message(DaemonMessage::Configure(settings), _)) => settings,
        // The daemon is gone: nothing to serve.
        Ok(Received::Closed) => sys::exit_immediately(0),
        Ok(Received::Message(other, _)) => {
            return Err(InitFailure::new(
                "sandbox",
                "InvalidZygoteSettings",
                format!("expected the zygote's settings first, got {other:?}"),
            ))
        }
        Err(e) => {
            return Err(InitFailure::new(
                "sandbox",
                "InvalidZygoteSettings",
                format!("cannot receive the zygote's settings: {e}"),
            ))
        }
    };
    let seccomp_failure =
        |e: SettingsError| InitFailure::new("sandbox", "SeccompProfileInvalid", e.to_string());
    let filter = settings.seccomp.compile().map_err(seccomp_failure)?;
    Ok(CloneDefaults {
        seccomp: filter,
        own_network: settings.own_network,
        outside_ids: (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        ),
        runtime_threads: settings.runtime_threads,
    })
}

/// Sends an init failure on the control socket (used by the shim when the
/// function's import fails).
pub fn report_init_failure(control: BorrowedFd<'_>, failure: InitFailure) -> std::io::Result<()> {
    control::send(control, &ZygoteMessage::InitFailed(failure), &[])
}

/// Serves clone requests until the daemon closes the control socket (then
/// exits the process). Returns only in a freshly set-up clone, with the
/// descriptor of its invocation socket.
pub fn serve(control_fd: RawFd, import_us: u64) -> RawFd {
    // SAFETY: the shim passes its inherited control fd, open for the zygote's life.
    let control = unsafe { BorrowedFd::borrow_raw(control_fd) };
    // Compiled once. The zygote stage (installed by init before the
    // runtime started) is inherited by every clone, which only adds the
    // small clone stage (see fnhost_sandbox::seccomp).
    let defaults = match receive_settings(control).and_then(|d| check_threads(&d).map(|()| d)) {
        Ok(defaults) => defaults,
        Err(failure) => {
            let _ = report_init_failure(control, failure);
            sys::exit_immediately(1);
        }
    };
    // Every region must reach the clones: node's V8 heap is MADV_DONTFORK.
    if let Err(e) = sys::undo_dontfork() {
        let failure = InitFailure::new(
            "sandbox",
            "ZygoteMemoryNotForkable",
            format!("cannot mark the zygote's memory as inherited by its clones: {e}"),
        );
        let _ = report_init_failure(control, failure);
        sys::exit_immediately(1);
    }
    // Clones are reaped by the kernel; the daemon follows them by pidfd.
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    // Forkers: clones made in reused network namespaces (see reused_network).
    let mut forkers = Forkers::default();
    if control::send(control, &ZygoteMessage::Ready { import_us }, &[]).is_err() {
        sys::exit_immediately(0);
    }
    loop {
        let (msg, fds) = match control::recv::<DaemonMessage>(control) {
            Ok(Received::Message(msg, fds)) => (msg, fds),
            // The daemon is gone: nothing to serve.
            Ok(Received::Closed) => sys::exit_immediately(0),
            Err(e) => {
                eprintln!("fnhost zygote: control channel failed: {e}");
                sys::exit_immediately(2)
            }
        };
        let request = match msg {
            DaemonMessage::Clone { request } => request,
            DaemonMessage::Hibernate { output, base } => {
                forkers.stop_all();
                hibernate_until_woken(control, fds, output, base);
                continue;
            }
            // Not hibernated: nothing to resume; settings come once.
            DaemonMessage::Wake | DaemonMessage::Configure(_) => continue,
        };
        let sandbox = request.sandbox;
        let invocation = match invocation_fd(fds) {
            Ok(fd) => fd,
            Err(e) => {
                let message = e.to_string();
                let _ = control::send(
                    control,
                    &ZygoteMessage::CloneFailed { sandbox, message },
                    &[],
                );
                continue;
            }
        };
        let started = Instant::now();
        let (request, invocation) = if defaults.own_network {
            match forkers.clone(request, invocation) {
                Outcome::Made { pid, pidfd } => {
                    report_cloned(control, sandbox, pid, &pidfd, started);
                    continue;
                }
                Outcome::Unavailable {
                    request,
                    invocation,
                    why,
                } => {
                    if let Some(why) = why {
                        eprintln!("fnhost zygote: no forker ({why}); cloning with a new network namespace");
                    }
                    (request, invocation)
                }
            }
        } else {
            (request, invocation)
        };
        // The zygote's other threads, if any, are its runtime's own, parked
        // holding no lock (checked above), so the child may allocate.
        // SAFETY: that, and the child never returns into the serve loop.
        let forked = unsafe { fresh_clone(&defaults) };
        match forked {
            Ok(Forked::Child) => {
                // The clone must not hold the zygote's forkers.
                drop(forkers);
                return setup_clone(control_fd, request, invocation, &defaults, false);
            }
            Ok(Forked::Parent { pid, pidfd }) => {
                report_cloned(control, sandbox, pid, &pidfd, started);
                // Off this request's path: a forker for the next clones, if
                // this one found none idle (a forker must not inherit the
                // invocation socket).
                drop(invocation);
                // A clone a new forker makes never returns into the serve loop.
                // SAFETY: as for the fresh clone above.
                let prepared = unsafe { forkers.prepare(control_fd, defaults.outside_ids) };
                if let Some(InClone {
                    request,
                    invocation,
                    channel,
                }) = prepared
                {
                    return setup_clone(channel, request, invocation, &defaults, true);
                }
            }
            Err(e) => {
                let message = format!("clone3 failed: {e}");
                let _ = control::send(
                    control,
                    &ZygoteMessage::CloneFailed { sandbox, message },
                    &[],
                );
            }
        }
    }
}

/// Tells the daemon a clone was made (its pid in the zygote's namespace and
/// a pidfd); exits when the daemon is gone.
fn report_cloned(
    control: BorrowedFd<'_>,
    sandbox: u64,
    pid: i32,
    pidfd: &OwnedFd,
    started: Instant,
) {
    let reply = ZygoteMessage::Cloned {
        sandbox,
        pid,
        fork_us: micros(started),
    };
    if control::send(control, &reply, &[pidfd.as_raw_fd()]).is_err() {
        sys::exit_immediately(0);
    }
}

/// `clone3` of a clone into fresh namespaces, network included unless the
/// function shares its zygote's.
///
/// # Safety
/// As [`sys::clone3`].
unsafe fn fresh_clone(defaults: &CloneDefaults) -> std::io::Result<Forked> {
    let spec = CloneSpec {
        flags: CLONE_NAMESPACES
            | if defaults.own_network {
                CLONE_NETWORK
            } else {
                0
            },
        // Never a cgroup fd here: the daemon attaches the clone.
        cgroup: None,
        exit_signal: libc::SIGCHLD,
    };
    // SAFETY: the caller's contract.
    unsafe { sys::clone3(spec) }
}

/// Hibernates this zygote and returns once the daemon has woken it.
///
/// Between writing the snapshot and dropping the memory nothing may write
/// the heap (the write would be lost), so that part ([`fnhost_snapshot::hibernate`])
/// and everything after it until the wake-up message use only the stack and
/// bare system calls (not even glibc's wrappers, whose globals were
/// dropped too), with every signal blocked. A page touched anyway is
/// served by the daemon from the snapshot. On the wake-up message it maps
/// the snapshot back over its memory ([`fnhost_snapshot::remap`]) and
/// answers `woken`. Heap values created before it
/// (`fds`, the message buffers) are dropped only after the wake-up, when
/// the daemon serves the pages they live in.
fn hibernate_until_woken(control: BorrowedFd<'_>, fds: Vec<OwnedFd>, output: bool, base: bool) {
    let failed = |message: String| {
        let _ = control::send(control, &ZygoteMessage::HibernateFailed { message }, &[]);
    };
    let expected = 2 + usize::from(output) + usize::from(base);
    if fds.len() != expected {
        return failed(format!(
            "hibernate request carried {} descriptors, expected {expected}: the snapshot, the \
             daemon's end of this channel{}{}",
            fds.len(),
            if output { ", the output pipe" } else { "" },
            if base { ", the shared base" } else { "" },
        ));
    }
    let mut fds = fds.into_iter();
    let snapshot = fds.next().expect("checked: the count");
    // Kept, unused, while this zygote sleeps: the daemon closes its own
    // copies (descriptors per hibernated function) and takes them back to
    // wake it.
    let daemon_end = fds.next().expect("checked: the count");
    let output_pipe = if output { fds.next() } else { None };
    // Read-only: runs of it are mapped on wake-up (see `fnhost_snapshot::shared`).
    let base = if base { fds.next() } else { None };
    // Blocked from here until the zygote is awake again: a handler running
    // after the snapshot was written would write memory that is then lost.
    let mut blocked = nix::sys::signal::SigSet::empty();
    let all = nix::sys::signal::SigSet::all();
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&all),
        Some(&mut blocked),
    );
    let restore_signals = || {
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&blocked),
            None,
        );
    };
    // Give free heap memory back first: what is not there is neither
    // written to the snapshot nor restored on wake-up.
    // The process is single-threaded here.
    // SAFETY: malloc_trim only releases free memory of this process's allocator.
    unsafe { libc::malloc_trim(0) };
    let previous: Vec<fnhost_snapshot::FileId> = WOKEN_FROM
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .flatten()
        .copied()
        .collect();
    let prepared = match fnhost_snapshot::prepare(&previous) {
        Ok(prepared) => prepared,
        Err(e) => {
            restore_signals();
            return failed(e.to_string());
        }
    };
    let hibernating = ZygoteMessage::Hibernating {
        regions: prepared.regions().to_vec(),
        uffd: prepared.uffd().as_raw_fd(),
        control: daemon_end.as_raw_fd(),
        output: output_pipe.as_ref().map(AsRawFd::as_raw_fd),
    };
    if control::send(control, &hibernating, &[prepared.uffd().as_raw_fd()]).is_err() {
        sys::exit_immediately(0);
    }
    drop(hibernating);
    // Kept on the stack for the wake-up's remap.
    let table = prepared.table();
    // From here until the snapshot is mapped back: stack and bare syscalls only.
    match fnhost_snapshot::hibernate(prepared, snapshot.as_fd()) {
        Ok(fnhost_snapshot::Slept { stats, uffd }) => {
            let mut buf = [0u8; 96];
            let len = encode_hibernated(&mut buf, stats.pages_written, stats.bytes_dropped);
            if sys::bare::send_bare(control, &buf[..len]).is_err() {
                sys::exit_immediately(0);
            }
            // The wake-up message, then the runs to map from the shared
            // base (`fnhost_snapshot::SharedRun`, binary): on the stack.
            let mut wake = [0u8; WAKE_BUFFER];
            let received = loop {
                match sys::bare::recv_bare(control, &mut wake) {
                    // The daemon is gone.
                    Ok(0) | Err(_) => sys::exit_immediately(0),
                    Ok(n) if wake[..n].starts_with(WAKE_MESSAGE) => break n,
                    // Nothing else is valid while hibernated; the daemon
                    // sends only the wake-up.
                    Ok(_) => continue,
                }
            };
            let run_bytes = &wake[WAKE_MESSAGE.len()..received];
            let runs = || {
                run_bytes
                    .chunks_exact(fnhost_snapshot::shared::RUN_BYTES)
                    .filter_map(|c| c.try_into().ok())
                    .map(fnhost_snapshot::SharedRun::decode)
            };
            // Runs that do not fit the hibernated regions (or runs with no
            // base to map them from) are a broken wake-up: exit before
            // mapping anything, the daemon replaces the zygote.
            let runs_fit = run_bytes.len() % fnhost_snapshot::shared::RUN_BYTES == 0
                && (run_bytes.is_empty() || base.is_some())
                && fnhost_snapshot::shared::runs_within(runs(), table.as_slice());
            if !runs_fit {
                sys::exit_immediately(3)
            }
            // Part of the memory may be mapped back and part still missing:
            // nothing can be trusted, the daemon sees the channel close and
            // replaces the zygote.
            let Ok(mapped) = fnhost_snapshot::remap(&table, snapshot.as_fd()) else {
                sys::exit_immediately(3)
            };
            if let Some(base) = &base {
                if fnhost_snapshot::remap_shared(runs(), base.as_fd()).is_err() {
                    sys::exit_immediately(3)
                }
            }
            let len = encode_woken(&mut buf, mapped);
            if sys::bare::send_bare(control, &buf[..len]).is_err() {
                sys::exit_immediately(0);
            }
            restore_signals();
            // Every region is a file mapping again, registered nowhere: the
            // last copy of the userfaultfd may go (the daemon closes its own).
            drop(uffd);
            // Nothing forked from here may hold the daemon's end.
            drop(daemon_end);
            drop(output_pipe);
            // The memory is whole again: statics may be written. The next
            // hibernation makes these files' mappings anonymous first.
            let id_of = |fd: &OwnedFd| fnhost_snapshot::FileId::of(fd.as_fd()).ok();
            let woken_from = [id_of(&snapshot), base.as_ref().and_then(id_of)];
            *WOKEN_FROM.lock().unwrap_or_else(|e| e.into_inner()) = woken_from;
        }
        Err(e) => {
            // Nothing was dropped: report and serve on.
            restore_signals();
            failed(e.to_string());
        }
    }
    // Closed before any clone is forked: a clone must not be able to write
    // the file its zygote's memory is mapped from.
    drop(snapshot);
    drop(base);
}

/// The wake-up message and the most shared runs it may carry.
const WAKE_BUFFER: usize =
    64 + fnhost_snapshot::MAX_SHARED_RUNS * fnhost_snapshot::shared::RUN_BYTES;

/// The files this zygote's memory was last mapped from on wake-up: its
/// snapshot and, in a sharing group, the group's base.
static WOKEN_FROM: std::sync::Mutex<[Option<fnhost_snapshot::FileId>; 2]> =
    std::sync::Mutex::new([None, None]);

/// In the clone: isolate, report `Ready`, hand the invocation socket to the
/// runtime. On any failure, reports `SetupFailed` and exits.
fn setup_clone(
    control_fd: RawFd,
    request: CloneRequest,
    invocation: OwnedFd,
    defaults: &CloneDefaults,
    ids_mapped: bool,
) -> RawFd {
    let CloneRequest {
        writable_bytes,
        carry,
        ..
    } = request;
    // Function code must never reach the zygote's control channel, and its
    // children must be reaped normally (the zygote ignores SIGCHLD).
    let _ = nix::unistd::close(control_fd);
    // SAFETY: restoring the default disposition installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let mut stream = UnixStream::from(invocation);
    let ids = CloneIds {
        inside: (SANDBOX_ID, SANDBOX_ID),
        outside: defaults.outside_ids,
    };
    let mut plan = ClonePlan::new(
        ids,
        writable_bytes,
        carry.into_iter().map(Into::into).collect(),
        defaults.own_network,
        defaults.seccomp.as_ref(),
    );
    // A forker's user namespace was mapped once, by the forker, before it
    // served (it exits if it cannot).
    plan.ids_mapped = ids_mapped;
    let times = match set_up_clone(&LinuxSyscall, plan) {
        Ok(t) => SetupTimes {
            // Filled in by the daemon, which does the attach.
            cgroup_us: 0,
            userns_us: t.userns_us,
            mount_us: t.mount_us,
            network_us: t.network_us,
            privileges_us: t.privileges_us,
            seccomp_us: t.seccomp_us,
        },
        Err(e) => setup_failed(&mut stream, e.step(), e.cause()),
    };

    let meta = serde_json::to_vec(&times).unwrap_or_default();
    if stream
        .write_all(&encode_frame(FrameKind::Ready, &meta, &[]))
        .is_err()
    {
        // The daemon dropped this clone before it was ready.
        sys::exit_immediately(0);
    }
    stream.into_raw_fd()
}

fn setup_failed(stream: &mut UnixStream, step: &str, message: String) -> ! {
    let failure = SetupFailure {
        step: step.to_string(),
        message,
    };
    let meta = serde_json::to_vec(&failure).unwrap_or_default();
    let _ = stream.write_all(&encode_frame(FrameKind::SetupFailed, &meta, &[]));
    sys::exit_immediately(1)
}
