//! Network namespaces reused by a zygote's clones, one clone at a time.
//!
//! Every clone with `network = "none"` gets a network namespace of its own.
//! Creating one and tearing it down afterwards is the most expensive kernel
//! work of an invocation: `perf` of a closed-loop run put `copy_net_ns` and
//! `cleanup_net` at 18% of all CPU time (loopback registration, sysctl
//! tables, the TIME_WAIT purge), about as much as forking and exiting the
//! clone together.
//!
//! A process can only create namespaces owned by the user namespace it is
//! in, and the zygote cannot leave its own. So the zygote keeps **forkers**:
//! a forker is a fork of the zygote cloned into a user and network
//! namespace of its own (mapped and with its loopback up once). On each
//! request it forks one clone into them, with fresh mount, pid, ipc and uts
//! namespaces, as the zygote's child (`CLONE_PARENT`). The zygote hands a
//! request to a forker whose last clone has exited (its pidfd turns
//! readable once every process of that clone's pid namespace is gone), so
//! two live clones never share a network namespace. With none idle, the
//! request is cloned the old way (with a new network namespace) and, from
//! the second such clone since the zygote started or woke up, the zygote
//! starts a forker once it has answered: a first clone (cold start,
//! wake-up) never waits for one, and a function invoked once per wake-up
//! never starts one.
//!
//! A forker runs only fnhost's fork loop; it holds the capabilities of its
//! own user namespace, like a clone during its setup, and nothing else.
//!
//! What one invocation can leave in a network namespace for a later
//! invocation of the same function is bounded by what it could do without
//! capabilities: no interface, address, route, sysctl or firewall change
//! (its setup drops every capability before function code runs). What
//! remains are TCP connections still closing (TIME_WAIT, up to 60 s: a later
//! `bind` of the same port without `SO_REUSEADDR` may fail with EADDRINUSE)
//! and the loopback's packet counters.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use fnhost_sandbox::sys::{self, CloneSpec, Forked};

use crate::clone_request::{invocation_fd, CloneRequest, SANDBOX_ID};
use crate::control::{self, Received};
use crate::protocol::{DaemonMessage, ZygoteMessage};

/// An idle forker unused this long is stopped (each holds a process and a
/// network namespace, a few hundred KiB): a zygote keeps about as many as
/// its recent peak of clones alive at once.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Forkers a zygote runs at most (idle and busy): past it, clones are made
/// the fresh way, each with a network namespace of its own.
pub const MAX_FORKERS: usize = 64;

/// A forker as the zygote sees it.
#[derive(Debug)]
pub struct Forker {
    /// The zygote's end of the forker's channel (seqpacket).
    channel: OwnedFd,
    /// The forker process: readable once it exited.
    process: OwnedFd,
    /// The last clone it made, while the zygote follows it.
    last_clone: Option<OwnedFd>,
    /// When it was last given a request.
    last_used: Instant,
}

impl Forker {
    fn exited(fd: &OwnedFd) -> bool {
        sys::poll_readable(fd.as_fd(), 0).unwrap_or(true)
    }

    fn alive(&self) -> bool {
        !Self::exited(&self.process)
    }

    /// Its last clone (if any) has exited.
    fn clone_done(&self) -> bool {
        self.last_clone.as_ref().is_none_or(Self::exited)
    }

    /// Ends the forker: closing its channel ends its loop; the kill makes
    /// that certain.
    fn stop(self) {
        let _ = sys::pidfd_send_signal(self.process.as_fd(), libc::SIGKILL);
    }
}

/// A zygote's forkers.
#[derive(Debug, Default)]
pub struct Forkers {
    all: Vec<Forker>,
    /// Set when a forker could not be started for a reason that will not
    /// pass (the kernel or the profile refuses): clone the fresh way.
    disabled: bool,
    /// A request found no idle forker: start one once it is answered.
    wanted: bool,
    /// Clones made the old way since the zygote started or woke up. The
    /// first never starts a forker: a function invoked once per wake-up
    /// would start one per wake-up and never use it.
    fresh: u32,
}

