//! The fork server that runs inside a zygote's language runtime (loaded as
//! a native library by the runtime shim), and the setup each clone does on
//! itself before any function code runs.
//!
//! The zygote is single-threaded, so the child of `clone3` may allocate and
//! use std freely. The child: attaches itself to its v1 cgroups, mounts its
//! private writable root, drops every privilege, completes the seccomp
//! filter inherited from the zygote, reports `Ready` on its invocation
//! socket, and returns to the runtime, which waits there for exactly one
//! invocation.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use fnhost_sandbox::clone_setup::{set_up_clone, ClonePlan};
use fnhost_sandbox::seccomp::{self, Filter, Profile};
use fnhost_sandbox::sys::{self, CloneSpec, Forked};
use fnhost_sandbox::syscall::LinuxSyscall;
use fnhost_sandbox::CLONE_NAMESPACES;

use crate::control::{self, Received};
use crate::protocol::{
    encode_frame, encode_hibernated, DaemonMessage, FrameKind, InitFailure, SetupFailure,
    SetupTimes, ZygoteMessage, WAKE_MESSAGE,
};

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// Number of threads of the calling process (a zygote must have one when
/// it forks).
pub fn thread_count() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Environment variable naming a zygote's seccomp profile: unset or
/// `default` (the built-in profile), `unconfined` (no filter), or the
/// absolute path of a profile file inside the zygote's root. Read once and
/// removed, so function code never sees it.
pub const SECCOMP_ENV: &str = "FNHOST_SECCOMP";

