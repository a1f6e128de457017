//! Starting a zygote container from the (multi-threaded) daemon: `clone3`
//! into fresh namespaces and straight into its cgroup, then exec of the
//! fnhost binary's hidden init subcommand. Between clone and exec the child
//! does only async-signal-safe work on values prepared beforehand.

use std::ffi::{CString, NulError};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use fnhost_sandbox::sys;
use fnhost_sandbox::ZYGOTE_NAMESPACES;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::protocol::{CONTROL_FD, SPEC_ENV};
use crate::spec::ZygoteSpec;

/// Hidden CLI subcommand of the fnhost binary that runs the zygote init.
pub const INIT_SUBCOMMAND: &str = "__zygote-init";

/// A started zygote process, seen from the daemon.
#[derive(Debug)]
pub struct ZygoteProcess {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// Daemon end of the control socket (SOCK_SEQPACKET, non-blocking).
    pub control: OwnedFd,
    /// Read end of the zygote's stdout+stderr.
    pub output: OwnedFd,
}

/// Error starting a zygote process.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create the zygote control socket: {0}")]
    Socket(#[source] nix::Error),
    #[error("cannot create the zygote output pipe: {0}")]
    Pipe(#[source] nix::Error),
    #[error("cannot open /dev/null: {0}")]
    DevNull(#[source] io::Error),
    #[error("zygote spec cannot be passed to init: {0}")]
    SpecNul(#[from] NulError),
    #[error("zygote spec cannot be passed to init: {0}")]
    SpecJson(#[source] serde_json::Error),
    #[error("clone3 of the zygote failed: {0} (fnhost needs root, or CAP_SYS_ADMIN, to create namespaces)")]
    Clone(#[source] io::Error),
    #[error(
        "cannot write the zygote's user namespace id map: {0} (check server.userns_host_base, or set \
         server.user_namespace = false)"
    )]
    IdMap(#[source] io::Error),
}

/// A user namespace id mapping: ids `0..size` inside are `host_base..` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub host_base: u32,
    pub size: u32,
}

/// Starts a zygote for `spec` inside the cgroup given by `cgroup_dir` (a
/// cgroup2 directory fd, for `CLONE_INTO_CGROUP`) and `v1_procs` (v1
/// `cgroup.procs` files the child writes itself into before exec). With
/// `userns`, the zygote gets its own user namespace: the child waits until
/// the daemon has written its uid/gid maps, becomes root inside, then execs.
pub fn spawn_zygote(
    spec: &ZygoteSpec,
    cgroup_dir: Option<&OwnedFd>,
    v1_procs: &[OwnedFd],
    userns: Option<IdMap>,
) -> Result<ZygoteProcess, SpawnError> {
    let (control, child_control) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(SpawnError::Socket)?;
    // The child's end must block: the zygote serves it synchronously.
    let flags = nix::fcntl::fcntl(child_control.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(SpawnError::Socket)?;
    let mut oflags = nix::fcntl::OFlag::from_bits_truncate(flags);
    oflags.remove(nix::fcntl::OFlag::O_NONBLOCK);
    nix::fcntl::fcntl(
        child_control.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(oflags),
    )
    .map_err(SpawnError::Socket)?;
    let (output, child_output) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
    let dev_null = std::fs::File::open("/dev/null").map_err(SpawnError::DevNull)?;
    // The child waits on this until its id maps are written.
    let (map_ready_r, map_ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;

    // Everything the child touches is prepared now: no allocation after clone.
    let spec_json = serde_json::to_string(spec).map_err(SpawnError::SpecJson)?;
    let plan = Box::new(ExecPlan {
        exe: CString::new("/proc/self/exe")?,
        argv: sys::CStringArray::new([CString::new("fnhost")?, CString::new(INIT_SUBCOMMAND)?]),
        envp: sys::CStringArray::new([CString::new(format!("{SPEC_ENV}={spec_json}"))?]),
        v1_procs: v1_procs.iter().map(|fd| fd.as_raw_fd()).collect(),
        control: child_control.as_raw_fd(),
        output: child_output.as_raw_fd(),
        null: dev_null.as_raw_fd(),
        map_ready: userns.map(|_| map_ready_r.as_raw_fd()),
    });
    let clone = sys::CloneSpec {
        flags: ZYGOTE_NAMESPACES
            | if userns.is_some() {
                libc::CLONE_NEWUSER as u64
            } else {
                0
            },
        cgroup: cgroup_dir.map(|fd| fd.as_fd()),
        exit_signal: libc::SIGCHLD,
    };
    // `exec_zygote` only makes async-signal-safe calls on the plan's
    // descriptors and pointers, and ends in execve or _exit.
    // SAFETY: as just said: the contract of `clone3_exec`.
    let cloned = unsafe { sys::clone3_exec(clone, exec_zygote, plan) };
    let (pid, pidfd, exec_wait) = cloned.map_err(SpawnError::Clone)?;
    // The child has its own copies of these descriptors now.
    drop((child_control, child_output, dev_null, map_ready_r));
    if let Some(map) = userns {
        let line = format!("0 {} {}\n", map.host_base, map.size);
        let written = std::fs::write(format!("/proc/{pid}/uid_map"), &line)
            .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), &line))
            .and_then(|()| sys::write_all_raw(map_ready_w.as_raw_fd(), b"1"));
        if let Err(e) = written {
            let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
            return Err(SpawnError::IdMap(e));
        }
    }
    drop(map_ready_w);
    release_after_exec(exec_wait);
    Ok(ZygoteProcess {
        pid,
        pidfd,
        control,
        output,
    })
}

/// What the zygote's process reads between clone and exec (it shares the
/// daemon's memory until then): prepared before the clone.
struct ExecPlan {
    exe: CString,
    argv: sys::CStringArray,
    envp: sys::CStringArray,
    /// v1 `cgroup.procs` files it writes itself into.
    v1_procs: Vec<RawFd>,
    control: RawFd,
    output: RawFd,
    null: RawFd,
    /// With a user namespace: readable once the daemon wrote its id maps.
    map_ready: Option<RawFd>,
}

/// The zygote's process from clone to exec. Still the daemon's credentials
/// here: the v1 attach is checked against the opener of the files anyway.
extern "C" fn exec_zygote(plan: &ExecPlan) -> ! {
    for fd in &plan.v1_procs {
        if sys::write_all_raw(*fd, b"0").is_err() {
            sys::exit_immediately(120);
        }
    }
    if let Some(map_ready) = plan.map_ready {
        // Wait for the maps, then become root of the namespace (an unmapped
        // uid would lose every capability at exec).
        if !matches!(sys::read_byte_raw(map_ready), Ok(true)) || sys::set_ids_raw(0, 0).is_err() {
            sys::exit_immediately(122);
        }
    }
    // Sources are all >= 3, so filling 0..=2 first cannot clobber one; the
    // control socket goes to fd 3 last.
    let ok = sys::dup_to(plan.null, 0).is_ok()
        && sys::dup_to(plan.output, 1).is_ok()
        && sys::dup_to(plan.output, 2).is_ok()
        && sys::dup_to(plan.control, CONTROL_FD).is_ok();
    if !ok {
        sys::exit_immediately(121);
    }
    let _ = sys::execve(&plan.exe, &plan.argv, &plan.envp);
    sys::exit_immediately(127)
}

/// Frees what the zygote's process read once it has exec'd, without
/// holding up an async worker while it gets there.
fn release_after_exec(exec_wait: sys::ExecWait<ExecPlan>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(move || exec_wait.wait_exec())),
        Err(_) => exec_wait.wait_exec(),
    }
}
