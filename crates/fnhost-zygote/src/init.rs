//! The zygote container's init (PID 1 of its pid namespace), started by the
//! daemon with `clone3` into fresh mount/pid/ipc/uts/net namespaces.
//!
//! It assembles the read-only root from shared layers, brings loopback up,
//! starts the language runtime (which becomes the fork server; for the exec
//! runtime, a forked child of init becomes it, see [`crate::exec`]) and then only
//! reaps, as `fnhost-reaper` when the runtime layer holds it (see
//! [`crate::reap`]): when the runtime exits, PID 1 exits, and the kernel
//! kills every process left in the namespace — every clone of this zygote
//! included.
//!
//! Init is the only privileged process of a zygote, and it never runs
//! function code.
//!
//! Why init stays rather than exec the runtime as PID 1 (which would save
//! ~0.6 MiB and a pid per zygote): every clone is PID 1 of its own pid
//! namespace, so a runtime at PID 1 would see the same `getpid()` as all
//! its clones, and libraries that notice a fork by a changed pid (OpenSSL's
//! random generator: `clone3` runs no atfork handlers) would give every
//! clone the same random stream. Tried: node's `crypto` then drew the same
//! values in six consecutive clones. Before the runtime starts (and with it the function's
//! import-time code), init's child drops to the spec's unprivileged ids,
//! clears every capability (bounding set included), sets `no_new_privs`,
//! installs the zygote stage of the seccomp filter and closes every
//! descriptor but stdio and the control socket.

use std::ffi::CString;
use std::os::fd::BorrowedFd;

use fnhost_sandbox::caps;
use fnhost_sandbox::mount::{enter_zygote_root, LinuxSyscall, ZygoteRoot};
use fnhost_sandbox::{net, sys};
use nix::unistd::{fork, ForkResult, Pid};

use crate::control;
use crate::protocol::{InitFailure, ZygoteMessage, CONTROL_FD, SPEC_ENV};
use crate::reap::{self, REAPER_PATH};
use crate::spec::{RuntimeEntry, ZygoteSpec};

fn fail(stage: &str, error_type: &str, message: String) -> ! {
    let msg = ZygoteMessage::InitFailed(InitFailure::new(stage, error_type, message.clone()));
    // SAFETY: CONTROL_FD was set up by the daemon before exec and stays open
    // for the life of this process.
    let control = unsafe { BorrowedFd::borrow_raw(CONTROL_FD) };
    if control::send(control, &msg, &[]).is_err() {
        eprintln!("fnhost-init: {stage}: {message}");
    }
    sys::exit_immediately(1)
}

/// Runs the init. Never returns. Must be called while single-threaded.
pub fn run() -> ! {
    let spec: ZygoteSpec = match std::env::var(SPEC_ENV)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => fail(
            "sandbox",
            "InvalidZygoteSpec",
            format!("cannot read {SPEC_ENV}: {e}"),
        ),
    };
    let root = ZygoteRoot {
        staging: spec.staging.clone(),
        layers: spec.layers.clone(),
        binds: spec.binds.clone(),
        tmp_bytes: spec.tmp_bytes,
        userxattr: fnhost_sandbox::in_user_namespace(),
    };
    if let Err(e) = enter_zygote_root(&LinuxSyscall, &root) {
        fail(
            "sandbox",
            "RootfsSetupFailed",
            format!("cannot set up the zygote root: {e}"),
        );
    }
    if let Err(e) = net::bring_up_loopback() {
        fail("sandbox", "NetworkSetupFailed", e.to_string());
    }
    if let Err(e) = nix::unistd::sethostname(&spec.hostname) {
        fail(
            "sandbox",
            "HostnameSetupFailed",
            format!("cannot set hostname {:?}: {e}", spec.hostname),
        );
    }
    // Held until PID 1 (init or the reaper) handles it, see `reap`.
    reap::hold_import_done();
    let runtime = start_runtime(&spec);
    if spec.reaper {
        exec_reaper(runtime);
    }
    sys::exit_immediately(reap::reap_until_exit_of(runtime.as_raw()))
}