/// Compiles the zygote's seccomp profile (see [`SECCOMP_ENV`]); `None` means
/// unconfined.
fn compile_seccomp() -> Result<Option<Filter>, String> {
    let choice = std::env::var(SECCOMP_ENV).unwrap_or_default();
    std::env::remove_var(SECCOMP_ENV);
    let profile = match choice.as_str() {
        "" | "default" => Profile::default_profile(),
        "unconfined" => return Ok(None),
        path => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read seccomp profile {path}: {e}"))?;
            Profile::parse(&text).map_err(|e| format!("{path}: {e}"))?
        }
    };
    let arch = seccomp::host_arch().map_err(|e| e.to_string())?;
    profile.compile(arch).map(Some).map_err(|e| e.to_string())
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
    // SAFETY: the runtime shim passes the control descriptor it inherited,
    // which stays open for the life of the zygote.
    let control = unsafe { BorrowedFd::borrow_raw(control_fd) };
    if let Some(threads) = thread_count().filter(|&n| n > 1) {
        let _ = report_init_failure(
            control,
            InitFailure {
                stage: "import".into(),
                error_type: "ZygoteNotSingleThreaded".into(),
                message: format!(
                    "the function started {} extra thread(s) while being imported; a zygote must be \
                     single-threaded when it forks: start threads inside the handler instead",
                    threads - 1
                ),
                trace: Vec::new(),
            },
        );
        sys::exit_immediately(1);
    }
    // Compiled once. The zygote stage is installed here and inherited by
    // every clone, which only adds the small clone stage (see
    // fnhost_sandbox::seccomp).
    let installed = compile_seccomp().and_then(|filter| match filter {
        Some(f) => f
            .install_in_zygote()
            .map(|()| Some(f))
            .map_err(|e| e.to_string()),
        None => Ok(None),
    });
    let seccomp = match installed {
        Ok(filter) => filter,
        Err(message) => {
            let failure = InitFailure {
                stage: "sandbox".into(),
                error_type: "SeccompProfileInvalid".into(),
                message,
                trace: Vec::new(),
            };
            let _ = report_init_failure(control, failure);
            sys::exit_immediately(1);
        }
    };
    // Clones are reaped by the kernel; the daemon follows them by pidfd.
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
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
        let (sandbox, writable_bytes, carry, v2_cgroup, v1_procs, run_as) = match msg {
            DaemonMessage::Clone {
                sandbox,
                writable_bytes,
                carry,
                v2_cgroup,
                v1_procs,
                run_as,
            } => (sandbox, writable_bytes, carry, v2_cgroup, v1_procs, run_as),
            DaemonMessage::Hibernate => {
                hibernate_until_woken(control, fds);
                continue;
            }
            // Not hibernated: nothing to resume.
            DaemonMessage::Wake => continue,
        };
        let expected = 1 + usize::from(v2_cgroup) + v1_procs as usize;
        if fds.len() != expected {
            let message = format!(
                "clone request carried {} descriptors, expected {expected}",
                fds.len()
            );
            let _ = control::send(
                control,
                &ZygoteMessage::CloneFailed { sandbox, message },
                &[],
            );
            continue;
        }
        let mut fds = fds.into_iter();
        let invocation = fds.next().expect("checked: at least one descriptor");
        let cgroup_dir = if v2_cgroup { fds.next() } else { None };
        let v1_procs: Vec<OwnedFd> = fds.collect();

        let started = Instant::now();
        // SAFETY: the zygote is single-threaded (checked above), so the child
        // may allocate; it never returns into the serve loop.
        let forked = unsafe {
            sys::clone3(CloneSpec {
                flags: CLONE_NAMESPACES,
                cgroup: cgroup_dir.as_ref().map(|fd| fd.as_fd()),
                exit_signal: libc::SIGCHLD,
            })
        };
        match forked {
            Ok(Forked::Child) => {
                drop(cgroup_dir);
                return setup_clone(
                    control_fd,
                    invocation,
                    v1_procs,
                    writable_bytes,
                    carry,
                    run_as,
                    seccomp.as_ref(),
                );
            }
            Ok(Forked::Parent { pid, pidfd }) => {
                let reply = ZygoteMessage::Cloned {
                    sandbox,
                    pid,
                    fork_us: micros(started),
                };
                if control::send(control, &reply, &[pidfd.as_raw_fd()]).is_err() {
                    sys::exit_immediately(0);
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

/// Hibernates this zygote and returns once the daemon has woken it.
///
/// Between writing the snapshot and dropping the memory nothing may write
/// the heap (the write would be lost), so that part ([`fnhost_snapshot::hibernate`])
/// and everything after it until the wake-up message use only the stack and
/// bare system calls (not even glibc's wrappers, whose globals were
/// dropped too), with every signal blocked. A page touched anyway is
/// served by the daemon from the snapshot. Heap values created before it
/// (`fds`, the message buffers) are dropped only after the wake-up, when
/// the daemon serves the pages they live in.
fn hibernate_until_woken(control: BorrowedFd<'_>, fds: Vec<OwnedFd>) {
    let failed = |message: String| {
        let _ = control::send(control, &ZygoteMessage::HibernateFailed { message }, &[]);
    };
    if fds.len() != 2 {
        return failed(format!(
            "hibernate request carried {} descriptors, expected 2",
            fds.len()
        ));
    }
    let mut fds = fds.into_iter();
    let device = fds.next().expect("checked: two descriptors");
    let snapshot = fds.next().expect("checked: two descriptors");
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
    // SAFETY: malloc_trim only releases free memory of this (single-
    // threaded) process's allocator.
    unsafe { libc::malloc_trim(0) };
    let prepared = match fnhost_snapshot::prepare(device) {
        Ok(prepared) => prepared,
        Err(e) => {
            restore_signals();
            return failed(e.to_string());
        }
    };
    let hibernating = ZygoteMessage::Hibernating {
        regions: prepared.regions().to_vec(),
    };
    if control::send(control, &hibernating, &[prepared.uffd().as_raw_fd()]).is_err() {
        sys::exit_immediately(0);
    }
    drop(hibernating);
    // From here until the wake-up message: stack and bare syscalls only.
    match fnhost_snapshot::hibernate(prepared, snapshot.as_fd()) {
        Ok(stats) => {
            let mut buf = [0u8; 96];
            let len = encode_hibernated(&mut buf, stats.pages_written, stats.bytes_dropped);
            if fnhost_snapshot::send_bare(control, &buf[..len]).is_err() {
                sys::exit_immediately(0);
            }
            let mut wake = [0u8; 64];
            loop {
                match fnhost_snapshot::recv_bare(control, &mut wake) {
                    // The daemon is gone.
                    Ok(0) | Err(_) => sys::exit_immediately(0),
                    Ok(n) if wake[..n] == *WAKE_MESSAGE => break,
                    // Nothing else is valid while hibernated; the daemon
                    // sends only the wake-up.
                    Ok(_) => continue,
                }
            }
            restore_signals();
        }
        Err(e) => {
            // Nothing was dropped: report and serve on.
            restore_signals();
            failed(e.to_string());
        }
    }
    drop(snapshot);
    drop(fds);
}

/// In the clone: isolate, report `Ready`, hand the invocation socket to the
/// runtime. On any failure, reports `SetupFailed` and exits.
fn setup_clone(
    control_fd: RawFd,
    invocation: OwnedFd,
    v1_procs: Vec<OwnedFd>,
    writable_bytes: u64,
    carry: Vec<String>,
    run_as: Option<(u32, u32)>,
    seccomp: Option<&Filter>,
) -> RawFd {
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
    let plan = ClonePlan::new(
        v1_procs,
        writable_bytes,
        carry.into_iter().map(Into::into).collect(),
        run_as,
        seccomp,
    );
    let times = match set_up_clone(&LinuxSyscall, plan) {
        Ok(t) => SetupTimes {
            cgroup_us: t.cgroup_us,
            mount_us: t.mount_us,
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
