//! The daemon under test: writes a benchmark config and a no-op Python
//! function into a temporary directory, starts `fnhost serve`, learns its
//! address from the first stdout line (and its admin API's from the second,
//! when asked for), and always stops it again (SIGTERM, then SIGKILL after
//! a grace period), on error paths too.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper::{Method, StatusCode};
use tempfile::TempDir;

use crate::http::{Connection, Endpoint};

/// How long the daemon may take to print its address, and then to answer
/// `/healthz` with 200.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon may drain after SIGTERM before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Lines of the daemon's stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 40;
/// Warnings and errors of the daemon's log kept for the report's notes.
const STDERR_WARNING_LINES: usize = 20;
const READY_PREFIX: &str = "fnhost: listening on ";
const ADMIN_PREFIX: &str = "fnhost: admin API on ";

pub const NOOP_HANDLER: &str = "def handler(event, context):\n    return {\"ok\": True}\n";

/// Function names in the generated config.
pub const WARM_FN: &str = "noop";
pub const ONDEMAND_FN: &str = "noop-ondemand";
pub const COLD_FN: &str = "noop-cold";

/// A running `fnhost serve`. Dropping it stops the daemon; the temporary
/// directory (config, code, state) is removed after the daemon has exited.
pub struct Daemon {
    child: Child,
    url: String,
    admin_url: Option<String>,
    cgroup_root: String,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_warnings: Arc<Mutex<VecDeque<String>>>,
    // Declared last: dropped only after `Drop::drop` has stopped the daemon.
    _dir: TempDir,
}

/// Throughput, churn and density functions.
pub const TPUT_FN: &str = "noop-tput";
pub const CHURN_FN: &str = ONDEMAND_FN;
pub const DENSITY_FN: &str = "noop-density";

/// One function of a generated config: name, warm zygotes, ready clones.
#[derive(Debug, Clone, Copy)]
pub struct FunctionPool {
    pub name: &'static str,
    pub zygotes: u32,
    pub ready_clones: u32,
    /// A native Rust function (the `rust-hello` example built with
    /// fnhost-sdk) instead of the Python no-op.
    pub native: bool,
    /// Hibernation settings; `None` leaves the daemon's defaults.
    pub hibernate: Option<Hibernate>,
}

/// A function's `hibernate_*` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hibernate {
    /// `hibernate_after_ms`; 0 = never.
    pub after_ms: u64,
    /// `hibernate_mode`: `"snapshot"` or `"reclaim"`.
    pub mode: &'static str,
    /// `hibernate_prefetch`.
    pub prefetch: bool,
}

/// The functions of the latency, churn and throughput suites.
pub const BENCH_FUNCTIONS: &[FunctionPool] = &[
    // Warm: served by pre-forked ready clones.
    FunctionPool {
        name: WARM_FN,
        zygotes: 1,
        ready_clones: 4,
        native: false,
        hibernate: None,
    },
    // A warm zygote but no pre-forked clone: clone on request (also the
    // churn function: every request is one create + destroy).
    FunctionPool {
        name: ONDEMAND_FN,
        zygotes: 1,
        ready_clones: 0,
        native: false,
        hibernate: None,
    },
    // Scale to zero: every request starts a zygote.
    FunctionPool {
        name: COLD_FN,
        zygotes: 0,
        ready_clones: 0,
        native: false,
        hibernate: None,
    },
    // Throughput: enough ready clones for 16 concurrent connections.
    FunctionPool {
        name: TPUT_FN,
        zygotes: 1,
        ready_clones: 16,
        native: false,
        hibernate: None,
    },
];

/// The density suite's one function: a zygote and `clones` idle clones,
/// Python or native.
pub fn density_functions(clones: u32, native: bool) -> [FunctionPool; 1] {
    [FunctionPool {
        name: DENSITY_FN,
        zygotes: 1,
        ready_clones: clones,
        native,
        hibernate: None,
    }]
}

/// The native function's binary, built next to the fnhost binary by
/// `cargo build --release --workspace`.
pub fn native_binary(fnhost: &Path) -> PathBuf {
    fnhost.with_file_name("rust-hello")
}

