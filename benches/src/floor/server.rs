//! The floor server as a process: `server.py` and the benchmark's no-op
//! handler written to a temporary directory, `/usr/bin/python3 -s -B` (the
//! interpreter and flags of fnhost's Python zygotes) started on them in a
//! process group of its own, and that group killed when the guard drops.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::baseline::PYTHON;
use crate::daemon::NOOP_HANDLER;

/// The server program (see its docstring).
const SERVER_PY: &str = include_str!("server.py");

/// What the benchmark's functions name as their handler.
const HANDLER: &str = "handler.handler";

/// A running floor server. Dropping it kills the interpreter, its workers
/// and any request child (one process group), then removes the directory.
pub struct FloorServer {
    child: Child,
    url: String,
    // Keeps the pipe open: the server never writes again, but must not
    // see EPIPE if it did.
    _stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

impl FloorServer {
    /// Starts the server with `workers` accept loops; returns once it has
    /// printed its address (every worker forked). Blocking.
    pub fn start(workers: u32) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("fnhost-bench-floor-")
            .tempdir()
            .context("creating the floor server's directory")?;
        let script = dir.path().join("server.py");
        fs::write(&script, SERVER_PY).with_context(|| format!("writing {}", script.display()))?;
        let handler = dir.path().join("handler.py");
        fs::write(&handler, NOOP_HANDLER)
            .with_context(|| format!("writing {}", handler.display()))?;
        let mut child = Command::new(PYTHON)
            .args(["-s", "-B"])
            .arg(&script)
            .arg(dir.path())
            .arg(HANDLER)
            .arg(workers.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own group, so that the guard can end the workers and
            // request children with it, by this pid.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting the floor server with {PYTHON}"))?;
        let stdout = child
            .stdout
            .take()
            .expect("stdout was configured as a pipe");
        let mut server = Self {
            child,
            url: String::new(),
            _stdout: BufReader::new(stdout),
            _dir: dir,
        };
        let mut line = String::new();
        server
            ._stdout
            .read_line(&mut line)
            .context("reading the floor server's address")?;
        match parse_address(&line) {
            Some(addr) => server.url = format!("http://{addr}"),
            None => bail!(
                "the floor server ({PYTHON} {}) did not print its address (got {line:?}); \
                 its stderr is above",
                script.display()
            ),
        }
        Ok(server)
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for FloorServer {
    fn drop(&mut self) {
        let pgid = Pid::from_raw(self.child.id() as i32);
        // The group is this child's own (process_group(0) above).
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// `127.0.0.1:PORT` from the server's `floor: listening on ...` line.
fn parse_address(line: &str) -> Option<&str> {
    let addr = line.trim().strip_prefix("floor: listening on ")?;
    let (host, port) = addr.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_address_line() {
        assert_eq!(
            parse_address("floor: listening on 127.0.0.1:4242\n"),
            Some("127.0.0.1:4242")
        );
        assert_eq!(parse_address("Traceback (most recent call last):"), None);
        assert_eq!(parse_address("floor: listening on 127.0.0.1:x"), None);
    }

    #[test]
    fn the_program_speaks_http_and_forks_per_request() {
        assert!(SERVER_PY.contains("os.fork()"));
        assert!(SERVER_PY.contains("Connection: close"));
        assert!(SERVER_PY.contains("gc.freeze()"));
    }
}
