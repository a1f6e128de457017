//! A running `fnhost serve`: its addresses, pid and log, signals, and
//! stopping it — SIGTERM, a grace period, SIGKILL — idempotently and on
//! drop, then removing (or failing on) cgroups it left behind. Startup
//! reads its address lines from stdout and can wait for `/healthz`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::launch::Leftovers;
use crate::leaks::{cgroup_dirs, remove_cgroups};
use crate::log::Log;

pub(crate) const READY_PREFIX: &str = "fnhost: listening on ";
pub(crate) const ADMIN_PREFIX: &str = "fnhost: admin API on ";

/// A running `fnhost serve`. Dropping it stops the daemon.
pub struct Daemon {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) status: Option<ExitStatus>,
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
    pub(crate) admin_url: Option<String>,
    pub(crate) admin: Option<SocketAddr>,
    /// The admin API's bearer token when the daemon generated one.
    pub(crate) admin_token: Option<String>,
    pub(crate) log: Log,
    pub(crate) stop_grace: Duration,
    pub(crate) cgroup_root: Option<(String, Leftovers)>,
    pub(crate) name: String,
}

impl Daemon {
    /// `http://ADDR`, as the daemon printed it.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token the daemon generated for its admin API (no
    /// `admin_token` configured, TCP listener), read from the file it named.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// The admin API's URL as printed (`http://ADDR` or a socket path), when read.
    pub fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref()
    }

    /// The admin API's address, when it listens on TCP.
    pub fn admin(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The daemon's pid (its zygotes and clones are its descendants).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `n` lines of its stderr.
    pub fn log_tail(&self, n: usize) -> String {
        self.log.tail(n)
    }

    /// Its stderr so far (when captured: the last 40 lines).
    pub fn log_text(&self) -> String {
        self.log.text()
    }

    /// The last WARN and ERROR lines of its log (up to 20), without colours.
    pub fn warnings(&self) -> Vec<String> {
        self.log.warnings()
    }

    /// Sends `signal` (e.g. SIGHUP for a reload) unless it has been reaped.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        // Not reaped yet: the pid is still ours (a zombie keeps it).
        if self.status.is_some() {
            bail!("fnhost (pid {}) has exited", self.pid);
        }
        kill(self.nix_pid()?, signal)
            .with_context(|| format!("{signal} to fnhost pid {}", self.pid))
    }

    /// SIGKILL and reap, without any cleanup: simulates a crash.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.exited() {
            return self.status;
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.status
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL. Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.exited() {
            return self.status;
        }
        if let Err(e) = self
            .nix_pid()
            .and_then(|pid| Ok(kill(pid, Signal::SIGTERM)?))
        {
            eprintln!(
                "{}: SIGTERM to fnhost (pid {}) failed: {e:#}",
                self.name, self.pid
            );
        }
        if let Some(status) = self.wait_exit(self.stop_grace) {
            return Some(status);
        }
        eprintln!(
            "{}: fnhost (pid {}) still running {} s after SIGTERM; sending SIGKILL",
            self.name,
            self.pid,
            self.stop_grace.as_secs()
        );
        self.kill()
    }

    /// Whether it has exited (and been reaped); caches the status.
    fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status.is_some()
    }

    fn nix_pid(&self) -> Result<Pid> {
        let pid = i32::try_from(self.pid).context("pid out of range")?;
        Ok(Pid::from_raw(pid))
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while !self.exited() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        self.status
    }

    /// The next stdout line, which must be `prefix` followed by the value.
    pub(crate) fn read_line(
        &mut self,
        lines: &Receiver<String>,
        prefix: &str,
        deadline: Instant,
    ) -> Result<String> {
        let line = self.next_line(lines, prefix, deadline)?;
        match line.strip_prefix(prefix) {
            Some(value) => Ok(value.to_owned()),
            None => bail!(
                "unexpected stdout line from fnhost: {line:?} (expected \"{prefix}http://ADDR\"){}",
                self.log.context()
            ),
        }
    }

    /// The next stdout line; fails if the daemon exits or `deadline` passes.
    pub(crate) fn next_line(
        &mut self,
        lines: &Receiver<String>,
        prefix: &str,
        deadline: Instant,
    ) -> Result<String> {
        loop {
            // Poll in short slices: if the daemon dies while a child of it
            // still holds the stdout pipe, EOF never arrives.
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => return Ok(line.trim_end().to_owned()),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(2));
                    // Give the stderr reader a moment to collect the last lines.
                    thread::sleep(Duration::from_millis(200));
                    bail!(
                        "fnhost closed stdout before printing \"{prefix}http://ADDR\" ({}){}",
                        describe_exit(status),
                        self.log.context()
                    );
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.check_running(&format!("before printing \"{prefix}http://ADDR\""))?;
            if Instant::now() >= deadline {
                bail!(
                    "fnhost did not print \"{prefix}http://ADDR\" in time{}",
                    self.log.context()
                );
            }
        }
    }

    pub(crate) fn wait_healthy(&mut self, deadline: Instant, timeout: Duration) -> Result<()> {
        loop {
            let last = match crate::http::request(
                self.addr,
                "GET",
                "/healthz",
                b"",
                None,
                Duration::from_secs(5),
            ) {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => format!("status {}", r.status),
                Err(err) => format!("{err:#}"),
            };
            self.check_running("before becoming healthy")?;
            if Instant::now() >= deadline {
                bail!(
                    "fnhost at {} did not answer GET /healthz with 200 within {} s (last: {last}){}",
                    self.url,
                    timeout.as_secs(),
                    self.log.context()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn check_running(&mut self, when: &str) -> Result<()> {
        if !self.exited() {
            return Ok(());
        }
        // Give the stderr reader a moment to collect the last lines.
        thread::sleep(Duration::from_millis(200));
        bail!(
            "fnhost exited {when} ({}){}",
            describe_exit(self.status),
            self.log.context()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let already = self.status.is_some();
        let status = self.stop();
        if !already && !status.is_some_and(|s| s.success()) {
            eprintln!("{}: fnhost stopped: {}", self.name, describe_exit(status));
        }
        let Some((root, policy)) = &self.cgroup_root else {
            return;
        };
        let leftovers = cgroup_dirs(root);
        if leftovers.is_empty() {
            return;
        }
        // Remove them so one failure does not leak into the machine.
        remove_cgroups(&leftovers);
        if *policy == Leftovers::Fail && !thread::panicking() {
            // The log says why: a daemon that failed to start is dropped
            // here before its start error is printed.
            panic!(
                "daemon left cgroups behind after stop ({}): {leftovers:?}{}",
                describe_exit(status),
                self.log.context()
            );
        }
    }
}

fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "exit status unknown".to_owned(),
    }
}

/// Forwards stdout lines over a channel; keeps draining after the lines
/// anyone waits for, so the daemon never blocks on a full pipe.
pub(crate) fn spawn_stdout_reader(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}
