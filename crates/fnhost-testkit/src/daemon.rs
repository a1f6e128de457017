//! Starting and stopping a real `fnhost serve`: spawn it on a config, read
//! its address (and its admin API's) from stdout, wait until `/healthz`
//! answers when asked to, and always stop it again — SIGTERM, a grace
//! period, SIGKILL — on error paths and on drop too.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::leaks::{cgroup_dirs, remove_cgroups};
use crate::log::Log;

const READY_PREFIX: &str = "fnhost: listening on ";
const ADMIN_PREFIX: &str = "fnhost: admin API on ";

/// Where the daemon's stderr goes.
#[derive(Debug, Clone)]
pub enum LogTo {
    /// Kept in memory: the last lines for errors, warnings for reports.
    Capture,
    /// Written to this file.
    File(PathBuf),
}

/// What to make of the second stdout line (the admin API's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminLine {
    /// Do not wait for it.
    Ignore,
    /// Read it; an admin API on TCP gives [`Daemon::admin`].
    Optional,
    /// It must name the admin API, or the start fails.
    Required,
}

/// What to do with cgroups left under the daemon's root after it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leftovers {
    Remove,
    /// Remove, then panic (unless already panicking): a leak is a bug.
    Fail,
}

/// How to run one daemon. [`Launch::start`] runs it.
#[derive(Debug, Clone)]
pub struct Launch {
    binary: PathBuf,
    config: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    log: LogTo,
    admin: AdminLine,
    healthy: bool,
    startup_timeout: Duration,
    stop_grace: Duration,
    parent_death: bool,
    cgroup_root: Option<(String, Leftovers)>,
    name: String,
}

impl Launch {
    /// `binary serve --config config`, stderr captured, waiting for the
    /// address only, 60 s to start, 15 s to drain after SIGTERM.
    pub fn new(binary: &Path, config: &Path) -> Self {
        Self {
            binary: binary.to_path_buf(),
            config: config.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            log: LogTo::Capture,
            admin: AdminLine::Ignore,
            healthy: false,
            startup_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(15),
            parent_death: false,
            cgroup_root: None,
            name: "fnhost-testkit".to_owned(),
        }
    }

    /// Who launches (prefixes this crate's messages, e.g. `fnhost-bench`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// One more argument after `serve --config FILE`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.into(), None));
        self
    }

    pub fn log(mut self, log: LogTo) -> Self {
        self.log = log;
        self
    }

    pub fn admin(mut self, admin: AdminLine) -> Self {
        self.admin = admin;
        self
    }

    /// Also wait until `GET /healthz` answers 200.
    pub fn wait_healthy(mut self) -> Self {
        self.healthy = true;
        self
    }

    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// SIGTERM the daemon if the thread that starts it exits
    /// (PR_SET_PDEATHSIG): start it from the thread that outlives the run.
    pub fn parent_death_signal(mut self) -> Self {
        self.parent_death = true;
        self
    }

    /// After the daemon stopped on drop, remove cgroups left under `root`.
    pub fn remove_leftover_cgroups(mut self, root: &str) -> Self {
        self.cgroup_root = Some((root.to_owned(), Leftovers::Remove));
        self
    }

    /// Like [`Launch::remove_leftover_cgroups`], then panic: for tests,
    /// where a cgroup left after stop is a teardown bug.
    pub fn fail_on_leftover_cgroups(mut self, root: &str) -> Self {
        self.cgroup_root = Some((root.to_owned(), Leftovers::Fail));
        self
    }

    /// Spawns the daemon and returns once it has printed its address (and
    /// admin line, and answers `/healthz`, as configured). Blocks.
    pub fn start(self) -> Result<Daemon> {
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        match &self.log {
            LogTo::Capture => command.stderr(Stdio::piped()),
            LogTo::File(path) => command.stderr(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            ),
        };
        if self.parent_death {
            // SAFETY: the closure runs in the forked child before exec and
            // only makes the prctl system call (async-signal-safe, no
            // allocation, no locks).
            unsafe {
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
                });
            }
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {} serve", self.binary.display()))?;
        let stdout = child.stdout.take().context("fnhost's stdout is piped")?;
        let log = match (&self.log, child.stderr.take()) {
            (LogTo::Capture, Some(stderr)) => Log::capture(stderr),
            (LogTo::File(path), _) => Log::File(path.clone()),
            (LogTo::Capture, None) => bail!("fnhost's stderr was not piped"),
        };
        let lines = spawn_stdout_reader(stdout);
        // From here on, `daemon` going out of scope stops the process.
        let mut daemon = Daemon {
            pid: child.id(),
            child,
            status: None,
            url: String::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_url: None,
            admin: None,
            log,
            stop_grace: self.stop_grace,
            cgroup_root: self.cgroup_root.clone(),
            name: self.name.clone(),
        };
        let deadline = Instant::now() + self.startup_timeout;
        let url = daemon.read_line(&lines, READY_PREFIX, deadline)?;
        daemon.addr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("fnhost printed an unusable address {url:?}"))?;
        daemon.url = url;
        match self.admin {
            AdminLine::Ignore => {}
            AdminLine::Optional => {
                // "admin API off" and a Unix socket leave `admin` unset.
                let line = daemon.next_line(&lines, ADMIN_PREFIX, deadline)?;
                daemon.admin_url = line.strip_prefix(ADMIN_PREFIX).map(str::to_owned);
            }
            AdminLine::Required => {
                daemon.admin_url = Some(daemon.read_line(&lines, ADMIN_PREFIX, deadline)?);
            }
        }
        daemon.admin = daemon
            .admin_url
            .as_deref()
            .and_then(|u| u.strip_prefix("http://"))
            .and_then(|a| a.parse().ok());
        if self.healthy {
            daemon.wait_healthy(deadline, self.startup_timeout)?;
        }
        Ok(daemon)
    }
}

/// A running `fnhost serve`. Dropping it stops the daemon.
pub struct Daemon {
    child: Child,
    pid: u32,
    status: Option<ExitStatus>,
    url: String,
    addr: SocketAddr,
    admin_url: Option<String>,
    admin: Option<SocketAddr>,
    log: Log,
    stop_grace: Duration,
    cgroup_root: Option<(String, Leftovers)>,
    name: String,
}

impl Daemon {
    /// `http://ADDR`, as the daemon printed it.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
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
    fn read_line(
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
    fn next_line(
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

    fn wait_healthy(&mut self, deadline: Instant, timeout: Duration) -> Result<()> {
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
            panic!("daemon left cgroups behind after stop ({status:?}): {leftovers:?}");
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
fn spawn_stdout_reader(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}
