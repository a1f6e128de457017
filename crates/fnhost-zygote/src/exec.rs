//! The exec runtime: a function is any executable, run once per invocation
//! with the request payload on stdin and its response read from stdout
//! (CGI / OpenFaaS-classic style); a non-zero exit is a function error.
//!
//! Such a zygote has no language runtime to load, so init does not exec
//! anything: it forks, and the child (fnhost's own code, already in memory)
//! becomes the fork server. Each clone, once isolated, spawns the command,
//! feeds it the payload, collects stdout (capped at the response limit) and
//! the tail of stderr, and answers with a `Result` or `Error` frame. The
//! daemon enforces the deadline by killing the clone's pid namespace.

use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use fnhost_sandbox::sys;

use crate::forkserver;
use crate::invocation::{ErrorObject, Invocation};
use crate::protocol::{InitFailure, CONTROL_FD};
use crate::spec::ZygoteSpec;

/// Per-invocation environment of the command: the request id.
pub const REQUEST_ID_ENV: &str = "FNHOST_REQUEST_ID";
/// Per-invocation environment of the command: milliseconds until the deadline.
pub const REMAINING_MS_ENV: &str = "FNHOST_REMAINING_MS";

/// How much of the end of stderr an error message quotes.
const STDERR_TAIL_BYTES: usize = 2048;
const STDERR_TAIL_LINES: usize = 10;

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

/// Runs the exec runtime's fork server for `spec` (in init's forked child,
/// single-threaded). Never returns: the zygote exits when the daemon closes
/// the control socket, each clone after its one invocation.
pub fn serve_command(spec: &ZygoteSpec) -> ! {
    let started = Instant::now();
    // Become the process an exec'd runtime would be: the spec's environment
    // only (init itself got just the spec from the daemon).
    for (name, _) in std::env::vars_os() {
        std::env::remove_var(name);
    }
    for (name, value) in &spec.env {
        std::env::set_var(name, value);
    }
    let max_response = spec.settings.max_response_bytes;
    if let Err((error_type, message)) = check_command(&spec.argv) {
        // SAFETY: the daemon set up CONTROL_FD before exec of init; it stays
        // open for the life of this process.
        let control = unsafe { BorrowedFd::borrow_raw(CONTROL_FD) };
        let failure = InitFailure::new("import", error_type, message);
        let _ = forkserver::report_init_failure(control, failure);
        sys::exit_immediately(1);
    }
    let fd = forkserver::serve(CONTROL_FD, micros(started));
    // Only a fresh, isolated clone gets here.
    let invocation = match Invocation::accept(fd) {
        Ok(invocation) => invocation,
        Err(e) => {
            eprintln!("fnhost exec runtime: {e}");
            sys::exit_immediately(3)
        }
    };
    let started = Instant::now();
    let outcome = run_command(&spec.argv, &spec.cwd, &invocation, max_response);
    let handler_us = micros(started);
    let sent = match outcome {
        Ok(stdout) => invocation.succeed(handler_us, &stdout),
        Err(error) => invocation.fail(handler_us, &error),
    };
    if let Err(e) = sent {
        eprintln!("fnhost exec runtime: {e}");
    }
    sys::exit_immediately(0)
}

/// Checks the command exists in the root and is executable, so a typo is an
/// init error naming the path rather than a failure of every invocation.
fn check_command(argv: &[String]) -> Result<(), (&'static str, String)> {
    let Some(program) = argv.first() else {
        return Err((
            "CommandNotFound",
            "the function has an empty command".into(),
        ));
    };
    match std::fs::metadata(program) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(meta) if meta.is_file() => Err((
            "CommandNotExecutable",
            format!("command {program} is not executable; set its execute bit (chmod +x) in the code directory"),
        )),
        Ok(_) => Err(("CommandNotExecutable", format!("command {program} is not a regular file"))),
        Err(e) => Err((
            "CommandNotFound",
            format!(
                "command {program} cannot be found in the function's root ({e}); the code directory is at /var/task"
            ),
        )),
    }
}

