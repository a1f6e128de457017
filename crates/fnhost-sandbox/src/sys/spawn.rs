//! Starting a process that execs at once from a large multi-threaded one:
//! `clone3` with `CLONE_VM`, the child on a stack of its own, as
//! `posix_spawn` does. A plain fork of the daemon copies its page tables
//! and write-protects every page it has; each page the daemon then writes
//! takes a copy-on-write fault and a TLB shoot-down on every core. At 3,000
//! functions (daemon RSS ~86 MiB), `perf` counted 3.4% of the host's CPU in
//! that `clone3` and 2.9% in the daemon's page faults while the zygotes
//! started, growing with the daemon. Sharing the memory until exec costs
//! neither, however large the daemon is.
//!
//! The child shares everything but its stack and descriptor table with
//! the thread that started it, which keeps running: the child may only
//! make syscalls on values prepared beforehand (no allocation, no locks),
//! and what it reads must live until it has exec'd, which
//! [`ExecWait::wait_exec`] waits for. It also runs on that thread's TLS,
//! so a system call failing in the child sets that thread's `errno`: the
//! child must exit right after any failure (a concurrent failure on the
//! thread could then read the child's error code, never a success). Only
//! x86_64 has the assembly this needs; elsewhere [`clone3_exec`] forks
//! (see `clone3`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::process::{CloneArgs, CloneSpec, CLONE_INTO_CGROUP, CLONE_PIDFD};

/// The child's stack: it only makes syscalls, but a signal handler of the
/// parent's may run on it (an AVX-512 signal frame alone is ~3 KiB).
const STACK_BYTES: u64 = 256 << 10;
const PAGE: u64 = 4096;

/// The memory a child started by [`clone3_exec`] uses until it execs or
/// exits (it shares this process's until then). Dropping it waits for that.
pub struct ExecWait<T: Send> {
    /// Read end of a close-on-exec pipe whose only write end is the
    /// child's: end of file once it has exec'd or exited.
    exec_watch: OwnedFd,
    /// What the child reads and runs on, freed only once it no longer can.
    in_use: Option<(Box<T>, Stack)>,
}

impl<T: Send> ExecWait<T> {
    /// Blocks until the child has exec'd (or exited), then frees its
    /// stack and what it was given. Slow only as long as the child takes
    /// to reach `execve`; run it off an async worker.
    pub fn wait_exec(mut self) {
        self.wait();
    }

    fn wait(&mut self) {
        let Some(in_use) = self.in_use.take() else {
            return;
        };
        // Nothing is ever written: the first read returns end of file.
        loop {
            match super::fd::read_byte_raw(self.exec_watch.as_raw_fd()) {
                Ok(true) => continue,
                Ok(false) => {
                    drop(in_use);
                    return;
                }
                // Cannot tell when the child is done with them: keep them
                // rather than free memory it may still use.
                Err(_) => {
                    std::mem::forget(in_use);
                    return;
                }
            }
        }
    }
}

impl<T: Send> Drop for ExecWait<T> {
    fn drop(&mut self) {
        self.wait();
    }
}

/// An anonymous mapping with a guard page below, unmapped on drop.
struct Stack {
    base: u64,
    len: u64,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        let len = STACK_BYTES + PAGE;
        let base = super::bare::mmap_anonymous(len)?;
        let stack = Stack { base, len };
        // An overflow faults instead of writing below the stack.
        // SAFETY: the lowest page of the mapping made above, used by nothing.
        unsafe { super::bare::mprotect_none(base, PAGE) }?;
        Ok(stack)
    }

    /// Lowest usable address and size, as `clone_args` wants them.
    fn usable(&self) -> (u64, u64) {
        (self.base + PAGE, self.len - PAGE)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used (`ExecWait::wait`).
        let _ = unsafe { super::bare::munmap(self.base, self.len) };
    }
}

/// Starts `child(&plan)` in a new process sharing this one's memory (and
/// nothing else) until it execs, optionally straight into a cgroup.
/// Returns its pid, a pidfd, and what to keep until it has exec'd. `child`
/// must end in `execve` or `_exit`.
///
/// # Safety
/// `child` runs concurrently with the caller's thread, on its thread's
/// TLS: it may only make async-signal-safe calls on what `plan` holds (no
/// allocation, no locks, no panics), and must never return.
pub unsafe fn clone3_exec<T: Send>(
    spec: CloneSpec<'_>,
    child: extern "C" fn(&T) -> !,
    plan: Box<T>,
) -> io::Result<(i32, OwnedFd, ExecWait<T>)> {
    let (watch_read, watch_write) = super::fd::pipe_cloexec()?;
    let stack = Stack::new()?;
    let (stack_low, stack_size) = stack.usable();
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: spec.flags | CLONE_PIDFD | libc::CLONE_VM as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: spec.exit_signal as u64,
        stack: stack_low,
        stack_size,
        ..CloneArgs::default()
    };
    if let Some(cgroup) = spec.cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cgroup.as_raw_fd() as u64;
    }
    let plan_ptr: *const T = &*plan;
    // The child calls `child(plan)` on its own stack and never returns;
    // `plan` and the stack live in the returned value until it has exec'd.
    // SAFETY: `args` is a complete clone_args; the caller upholds `child`'s contract.
    let pid = unsafe { raw_clone3_on_stack(&mut args, child, plan_ptr) }?;
    drop(watch_write);
    // SAFETY: on success with CLONE_PIDFD the kernel stored a new owned fd in `pidfd`.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let wait = ExecWait {
        exec_watch: watch_read,
        in_use: Some((plan, stack)),
    };
    Ok((pid, pidfd, wait))
}

