//! How to run one `fnhost serve` for a test or a measurement: binary,
//! config, arguments, environment, where stderr goes, which stdout lines
//! to wait for, timeouts and what to clean up after it; `start` spawns it
//! and returns the running [`Daemon`] once it is ready.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use crate::daemon::{spawn_stdout_reader, Daemon, ADMIN_PREFIX, READY_PREFIX};
use crate::log::Log;

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
pub(crate) enum Leftovers {
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
    open_files: Option<u64>,
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
            open_files: None,
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

    /// Runs the daemon with `RLIMIT_NOFILE` lowered to `limit` (soft and
    /// hard): a host whose open-file limit is what runs out.
    pub fn open_file_limit(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
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
            // Runs in the forked child before exec.
            // SAFETY: it only calls prctl (async-signal-safe: no allocation, no locks).
            unsafe {
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
                });
            }
        }
        if let Some(limit) = self.open_files {
            // Runs in the forked child before exec.
            // SAFETY: only setrlimit runs there (async-signal-safe, no locks).
            unsafe {
                command.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        limit,
                        limit,
                    )
                    .map_err(std::io::Error::from)
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
            admin_token: None,
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
        // "http://ADDR" or "http://ADDR (bearer token in FILE)" when the
        // daemon generated the admin API's token.
        if let Some(line) = daemon.admin_url.take() {
            let (url, token_file) = match line.split_once(" (bearer token in ") {
                Some((url, rest)) => (url.to_owned(), Some(rest.trim_end_matches(')').to_owned())),
                None => (line, None),
            };
            if let Some(file) = token_file {
                let token = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading the admin token file {file}"))?;
                daemon.admin_token = Some(token.trim().to_owned());
            }
            daemon.admin_url = Some(url);
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