/// Runs the command once; `Ok(stdout)` if it exited 0.
fn run_command(
    argv: &[String],
    cwd: &Path,
    invocation: &Invocation,
    max_response: usize,
) -> Result<Vec<u8>, ErrorObject> {
    let program = &argv[0];
    let remaining_ms = invocation
        .deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    let mut child = Command::new(program)
        .args(&argv[1..])
        // Entering its root left the clone at "/"; the command starts where the zygote did.
        .current_dir(cwd)
        .env(REQUEST_ID_ENV, &invocation.meta.request_id)
        .env(REMAINING_MS_ENV, remaining_ms.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            ErrorObject::new(
                "Function.ExecError",
                format!("cannot start {program}: {e} (for a script, check that its #! interpreter exists in the root)"),
            )
        })?;
    let stdin = child.stdin.take().expect("stdin was piped");
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let payload = &invocation.payload;
    let (stdout, overflowed, status, tail) = std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut stdin = stdin;
            // The command may exit without reading its input (EPIPE): fine.
            let _ = stdin.write_all(payload);
        });
        let stderr = scope.spawn(move || stderr_tail(stderr, io::stderr()));
        let (out, overflowed) = read_capped(stdout, max_response);
        if overflowed {
            let _ = child.kill();
        }
        let status = wait(&mut child);
        let tail = stderr.join().unwrap_or_default();
        (out, overflowed, status, tail)
    });
    if overflowed {
        return Err(ErrorObject::new(
            "Function.ResponseTooLarge",
            format!("{program} wrote more than {max_response} bytes to stdout (server.max_response_bytes); it was killed"),
        ));
    }
    match status {
        Ok(status) if status.success() => Ok(stdout),
        Ok(status) => Err(exit_error(program, status, &tail)),
        Err(e) => Err(ErrorObject::new(
            "Function.ExecError",
            format!("cannot wait for {program}: {e}"),
        )),
    }
}

fn wait(child: &mut Child) -> io::Result<ExitStatus> {
    loop {
        match child.wait() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads `reader` to its end, keeping at most `cap` bytes; `true` if it
/// had more (reading stops at the first byte past the cap).
fn read_capped(mut reader: impl Read, cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return (out, false),
            Ok(n) => {
                if out.len() + n > cap {
                    return (out, true);
                }
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return (out, false),
        }
    }
}

/// Copies the command's stderr to `log` (the clone's own stderr: the
/// function's log, collected by the daemon) and returns its last [`STDERR_TAIL_BYTES`].
fn stderr_tail(mut reader: impl Read, mut log: impl Write) -> Vec<u8> {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = log.write_all(&buf[..n]);
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL_BYTES {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    tail
}

/// The error of a command that did not exit 0: its code or signal, and the
/// last lines of its stderr.
fn exit_error(program: &str, status: ExitStatus, stderr: &[u8]) -> ErrorObject {
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    };
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = &lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..];
    let mut message = format!("{program} {how}");
    if !last.is_empty() {
        message.push_str("; last lines of stderr:\n");
        message.push_str(&last.join("\n"));
    }
    let mut error = ErrorObject::new("Function.ExitError", message);
    error.trace = last.iter().map(|l| l.to_string()).collect();
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_capped_stops_past_the_cap() {
        assert_eq!(read_capped(&b"hello"[..], 5), (b"hello".to_vec(), false));
        let (out, overflowed) = read_capped(&b"hello!"[..], 5);
        assert!(overflowed);
        assert!(out.len() <= 5);
    }

    #[test]
    fn stderr_tail_keeps_the_end() {
        let long: Vec<u8> = (0..5000).map(|i| b'a' + (i % 26) as u8).collect();
        let tail = stderr_tail(&long[..], io::sink());
        assert_eq!(tail.len(), STDERR_TAIL_BYTES);
        assert_eq!(tail, long[long.len() - STDERR_TAIL_BYTES..]);
    }

    #[test]
    fn exit_error_names_the_code_and_quotes_stderr() {
        let stderr: String = (1..=15).map(|i| format!("line {i}\n")).collect();
        let error = exit_error(
            "/var/task/fn",
            ExitStatus::from_raw(3 << 8),
            stderr.as_bytes(),
        );
        assert_eq!(error.error_type, "Function.ExitError");
        assert!(
            error
                .message
                .starts_with("/var/task/fn exited with code 3; last lines of stderr:\nline 6\n"),
            "{}",
            error.message
        );
        assert!(error.message.ends_with("line 15"), "{}", error.message);
        assert_eq!(error.trace.len(), STDERR_TAIL_LINES);
        let killed = exit_error("/f", ExitStatus::from_raw(libc::SIGKILL), b"");
        assert_eq!(killed.message, "/f was killed by signal 9");
    }

    #[test]
    fn check_command_explains_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fn.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let path = script.display().to_string();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            check_command(std::slice::from_ref(&path)).unwrap_err().0,
            "CommandNotExecutable"
        );
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_command(&[path]), Ok(()));
        let missing = check_command(&["/nonexistent/fn".into()]).unwrap_err();
        assert_eq!(missing.0, "CommandNotFound");
        assert!(missing.1.contains("/nonexistent/fn"), "{}", missing.1);
        assert_eq!(check_command(&[]).unwrap_err().0, "CommandNotFound");
    }
}
