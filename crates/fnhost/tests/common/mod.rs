//! Shared harness of the privileged integration tests: root check, a daemon
//! started from a generated config (stopped and checked for leftovers on
//! drop, even when a test fails), and a minimal HTTP/1.1 client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// True if the test may run. Not root: skip with a reason, except under
/// CI=true, where a skipped privileged test is a failure.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: privileged test cannot run without root, and CI=true forbids skipping");
    }
    eprintln!("skipping {test}: needs root (namespaces, mounts, cgroups)");
    false
}

pub fn probe_code() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/functions/probe")
}

pub fn hello_code() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/functions/hello")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A running `fnhost serve`.
pub struct Daemon {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    /// Admin API address, when it listens on TCP.
    pub admin: Option<SocketAddr>,
    pub config: PathBuf,
    pub cgroup_root: String,
    pub dir: tempfile::TempDir,
    stderr_path: PathBuf,
}

/// Writes a config with `[server]` filled in for the test and `functions`
/// appended verbatim.
pub fn write_config(dir: &Path, cgroup_root: &str, server_extra: &str, functions: &str) -> PathBuf {
    let path = dir.join("fnhost.toml");
    // The state dir lives here: sandboxes (user namespace) must traverse it.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .expect("chmod test dir");
    }
    // Every test daemon gets its own admin port unless the test sets one.
    let admin = if server_extra.contains("admin_listen") {
        ""
    } else {
        "admin_listen = \"127.0.0.1:0\"\n"
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{}\"\ncgroup_root = \"{cgroup_root}\"\nshutdown_grace_ms = 2000\n{admin}{server_extra}\n{functions}",
        dir.join("state").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

impl Daemon {
    pub fn start(functions: &str) -> Daemon {
        Self::start_with(functions, "")
    }

    pub fn start_with(functions: &str, server_extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let cgroup_root = unique_cgroup_root();
        let config = write_config(dir.path(), &cgroup_root, server_extra, functions);
        Self::start_config(dir, config, cgroup_root)
    }

    /// Starts a daemon on an existing config file inside `dir`.
    pub fn start_config(dir: tempfile::TempDir, config: PathBuf, cgroup_root: String) -> Daemon {
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fnhost"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("FNHOST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn fnhost");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut admin = String::new();
            if !line.is_empty() {
                let _ = reader.read_line(&mut admin);
            }
            let _ = tx.send((line, admin));
        });
        let (line, admin_line) = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        let placeholder = "127.0.0.1:1".parse().expect("placeholder address");
        let admin = admin_line
            .trim()
            .strip_prefix("fnhost: admin API on http://")
            .and_then(|a| a.parse().ok());
        let mut daemon = Daemon {
            child: Some(child),
            addr: placeholder,
            admin,
            config,
            cgroup_root,
            dir,
            stderr_path,
        };
        let Some(addr) = line.trim().strip_prefix("fnhost: listening on http://") else {
            panic!(
                "daemon did not start; stdout {line:?}; stderr:\n{}",
                daemon.stderr()
            );
        };
        daemon.addr = addr.parse().expect("address");
        daemon
    }

    /// A request to the admin API (optionally with a bearer token).
    pub fn admin(&self, method: &str, path: &str, body: &str, token: Option<&str>) -> Response {
        let addr = self.admin.expect("admin API listens on TCP");
        http_with(addr, method, path, body.as_bytes(), token)
    }

    /// Sends SIGHUP (config reload).
    pub fn sighup(&self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGHUP) };
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn invoke(&self, function: &str, body: &str) -> Response {
        http(
            self.addr,
            "POST",
            &format!("/v1/functions/{function}/invoke"),
            body.as_bytes(),
        )
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        stop_child(self.child.take()?)
    }

    /// Cgroup directories fnhost has under its root, across hierarchies.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_root)
    }
}

/// SIGTERM, then wait for the exit status (SIGKILL after 20 s).
pub fn stop_child(mut child: Child) -> Option<std::process::ExitStatus> {
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn cgroup_dirs(root_name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for base in ["memory", "cpu", "pids", "unified", ""] {
        let root = Path::new("/sys/fs/cgroup").join(base).join(root_name);
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                out.push(dir.clone());
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let stopped = self.stop();
        let leftovers = self.cgroup_dirs();
        if !leftovers.is_empty() {
            // Remove them so one failure does not leak into the machine, then
            // fail loudly: a leak at stop is a teardown bug.
            for dir in leftovers.iter().rev() {
                if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    for pid in procs.lines().filter_map(|p| p.parse::<i32>().ok()) {
                        // SAFETY: kill(2) of a process inside our own test cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
            for dir in leftovers.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
            if !std::thread::panicking() {
                panic!("daemon left cgroups behind after stop ({stopped:?}): {leftovers:?}");
            }
        }
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn unique_cgroup_root() -> String {
    format!(
        "fnhost-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// One HTTP/1.1 request on a fresh connection.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    http_with(addr, method, path, body, None)
}

/// One HTTP/1.1 request, optionally with `Authorization: Bearer`.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> Response {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write head");
    // A server may answer (413) before reading a large body; ignore a reset.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Descendant processes of `pid` (by walking /proc ppid links).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        parents.push((p, ppid));
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, pp) in &parents {
            if *pp == parent {
                out.push(*p);
                frontier.push(*p);
            }
        }
    }
    out.sort();
    out
}

pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub fn mount_count(pid: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
