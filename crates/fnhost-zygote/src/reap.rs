//! What PID 1 of a zygote does once the runtime runs: reap every child
//! (orphans of the namespace are reparented to it) until the runtime itself
//! exits, then report the runtime's status. Shared by init (when the
//! `fnhost-reaper` binary is not installed) and by that binary.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Where the runtime layer puts `fnhost-reaper` inside a root.
pub const REAPER_PATH: &str = "/.fnhost/runtime/fnhost-reaper";
/// File name of the reaper binary the build produces.
pub const REAPER_NAME: &str = "fnhost-reaper";

/// Reaps until `runtime` exits; returns its exit code (128 + signal when
/// killed, 1 when there is nothing left to wait for).
pub fn reap_until_exit_of(runtime: i32) -> i32 {
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