/// Replaces init with `fnhost-reaper` (same pid, same job: see
/// [`crate::reap`]), which keeps a fraction of init's private memory
/// resident for the zygote's life. Returns only if that fails; init then
/// reaps itself.
fn exec_reaper(runtime: Pid) {
    let argv = [REAPER_PATH.to_string(), runtime.as_raw().to_string()];
    let argv = match cstrings(argv) {
        Ok(argv) => argv,
        Err(_) => return,
    };
    let env: [CString; 0] = [];
    let err = nix::unistd::execve(&argv[0], &argv, &env).unwrap_err();
    eprintln!("fnhost-init: cannot execute {REAPER_PATH} ({err}); init reaps instead");
}

fn cstrings(items: impl IntoIterator<Item = String>) -> Result<Vec<CString>, String> {
    items
        .into_iter()
        .map(|s| CString::new(s).map_err(|e| e.to_string()))
        .collect()
}

fn start_runtime(spec: &ZygoteSpec) -> Pid {
    let argv = match cstrings(spec.argv.iter().cloned()) {
        Ok(v) if !v.is_empty() => v,
        Ok(_) => fail(
            "runtime",
            "InvalidZygoteSpec",
            "empty runtime command".into(),
        ),
        Err(e) => fail("runtime", "InvalidZygoteSpec", e),
    };
    let env = match cstrings(spec.env.iter().map(|(k, v)| format!("{k}={v}"))) {
        Ok(v) => v,
        Err(e) => fail("runtime", "InvalidZygoteSpec", e),
    };
    if let Err(e) = nix::unistd::chdir(&spec.cwd) {
        fail(
            "runtime",
            "RuntimeStartFailed",
            format!("cannot enter {}: {e}", spec.cwd.display()),
        );
    }
    // SAFETY: init is single-threaded, so the child may do anything.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            reap::release_import_done();
            // Before the seccomp filter, which refuses this personality.
            if spec.share_group.is_some() {
                if let Err(e) = sys::disable_aslr() {
                    fail(
                        "runtime",
                        "RuntimeStartFailed",
                        format!("cannot fix the address layout for hibernate_share_pages: {e}"),
                    );
                }
            }
            become_unprivileged(spec);
            if spec.entry == RuntimeEntry::CommandPerInvocation {
                crate::exec::serve_command(spec)
            }
            let err = nix::unistd::execve(&argv[0], &argv, &env).unwrap_err();
            fail(
                "runtime",
                "RuntimeStartFailed",
                format!("cannot start runtime {}: {err}", spec.argv[0]),
            )
        }
        Ok(ForkResult::Parent { child }) => {
            // Only the runtime keeps the control socket, so the daemon sees
            // it close when the runtime dies.
            let _ = nix::unistd::close(CONTROL_FD);
            child
        }
        Err(e) => fail("runtime", "RuntimeStartFailed", format!("fork: {e}")),
    }
}

/// In init's child, before the runtime starts: drops every privilege for
/// good and installs the zygote stage of the seccomp filter. Fails the
/// zygote rather than start function code with any privilege left.
fn become_unprivileged(spec: &ZygoteSpec) {
    let filter = match spec.settings.seccomp.compile() {
        Ok(filter) => filter,
        Err(e) => fail("sandbox", "SeccompProfileInvalid", e.to_string()),
    };
    // Nothing but stdio and the control socket goes on into the runtime.
    if let Err(e) = sys::close_from(CONTROL_FD + 1) {
        fail(
            "sandbox",
            "PrivilegeDropFailed",
            format!("close descriptors: {e}"),
        );
    }
    if let Err(e) = caps::drop_all_privileges(&LinuxSyscall, Some(spec.runtime_ids)) {
        fail("sandbox", "PrivilegeDropFailed", e.to_string());
    }
    if let Some(filter) = filter {
        if let Err(e) = filter.install_in_zygote() {
            fail("sandbox", "SeccompProfileInvalid", e.to_string());
        }
    }
}