/// The benchmark config for a state directory, code directory and cgroup
/// root, serving `functions` (all running the same no-op handler); `admin`
/// turns the admin API on (on a free loopback port).
pub fn config_toml(
    state_dir: &Path,
    code_dir: &Path,
    cgroup_root: &str,
    functions: &[FunctionPool],
    admin: bool,
) -> String {
    let state = toml_string(&state_dir.display().to_string());
    let code = toml_string(&code_dir.display().to_string());
    let cgroup_root = toml_string(cgroup_root);
    let native_code = toml_string(&code_dir.with_file_name("native").display().to_string());
    let functions: String = functions
        .iter()
        .map(|f| {
            let runtime = if f.native {
                format!("runtime = \"rust\"\ncode = {native_code}\ncommand = [\"/var/task/rust-hello\"]")
            } else {
                format!("runtime = \"python3\"\ncode = {code}\nhandler = \"handler.handler\"")
            };
            let hibernate = f.hibernate.map_or(String::new(), |h| {
                format!(
                    "hibernate_after_ms = {}\nhibernate_mode = {}\nhibernate_prefetch = {}\n",
                    h.after_ms,
                    toml_string(h.mode),
                    h.prefetch
                )
            });
            format!(
                "\n[[functions]]\nname = \"{}\"\n{runtime}\nzygotes = {}\nready_clones = {}\n{hibernate}",
                f.name, f.zygotes, f.ready_clones
            )
        })
        .collect();
    let admin = if admin { "127.0.0.1:0" } else { "off" };
    format!(
        "# Written by fnhost-bench.\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"{admin}\"\nstate_dir = {state}\ncgroup_root = {cgroup_root}\n\
         \n[defaults]\nmemory_mb = 128\ntimeout_ms = 10000\nmax_concurrency = 64\n{functions}"
    )
}

/// A TOML basic string. JSON string escapes (`\"`, `\\`, `\n`, `\uXXXX`, ...)
/// are all valid TOML basic-string escapes.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("serializing a str to JSON cannot fail")
}

impl Daemon {
    /// Writes the config and starts `fnhost serve`; returns once the daemon
    /// has printed its address and answers `/healthz` with 200.
    pub async fn start(fnhost: &Path, functions: &[FunctionPool]) -> Result<Self> {
        Self::start_with(fnhost, functions, false).await
    }

    /// [`Daemon::start`], with the admin API on when `admin` is set (its
    /// address is then [`Daemon::admin_url`]).
    pub async fn start_with(
        fnhost: &Path,
        functions: &[FunctionPool],
        admin: bool,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("fnhost-bench-")
            .tempdir()
            .context("creating a temporary directory for the benchmark config")?;
        // fnhost's sandboxes (user namespace) must be able to traverse it.
        fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .with_context(|| format!("chmod {}", dir.path().display()))?;
        let code_dir = dir.path().join("noop");
        let state_dir = dir.path().join("state");
        fs::create_dir_all(&code_dir)
            .with_context(|| format!("creating {}", code_dir.display()))?;
        fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        if functions.iter().any(|f| f.native) {
            let source = native_binary(fnhost);
            let native_dir = dir.path().join("native");
            fs::create_dir_all(&native_dir)
                .with_context(|| format!("creating {}", native_dir.display()))?;
            fs::copy(&source, native_dir.join("rust-hello")).with_context(|| {
                format!("copying the native example {} (build it with cargo build --release --workspace)", source.display())
            })?;
        }
        let handler = code_dir.join("handler.py");
        fs::write(&handler, NOOP_HANDLER)
            .with_context(|| format!("writing {}", handler.display()))?;
        let config_path = dir.path().join("fnhost.toml");
        let cgroup_root = format!("fnhost-bench-{}", std::process::id());
        fs::write(
            &config_path,
            config_toml(&state_dir, &code_dir, &cgroup_root, functions, admin),
        )
        .with_context(|| format!("writing {}", config_path.display()))?;

        let mut child = Command::new(fnhost)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} serve", fnhost.display()))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr = child.stderr.take().expect("stderr was piped");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_warnings = Arc::new(Mutex::new(VecDeque::new()));
        spawn_stderr_reader(stderr, stderr_tail.clone(), stderr_warnings.clone());
        let lines = spawn_stdout_reader(stdout);