/// What [`Forkers::clone`] did.
#[derive(Debug)]
pub enum Outcome {
    /// In the zygote: the clone was made (its pid in the zygote's pid
    /// namespace and a pidfd) and is followed for reuse.
    Made { pid: i32, pidfd: OwnedFd },
    /// In the zygote: no forker could make it; the request comes back for a
    /// fresh clone, with what failed (`None`: forkers are off, or all busy).
    Unavailable {
        request: CloneRequest,
        invocation: OwnedFd,
        why: Option<String>,
    },
}

/// In a new clone a forker made: what to set it up with.
#[derive(Debug)]
pub struct InClone {
    pub request: CloneRequest,
    pub invocation: OwnedFd,
    /// The forker's end of its channel, to close.
    pub channel: RawFd,
}

impl Forkers {
    /// Forkers running.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Stops every forker (before the zygote hibernates: an idle function
    /// should hold no process or namespace it does not need).
    pub fn stop_all(&mut self) {
        self.all.drain(..).for_each(Forker::stop);
        self.fresh = 0;
    }

    /// Takes the idle forker used last, stopping dead ones and idle ones
    /// unused for [`IDLE_TIMEOUT`].
    fn take_idle(&mut self) -> Option<Forker> {
        let now = Instant::now();
        let mut taken: Option<Forker> = None;
        // One look at each forker's process and last clone.
        for forker in std::mem::take(&mut self.all) {
            if !forker.alive() {
                forker.stop();
                continue;
            }
            if !forker.clone_done() {
                self.all.push(forker);
            } else if now - forker.last_used >= IDLE_TIMEOUT {
                forker.stop();
            } else if taken
                .as_ref()
                .is_none_or(|t| forker.last_used > t.last_used)
            {
                self.all.extend(taken.replace(forker));
            } else {
                self.all.push(forker);
            }
        }
        taken
    }

    /// Has an idle forker make a clone for `request`. With none idle the
    /// request comes back (the caller clones it the fresh way, at the old
    /// cost) and, from the second such clone since the zygote started or
    /// woke up, [`Forkers::prepare`] starts a forker after the reply: a
    /// first clone (a cold start, a wake-up) never waits for one, and a
    /// function invoked once per wake-up never starts one.
    pub fn clone(&mut self, request: CloneRequest, invocation: OwnedFd) -> Outcome {
        let unavailable = |request, invocation, why: Option<String>| Outcome::Unavailable {
            request,
            invocation,
            why,
        };
        if self.disabled {
            return unavailable(request, invocation, None);
        }
        let Some(mut forker) = self.take_idle() else {
            self.fresh = self.fresh.saturating_add(1);
            self.wanted = self.fresh >= 2 && self.all.len() < MAX_FORKERS;
            return unavailable(request, invocation, None);
        };
        let message = DaemonMessage::Clone {
            request: request.clone(),
        };
        if control::send(forker.channel.as_fd(), &message, &[invocation.as_raw_fd()]).is_err() {
            return unavailable(request, invocation, Some("forker gone".into()));
        }
        match control::recv::<ZygoteMessage>(forker.channel.as_fd()) {
            Ok(Received::Message(ZygoteMessage::Cloned { pid, .. }, mut fds)) if fds.len() == 1 => {
                let pidfd = fds.remove(0);
                match pidfd.try_clone() {
                    Ok(follow) => {
                        forker.last_clone = Some(follow);
                        forker.last_used = Instant::now();
                        self.all.push(forker);
                    }
                    // Not followed: that forker cannot be reused safely.
                    Err(_) => forker.stop(),
                }
                Outcome::Made { pid, pidfd }
            }
            Ok(Received::Message(ZygoteMessage::CloneFailed { message, .. }, _)) => {
                unavailable(request, invocation, Some(message))
            }
            Ok(other) => {
                let why = format!("forker answered {other:?}");
                unavailable(request, invocation, Some(why))
            }
            Err(e) => unavailable(request, invocation, Some(format!("forker channel: {e}"))),
        }
    }

