//! What PID 1 of a zygote does once the runtime runs: reap every child
//! (orphans of the namespace are reparented to it) until the runtime itself
//! exits, then report the runtime's status. Shared by init (when the
//! `fnhost-reaper` binary is not installed) and by that binary.
//!
//! It also gives up the zygote's /tmp once the function is imported: the
//! daemon sends [`IMPORT_DONE`] then, and PID 1 (the zygote's only
//! privileged process) lazily unmounts it. That tmpfs is import-time
//! scratch only: a clone's /tmp is its own writable layer, so no clone
//! ever sees it, and each superblock a zygote keeps makes every memory
//! cgroup on the host larger (see `fnhost_sandbox::cgroup::names`).

use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// The signal the daemon sends a zygote's PID 1 when the runtime reports
/// the function imported. PID 1 of a pid namespace drops a signal it has
/// no handler for, so init holds it blocked ([`hold_import_done`]) until
/// the reaper listens: a blocked signal stays pending.
pub const IMPORT_DONE: Signal = Signal::SIGUSR1;

/// Where the runtime layer puts `fnhost-reaper` inside a root.
pub const REAPER_PATH: &str = "/.fnhost/runtime/fnhost-reaper";
/// File name of the reaper binary the build produces.
pub const REAPER_NAME: &str = "fnhost-reaper";

/// Blocks [`IMPORT_DONE`] (init, before it starts the runtime).
pub fn hold_import_done() {
    set_import_done_blocked(SigmaskHow::SIG_BLOCK);
}

/// Unblocks [`IMPORT_DONE`] (the runtime's process, before the runtime
/// starts: a signal mask survives `exec`).
pub fn release_import_done() {
    set_import_done_blocked(SigmaskHow::SIG_UNBLOCK);
}

fn set_import_done_blocked(how: SigmaskHow) {
    let mut set = SigSet::empty();
    set.add(IMPORT_DONE);
    // Cannot fail for a valid `how` and set.
    let _ = nix::sys::signal::sigprocmask(how, Some(&set), None);
}

/// Unmounts the zygote's import-time /tmp, lazily (a descriptor the import
/// left open keeps it alive until closed). One syscall on static data, so
/// it is async-signal-safe; a failure (already unmounted) changes nothing.
extern "C" fn on_import_done(_: libc::c_int) {
    // umount2 reads only the path.
    // SAFETY: a static NUL-terminated path and a flag.
    let _ = unsafe { libc::umount2(c"/tmp".as_ptr(), libc::MNT_DETACH) };
}

/// Reaps until `runtime` exits; returns its exit code (128 + signal when
/// killed, 1 when there is nothing left to wait for). Handles
/// [`IMPORT_DONE`] meanwhile.
pub fn reap_until_exit_of(runtime: i32) -> i32 {
    let action = SigAction::new(
        SigHandler::Handler(on_import_done),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // The handler touches no memory of this process.
    // SAFETY: the handler makes only one async-signal-safe syscall.
    let _ = unsafe { sigaction(IMPORT_DONE, &action) };
    release_import_done();
    let runtime = Pid::from_raw(runtime);
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == runtime => return code,
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == runtime => return 128 + sig as i32,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fnhost_sandbox::sys::exit_immediately;
    use nix::unistd::{fork, ForkResult};

    /// Forks a child that exits with `code` (only `_exit` runs in it, so
    /// forking from the multi-threaded test process is sound).
    fn child_exiting(code: i32) -> Pid {
        // SAFETY: the child calls only the async-signal-safe `_exit`.
        let forked = unsafe { fork() }.expect("fork");
        match forked {
            ForkResult::Child => exit_immediately(code),
            ForkResult::Parent { child } => child,
        }
    }

    /// A stand-in PID 1 (a child of the test, so its `waitpid(-1)` reaps
    /// only its own children) reaps a sibling of the runtime first and
    /// then exits with the runtime's status.
    #[test]
    fn exits_with_the_runtime_status_after_reaping_the_others() {
        // The child forks and waits only, then `_exit`s.
        // SAFETY: those calls are async-signal-safe and allocate nothing.
        let forked = unsafe { fork() }.expect("fork");
        let reaper = match forked {
            ForkResult::Child => {
                let _other = child_exiting(3);
                let runtime = child_exiting(7);
                exit_immediately(reap_until_exit_of(runtime.as_raw()))
            }
            ForkResult::Parent { child } => child,
        };
        assert_eq!(
            waitpid(reaper, None).expect("wait for the reaper"),
            WaitStatus::Exited(reaper, 7)
        );
    }
}