/// `clone3` whose child calls `child(plan)` on the stack given in `args`.
///
/// # Safety
/// As [`clone3_exec`]; `args` names a stack the child may use.
#[cfg(target_arch = "x86_64")]
unsafe fn raw_clone3_on_stack<T>(
    args: &mut CloneArgs,
    child: extern "C" fn(&T) -> !,
    plan: *const T,
) -> io::Result<i32> {
    let ret: i64;
    // In the child (rax = 0) the kernel has switched to the new stack,
    // 16-byte aligned at its top, so `call` enters `child` as the ABI
    // expects; it never returns (`ud2` traps if it did). The parent only
    // gets rax, with rcx and r11 clobbered by `syscall`.
    // SAFETY: clone3 with complete args naming a stack the child may use (see above).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") plan,
            in("r13") child,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        return Err(io::Error::from_raw_os_error(-ret as i32));
    }
    Ok(ret as i32)
}

/// Without the assembly for this architecture: a plain fork (the child
/// runs on a copy of the caller's memory; the stack goes unused).
///
/// # Safety
/// As [`clone3_exec`].
#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw_clone3_on_stack<T>(
    args: &mut CloneArgs,
    child: extern "C" fn(&T) -> !,
    plan: *const T,
) -> io::Result<i32> {
    args.flags &= !(libc::CLONE_VM as u64);
    args.stack = 0;
    args.stack_size = 0;
    // SAFETY: complete clone_args without CLONE_VM; the child runs `child`, which never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        // SAFETY: `plan` is valid in the copy of the caller's memory.
        0 => child(unsafe { &*plan }),
        pid => Ok(pid as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{exit_immediately, waitid_pidfd, write_all_raw, ExitStatus};
    use std::os::fd::AsFd;

    struct Plan {
        fd: RawFd,
        code: i32,
    }

    extern "C" fn write_and_exit(plan: &Plan) -> ! {
        let _ = write_all_raw(plan.fd, b"hello from the child");
        exit_immediately(plan.code)
    }

    #[test]
    fn the_child_runs_on_its_stack_reads_its_plan_and_exits() {
        let (read, write) = crate::sys::pipe_cloexec().expect("pipe");
        let plan = Box::new(Plan {
            fd: write.as_raw_fd(),
            code: 7,
        });
        let spec = CloneSpec {
            flags: 0,
            cgroup: None,
            exit_signal: libc::SIGCHLD,
        };
        // SAFETY: the child only writes to a descriptor and exits.
        let (_, pidfd, child) = unsafe { clone3_exec(spec, write_and_exit, plan) }.expect("clone3");
        drop(write);
        child.wait_exec();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut got).expect("read");
        assert_eq!(got, "hello from the child");
        match waitid_pidfd(pidfd.as_fd(), false) {
            Ok(Some(ExitStatus::Exited(7))) => {}
            other => panic!("expected exit 7, got {other:?}"),
        }
    }

    #[test]
    fn the_parents_memory_is_shared_not_copied() {
        // The child writes into the parent's memory through the plan: only
        // possible when the two share it (a fork would write a copy).
        struct Shared {
            seen: std::sync::atomic::AtomicU32,
        }
        extern "C" fn mark(plan: &Shared) -> ! {
            plan.seen.store(42, std::sync::atomic::Ordering::SeqCst);
            exit_immediately(0)
        }
        let spec = CloneSpec {
            flags: 0,
            cgroup: None,
            exit_signal: libc::SIGCHLD,
        };
        let plan = Box::new(Shared {
            seen: std::sync::atomic::AtomicU32::new(0),
        });
        let seen: *const std::sync::atomic::AtomicU32 = &plan.seen;
        // SAFETY: the child only stores to an atomic and exits.
        let (_, pidfd, child) = unsafe { clone3_exec(spec, mark, plan) }.expect("clone3");
        let _ = waitid_pidfd(pidfd.as_fd(), false);
        // SAFETY: `child` still owns the plan (not yet waited for).
        let value = unsafe { &*seen }.load(std::sync::atomic::Ordering::SeqCst);
        child.wait_exec();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(value, 42);
        #[cfg(not(target_arch = "x86_64"))]
        assert_eq!(value, 0);
    }
}