    /// Starts a forker if a request found none idle. `control` is the
    /// zygote's channel to the daemon (the forker closes its copy). Call it
    /// holding no invocation socket. Returns only in the zygote (`None`) or
    /// in a clone a new forker made (`Some`).
    ///
    /// # Safety
    /// As [`sys::clone3`]: with `Some` the caller is the clone and must
    /// never return into code that assumes it is the zygote.
    pub unsafe fn prepare(&mut self, control: RawFd, outside_ids: (u32, u32)) -> Option<InClone> {
        if !std::mem::take(&mut self.wanted) || self.disabled {
            return None;
        }
        // SAFETY: the caller's contract.
        match unsafe { self.start(control, outside_ids) } {
            Ok(Started::Zygote(forker)) => {
                self.all.push(forker);
                None
            }
            // In the new forker: serve until the zygote goes.
            Ok(Started::Forker(channel)) => Some(serve(channel)),
            Err(e) => {
                // A namespace the kernel refuses now (a limit such as
                // user.max_net_namespaces) may be allowed later; one it
                // refuses on principle (EPERM, EINVAL) never will.
                if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) {
                    self.disabled = true;
                }
                eprintln!("fnhost zygote: cannot start a forker ({e}); clones get a new network namespace each");
                None
            }
        }
    }

    /// Starts a forker: a fork of the zygote in a user and network namespace
    /// of its own.
    ///
    /// # Safety
    /// As [`sys::clone3`].
    unsafe fn start(&mut self, control: RawFd, outside_ids: (u32, u32)) -> io::Result<Started> {
        let (zygote_end, forker_end) = control::channel_pair()?;
        let spec = CloneSpec {
            flags: (libc::CLONE_NEWUSER | libc::CLONE_NEWNET) as u64,
            cgroup: None,
            exit_signal: libc::SIGCHLD,
        };
        // SAFETY: the caller's contract.
        match unsafe { sys::clone3(spec) }? {
            Forked::Parent { pidfd, .. } => Ok(Started::Zygote(Forker {
                channel: zygote_end,
                process: pidfd,
                last_clone: None,
                last_used: Instant::now(),
            })),
            Forked::Child => {
                // The forker must hold nothing of the zygote's but its own
                // channel: not the daemon's control socket, not the other
                // forkers' channels (dropping them closes only this
                // process's copies).
                let _ = nix::unistd::close(control);
                drop(std::mem::take(&mut self.all));
                drop(zygote_end);
                let setup = sys::map_own_ids((SANDBOX_ID, SANDBOX_ID), outside_ids)
                    .map_err(|e| format!("map ids: {e}"))
                    .and_then(|()| {
                        fnhost_sandbox::net::bring_up_loopback()
                            .map_err(|e| format!("bring up loopback: {e}"))
                    });
                if let Err(message) = setup {
                    eprintln!("fnhost forker: {message}");
                    sys::exit_immediately(1);
                }
                Ok(Started::Forker(forker_end))
            }
        }
    }
}

enum Started {
    Zygote(Forker),
    Forker(OwnedFd),
}

