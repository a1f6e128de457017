//! The fnhost integration tests' side of fnhost-testkit: this package's
//! binary and test functions, the `[server]` section every test config
//! gets, and a daemon that fails the test if it leaves cgroups behind.

#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fnhost_sandbox::cgroup::names::{self, Member};
pub use fnhost_testkit::{
    cgroup_dirs, children, comm, descendants, eventually, fd_count, fds_of_kind, forker_processes,
    http, http_with, mount_count, require_root, sandbox_processes, Response,
};
use fnhost_testkit::{AdminLine, Launch, LogTo, ServerSection};

pub fn probe_code() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/functions/probe")
}

pub fn hello_code() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/functions/hello")
}

/// One `[[functions]]` entry of a Python function; `extra` is appended
/// verbatim (more keys).
pub fn python_function(name: &str, code: &Path, handler: &str, extra: &str) -> String {
    format!(
        "[[functions]]\nname = \"{name}\"\nruntime = \"python3\"\ncode = \"{}\"\nhandler = \"{handler}\"\n{extra}\n",
        code.display()
    )
}

/// `fnhost-test-<pid>-<n>`: tests run in parallel, each on its own root.
pub fn unique_cgroup_root() -> String {
    fnhost_testkit::unique_cgroup_root("fnhost-test")
}

/// Writes a config with `[server]` filled in for the test and `functions`
/// appended verbatim.
pub fn write_config(dir: &Path, cgroup_root: &str, server_extra: &str, functions: &str) -> PathBuf {
    // The state dir lives here: sandboxes (user namespace) must traverse it.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .expect("chmod test dir");
    }
    let mut server = ServerSection::new(&dir.join("state"), cgroup_root);
    server.shutdown_grace_ms = Some(2000);
    // Every test daemon gets its own admin port unless the test sets one.
    if !server_extra.contains("admin_listen") {
        server.admin_listen = Some("127.0.0.1:0".to_owned());
    }
    server.extra = server_extra.to_owned();
    let path = dir.join("fnhost.toml");
    std::fs::write(&path, format!("{}\n{functions}", server.to_toml())).expect("write config");
    path
}

/// A running `fnhost serve` of this package. Dropping it stops the daemon,
/// then removes any cgroup left under its root and fails the test.
pub struct Daemon {
    inner: fnhost_testkit::Daemon,
    pub addr: SocketAddr,
    /// Admin API address, when it listens on TCP.
    pub admin: Option<SocketAddr>,
    pub config: PathBuf,
    pub cgroup_root: String,
    // Declared after `inner`: removed only once the daemon has stopped.
    pub dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start(functions: &str) -> Daemon {
        Self::start_with(functions, "")
    }

    pub fn start_with(functions: &str, server_extra: &str) -> Daemon {
        Self::start_customized(functions, server_extra, |launch| launch)
    }

    /// Starts a daemon on an existing config file inside `dir`.
    pub fn start_config(dir: tempfile::TempDir, config: PathBuf, cgroup_root: String) -> Daemon {
        Self::start_config_env(dir, config, cgroup_root, &[])
    }

    /// [`Daemon::start_config`] with extra environment variables.
    pub fn start_config_env(
        dir: tempfile::TempDir,
        config: PathBuf,
        cgroup_root: String,
        env: &[(&str, &str)],
    ) -> Daemon {
        Self::launch(dir, config, cgroup_root, |mut launch| {
            for (key, value) in env {
                launch = launch.env(key, value);
            }
            launch
        })
    }

    /// Like [`Daemon::start_with`], with the daemon's `RLIMIT_NOFILE`
    /// lowered to `limit`.
    #[allow(dead_code)] // not every test binary uses it
    pub fn start_with_open_file_limit(functions: &str, server_extra: &str, limit: u64) -> Daemon {
        Self::start_customized(functions, server_extra, |launch| {
            launch.open_file_limit(limit)
        })
    }

    /// A fresh config of `functions` in a fresh directory, launched with
    /// `customize` applied.
    fn start_customized(
        functions: &str,
        server_extra: &str,
        customize: impl FnOnce(Launch) -> Launch,
    ) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let cgroup_root = unique_cgroup_root();
        let config = write_config(dir.path(), &cgroup_root, server_extra, functions);
        Self::launch(dir, config, cgroup_root, customize)
    }

    fn launch(
        dir: tempfile::TempDir,
        config: PathBuf,
        cgroup_root: String,
        customize: impl FnOnce(Launch) -> Launch,
    ) -> Daemon {
        let launch = customize(Launch::new(
            Path::new(env!("CARGO_BIN_EXE_fnhost")),
            &config,
        ));
        let inner = launch
            .name("fnhost-test")
            .env("FNHOST_LOG", "info")
            .log(LogTo::File(dir.path().join("stderr.log")))
            .admin(AdminLine::Optional)
            .startup_timeout(Duration::from_secs(120))
            .stop_grace(Duration::from_secs(20))
            .fail_on_leftover_cgroups(&cgroup_root)
            .start()
            .unwrap_or_else(|e| panic!("daemon did not start: {e:#}"));
        Daemon {
            addr: inner.addr(),
            admin: inner.admin(),
            inner,
            config,
            cgroup_root,
            dir,
        }
    }

    /// A request to the admin API with `token`, else the one the daemon
    /// generated (none when `admin_token` is configured).
    pub fn admin(&self, method: &str, path: &str, body: &str, token: Option<&str>) -> Response {
        let addr = self.admin.expect("admin API listens on TCP");
        let token = token.or(self.inner.admin_token());
        http_with(addr, method, path, body.as_bytes(), token)
    }

    /// Sends SIGHUP (config reload).
    pub fn sighup(&self) {
        self.inner
            .signal(nix::sys::signal::Signal::SIGHUP)
            .expect("SIGHUP to the daemon");
    }

    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    pub fn stderr(&self) -> String {
        self.inner.log_text()
    }

    /// Invokes `function`; a transport failure (no answer at all) panics
    /// with the tail of the daemon's log, which says why.
    pub fn invoke(&self, function: &str, body: &str) -> Response {
        let path = format!("/v1/functions/{function}/invoke");
        fnhost_testkit::http::request(
            self.addr,
            "POST",
            &path,
            body.as_bytes(),
            None,
            fnhost_testkit::http::DEFAULT_TIMEOUT,
        )
        .unwrap_or_else(|e| {
            let log = self.stderr();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "POST {path}: {e:#}\n--- the daemon's log, last lines ---\n{}",
                tail.join("\n")
            )
        })
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.inner.stop()
    }

    /// SIGKILL, no cleanup: a crash.
    pub fn crash(&mut self) -> Option<std::process::ExitStatus> {
        self.inner.kill()
    }

    /// Cgroup directories fnhost has under its root, across hierarchies.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_root)
    }

    /// Every process in `function`'s zygote cgroups (any hierarchy),
    /// sorted, each once.
    #[allow(dead_code)] // not every test binary uses it
    pub fn zygote_pids(&self, function: &str) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .cgroup_dirs()
            .into_iter()
            .filter(|d| {
                d.to_str()
                    .and_then(names::parse)
                    .is_some_and(|member| member == (function, Member::Zygote))
            })
            .flat_map(|d| {
                std::fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|p| p.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}