        // From here on, `daemon` going out of scope stops the process.
        let mut daemon = Self {
            child,
            url: String::new(),
            admin_url: None,
            cgroup_root,
            stderr_tail,
            stderr_warnings,
            _dir: dir,
        };
        eprintln!(
            "fnhost-bench: started {} serve (pid {})",
            fnhost.display(),
            daemon.child.id()
        );
        daemon.url = daemon.wait_for_line(&lines, READY_PREFIX)?;
        if admin {
            daemon.admin_url = Some(daemon.wait_for_line(&lines, ADMIN_PREFIX)?);
        }
        daemon.wait_healthy().await?;
        Ok(daemon)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The admin API's URL, when started with it.
    pub fn admin_url(&self) -> Option<&str> {
        self.admin_url.as_deref()
    }

    /// The `server.cgroup_root` of the config: the daemon's cgroups are
    /// `<cgroup_root>/<function>/zygote` and `<cgroup_root>/<function>/s<n>`.
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// The daemon's pid (its zygotes and clones are its descendants).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the next stdout line, which must be `prefix` followed by a URL.
    fn wait_for_line(&mut self, lines: &Receiver<String>, prefix: &str) -> Result<String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            // Poll in short slices: if the daemon dies while a child of it
            // still holds the stdout pipe, EOF never arrives.
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let line = line.trim_end();
                    return match line.strip_prefix(prefix) {
                        Some(url) => Ok(url.to_owned()),
                        None => bail!(
                            "unexpected stdout line from fnhost: {line:?} (expected \
                             \"{prefix}http://ADDR\"){}",
                            self.stderr_context()
                        ),
                    };
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(2));
                    // Give the stderr reader a moment to collect the last lines.
                    thread::sleep(Duration::from_millis(200));
                    bail!(
                        "fnhost closed stdout before printing \"{prefix}http://ADDR\" ({}){}",
                        describe_exit(status),
                        self.stderr_context()
                    );
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            self.check_running(&format!("before printing \"{prefix}http://ADDR\""))?;
            if Instant::now() >= deadline {
                bail!(
                    "fnhost did not print \"{prefix}http://ADDR\" within {} s{}",
                    STARTUP_TIMEOUT.as_secs(),
                    self.stderr_context()
                );
            }
        }
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let endpoint = Endpoint::parse(&self.url)
            .with_context(|| format!("fnhost printed an unusable address {:?}", self.url))?;
        let path = endpoint.path("/healthz");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let mut conn = Connection::new(endpoint.clone());
            let last = match conn
                .send(
                    Method::GET,
                    &path,
                    bytes::Bytes::new(),
                    Duration::from_secs(5),
                )
                .await
            {
                Ok(reply) if reply.status == StatusCode::OK => return Ok(()),
                Ok(reply) => format!("status {}", reply.status),
                Err(err) => format!("{err:#}"),
            };
            self.check_running("before becoming healthy")?;
            if Instant::now() >= deadline {
                bail!(
                    "fnhost at {} did not answer GET /healthz with 200 within {} s (last: {last}){}",
                    self.url,
                    STARTUP_TIMEOUT.as_secs(),
                    self.stderr_context()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn check_running(&mut self, when: &str) -> Result<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                // Give the stderr reader a moment to collect the last lines.
                thread::sleep(Duration::from_millis(200));
                bail!(
                    "fnhost exited {when} ({}){}",
                    describe_exit(Some(status)),
                    self.stderr_context()
                )
            }
            Ok(None) => Ok(()),
            Err(err) => Err(err).context("checking whether fnhost is still running"),
        }
    }

    /// The last WARN and ERROR lines of the daemon's log (up to 20),
    /// without terminal colours.
    pub fn stderr_warnings(&self) -> Vec<String> {
        self.stderr_warnings
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn stderr_context(&self) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        if tail.is_empty() {
            "; fnhost wrote nothing to stderr".to_owned()
        } else {
            format!("; last lines of fnhost's stderr:\n{tail}")
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL. Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        send_sigterm(self.child.id());
        if let Some(status) = self.wait_exit(STOP_GRACE) {
            return Some(status);
        }
        eprintln!(
            "fnhost-bench: fnhost (pid {}) still running {} s after SIGTERM; sending SIGKILL",
            self.child.id(),
            STOP_GRACE.as_secs()
        );
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let status = self.stop();
        match status {
            Some(s) if s.success() => {}
            other => eprintln!("fnhost-bench: fnhost stopped: {}", describe_exit(other)),
        }
    }
}