/// The forker's loop: one clone per request, into its namespaces. Returns
/// only in a new clone.
fn serve(channel: OwnedFd) -> InClone {
    loop {
        let (request, fds) = match control::recv::<DaemonMessage>(channel.as_fd()) {
            Ok(Received::Message(DaemonMessage::Clone { request }, fds)) => (request, fds),
            Ok(Received::Message(_, _)) => continue,
            // The zygote is gone (or hibernating): nothing to serve.
            Ok(Received::Closed) | Err(_) => sys::exit_immediately(0),
        };
        let sandbox = request.sandbox;
        let failed = |message: String| {
            let _ = control::send(
                channel.as_fd(),
                &ZygoteMessage::CloneFailed { sandbox, message },
                &[],
            );
        };
        let invocation = match invocation_fd(fds) {
            Ok(fd) => fd,
            Err(e) => {
                failed(e.to_string());
                continue;
            }
        };
        let started = Instant::now();
        // clone3 refuses an exit signal with CLONE_PARENT: the clone gets
        // the forker's (SIGCHLD, which the zygote ignores: the kernel reaps
        // it).
        let spec = CloneSpec {
            flags: (fnhost_sandbox::CLONE_NAMESPACES & !(libc::CLONE_NEWUSER as u64))
                | libc::CLONE_PARENT as u64,
            cgroup: None,
            exit_signal: 0,
        };
        // A forker is a fork of the zygote's one serving thread.
        // SAFETY: single-threaded, and the clone returns out of this loop for good.
        match unsafe { sys::clone3(spec) } {
            Ok(Forked::Child) => {
                return InClone {
                    request,
                    invocation,
                    channel: channel.as_raw_fd(),
                }
            }
            Ok(Forked::Parent { pid, pidfd }) => {
                let reply = ZygoteMessage::Cloned {
                    sandbox,
                    pid,
                    fork_us: started.elapsed().as_micros() as u64,
                };
                if control::send(channel.as_fd(), &reply, &[pidfd.as_raw_fd()]).is_err() {
                    sys::exit_immediately(0);
                }
            }
            Err(e) => failed(format!("clone3 failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forker whose process and last clone are pipes: each counts as
    /// exited once its returned write end is dropped.
    struct Fake {
        forker: Forker,
        process: OwnedFd,
        clone: Option<OwnedFd>,
    }

    fn fake(clone_running: bool, used_ago: Duration) -> Fake {
        let (process_read, process) = sys::pipe_cloexec().unwrap();
        let (clone_read, clone) = sys::pipe_cloexec().unwrap();
        let channel = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        Fake {
            forker: Forker {
                channel,
                process: process_read,
                last_clone: Some(clone_read),
                last_used: Instant::now().checked_sub(used_ago).unwrap(),
            },
            process,
            clone: clone_running.then_some(clone),
        }
    }

    fn forkers(fakes: Vec<Fake>) -> (Forkers, Vec<(OwnedFd, Option<OwnedFd>)>) {
        let mut held = Vec::new();
        let mut all = Vec::new();
        for f in fakes {
            all.push(f.forker);
            held.push((f.process, f.clone));
        }
        (
            Forkers {
                all,
                disabled: false,
                wanted: false,
                fresh: 0,
            },
            held,
        )
    }

    #[test]
    fn a_forker_whose_clone_still_runs_is_never_taken() {
        let (mut forkers, _held) = forkers(vec![fake(true, Duration::ZERO)]);
        assert!(forkers.take_idle().is_none());
        assert_eq!(forkers.len(), 1, "busy, not stopped");
    }

    #[test]
    fn the_idle_forker_used_last_is_taken() {
        let (mut forkers, _held) = forkers(vec![
            fake(false, Duration::from_secs(5)),
            fake(false, Duration::from_secs(1)),
            fake(true, Duration::ZERO),
        ]);
        let taken = forkers.take_idle().unwrap();
        assert!(taken.last_used.elapsed() < Duration::from_secs(3));
        assert_eq!(forkers.len(), 2);
    }

    #[test]
    fn idle_forkers_unused_too_long_and_dead_ones_are_stopped() {
        let long_ago = IDLE_TIMEOUT + Duration::from_secs(1);
        let (mut forkers, mut held) = forkers(vec![
            fake(false, long_ago),
            // Busy for that long: kept (its clone still runs).
            fake(true, long_ago),
            fake(false, Duration::ZERO),
        ]);
        // The recent idle one's process exits.
        held[2].0 = sys::pipe_cloexec().unwrap().1;
        assert!(forkers.take_idle().is_none());
        assert_eq!(forkers.len(), 1, "only the busy one is left");
        assert!(!forkers.all[0].clone_done());
    }

    #[test]
    fn stopping_all_leaves_none() {
        let (mut forkers, _held) = forkers(vec![
            fake(false, Duration::ZERO),
            fake(true, Duration::ZERO),
        ]);
        forkers.stop_all();
        assert!(forkers.is_empty());
    }

    #[test]
    fn a_forker_is_wanted_from_the_second_clone_made_the_old_way() {
        let mut forkers = Forkers::default();
        let request = || CloneRequest {
            sandbox: 1,
            writable_bytes: 1 << 20,
            carry: Vec::new(),
        };
        let socket = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        assert!(matches!(
            forkers.clone(request(), socket()),
            Outcome::Unavailable { why: None, .. }
        ));
        assert!(!forkers.wanted, "not after the first");
        let _ = forkers.clone(request(), socket());
        assert!(forkers.wanted, "after the second");
        // A hibernation starts the count over.
        forkers.stop_all();
        forkers.wanted = false;
        let _ = forkers.clone(request(), socket());
        assert!(!forkers.wanted);
    }
}