fn send_sigterm(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    // `pid` is our own unreaped child (try_wait said it is running and only
    // wait reaps it), so the pid cannot have been reused by another process.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    if rc != 0 {
        eprintln!(
            "fnhost-bench: SIGTERM to fnhost (pid {pid}) failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => s.to_string(),
        None => "exit status unknown".to_owned(),
    }
}

/// Forwards stdout lines over a channel; keeps draining after the first line
/// so the daemon never blocks on a full pipe.
fn spawn_stdout_reader(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // After the first line nobody listens; keep reading anyway.
            let _ = tx.send(line);
        }
    });
    rx
}

/// Keeps the last lines of the daemon's stderr for error messages, and
/// its last warnings and errors (colours stripped) for the report.
fn spawn_stderr_reader(
    stderr: impl Read + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
    warnings: Arc<Mutex<VecDeque<String>>>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let plain = strip_ansi(&line);
            if plain.contains(" WARN ") || plain.contains(" ERROR ") {
                let Ok(mut warnings) = warnings.lock() else {
                    return;
                };
                if warnings.len() == STDERR_WARNING_LINES {
                    warnings.pop_front();
                }
                warnings.push_back(plain);
            }
            let Ok(mut tail) = tail.lock() else { return };
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The `fnhost` binary next to this executable (both land in
/// `target/<profile>/`).
pub fn default_fnhost_path() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the fnhost-bench executable")?;
    let dir = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    Ok(dir.join("fnhost"))
}

/// Checks that `path` exists before trying to run it.
pub fn check_fnhost_binary(path: &Path) -> Result<()> {
    if !path.is_file() {
        bail!(
            "fnhost binary not found at {}: build it with cargo build --release --workspace \
             (or pass --fnhost PATH, or --url URL to use a running daemon)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_three_functions_and_escapes_paths() {
        let toml = config_toml(
            Path::new("/tmp/x \"y\"/state"),
            Path::new("/tmp/x/noop"),
            "fnhost-bench-42",
            BENCH_FUNCTIONS,
            false,
        );
        assert!(
            toml.contains("state_dir = \"/tmp/x \\\"y\\\"/state\""),
            "{toml}"
        );
        assert!(toml.contains("listen = \"127.0.0.1:0\""));
        assert!(toml.contains("cgroup_root = \"fnhost-bench-42\""));
        assert_eq!(toml.matches("[[functions]]").count(), 4);
        assert!(toml.contains("name = \"noop\"\nruntime = \"python3\"\ncode = \"/tmp/x/noop\""));
        assert!(toml.contains("name = \"noop-cold\"\nruntime = \"python3\"\ncode = \"/tmp/x/noop\"\nhandler = \"handler.handler\"\nzygotes = 0\nready_clones = 0"));
    }

    #[test]
    fn config_turns_on_admin_and_hibernation_keys() {
        let functions = [FunctionPool {
            name: "hib",
            zygotes: 1,
            ready_clones: 1,
            native: false,
            hibernate: Some(Hibernate {
                after_ms: 300,
                mode: "reclaim",
                prefetch: false,
            }),
        }];
        let toml = config_toml(Path::new("/s"), Path::new("/c"), "r", &functions, true);
        assert!(toml.contains("admin_listen = \"127.0.0.1:0\""), "{toml}");
        assert!(
            toml.ends_with(
                "ready_clones = 1\nhibernate_after_ms = 300\nhibernate_mode = \"reclaim\"\n\
                 hibernate_prefetch = false\n"
            ),
            "{toml}"
        );
        let plain = config_toml(
            Path::new("/s"),
            Path::new("/c"),
            "r",
            BENCH_FUNCTIONS,
            false,
        );
        assert!(plain.contains("admin_listen = \"off\""));
        assert!(!plain.contains("hibernate"));
    }

    #[test]
    fn strips_terminal_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x"),
            "2026  WARN x"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn missing_binary_error_says_how_to_build() {
        let err = check_fnhost_binary(Path::new("/nonexistent/fnhost")).expect_err("missing");
        assert!(err
            .to_string()
            .contains("cargo build --release --workspace"));
    }

    #[tokio::test]
    async fn early_exit_reports_stderr_tail() {
        // A stand-in "fnhost" that complains and exits without an address.
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = write_script(
            dir.path(),
            "#!/bin/sh\necho 'error: config is broken' >&2\nexit 3\n",
        );

        let err = match Daemon::start(&fake, BENCH_FUNCTIONS).await {
            Ok(_) => panic!("a daemon that exits must not start"),
            Err(err) => format!("{err:#}"),
        };
        assert!(err.contains("config is broken"), "{err}");
        assert!(err.contains("exit status"), "{err}");
    }

    /// Answers 200 to everything, standing in for a healthy daemon.
    async fn start_healthy_server() -> std::net::SocketAddr {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let ok = |_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    };
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(ok))
                        .await;
                });
            }
        });
        addr
    }

    fn write_script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fnhost");
        fs::write(&path, body).expect("write script");
        let mut perms = fs::metadata(&path).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(&path, perms).expect("chmod");
        path
    }

    #[tokio::test]
    async fn starts_reads_address_and_stops_with_sigterm() {
        let addr = start_healthy_server().await;
        let dir = tempfile::tempdir().expect("tempdir");
        // Checks its arguments, prints the contract line, then idles until
        // SIGTERM (the default action ends it).
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = serve ] && [ \"$2\" = --config ] && [ -f \"$3\" ] || exit 9\n\
             grep -q 'name = \"noop-cold\"' \"$3\" || exit 8\n\
             echo 'fnhost: listening on http://{addr}'\necho 'more output'\nexec sleep 60\n"
        );
        let fake = write_script(dir.path(), &script);
        let mut daemon = Daemon::start(&fake, BENCH_FUNCTIONS)
            .await
            .expect("fake daemon starts");
        assert_eq!(daemon.url(), format!("http://{addr}"));
        let status = daemon.stop().expect("stopped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
    }

    #[tokio::test]
    async fn reads_the_admin_address_from_the_second_line() {
        let addr = start_healthy_server().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let script = format!(
            "#!/bin/sh\ngrep -q 'admin_listen = \"127.0.0.1:0\"' \"$3\" || exit 8\n\
             echo 'fnhost: listening on http://{addr}'\necho 'fnhost: admin API on http://127.0.0.1:9'\n\
             exec sleep 60\n"
        );
        let fake = write_script(dir.path(), &script);
        let mut daemon = Daemon::start_with(&fake, BENCH_FUNCTIONS, true)
            .await
            .expect("fake daemon starts");
        assert_eq!(daemon.admin_url(), Some("http://127.0.0.1:9"));
        assert!(daemon.cgroup_root().starts_with("fnhost-bench-"));
        daemon.stop();

        // Without the admin line the start fails and says what it expected.
        let script = format!(
            "#!/bin/sh\necho 'fnhost: listening on http://{addr}'\necho 'other'\nexec sleep 60\n"
        );
        let fake = write_script(dir.path(), &script);
        let err = match Daemon::start_with(&fake, BENCH_FUNCTIONS, true).await {
            Ok(_) => panic!("a daemon without an admin line must not start"),
            Err(err) => format!("{err:#}"),
        };
        assert!(err.contains("fnhost: admin API on "), "{err}");
    }
}
