//! fnhost SDK for native Rust functions (`runtime = "rust"`): the function's
//! `main` calls [`run`] with its handler, and the process becomes the
//! function's zygote — every invocation is a fresh, isolated clone of it.
//!
//! ```no_run
//! use fnhost_sdk::{Context, HandlerError, Value};
//!
//! fn handler(event: Value, ctx: &Context) -> Result<Value, Box<dyn std::error::Error>> {
//!     let name = event["name"].as_str().ok_or_else(|| HandlerError::new("BadRequest", "name is missing"))?;
//!     Ok(serde_json::json!({ "message": format!("hello, {name}"), "request_id": ctx.request_id }))
//! }
//!
//! fn main() {
//!     fnhost_sdk::run(handler)
//! }
//! ```
//!
//! **Fork safety.** Whatever `main` does before calling [`run`] (read
//! config, build lookup tables, open files) is done once and inherited by
//! every clone copy-on-write. It must stay single-threaded: a process that
//! forks with other threads running inherits their locks but not the
//! threads. [`run`] checks `/proc/self/status` and refuses to start (the
//! daemon reports `Runtime.InitError.ZygoteNotSingleThreaded`) if any
//! thread besides the main one exists — so no async runtime, thread pool
//! or background logger before `run`; start those inside the handler.
//!
//! **Outside fnhost** (no control socket on descriptor 3), [`run`] serves one
//! invocation locally: the event is read from stdin, the result printed to
//! stdout (an error object goes to stderr, exit status 1). Handy for
//! `echo '{"name":"x"}' | ./target/release/my-fn`.

use std::error::Error;
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::BorrowedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use fnhost_sandbox::sys;
use fnhost_zygote::forkserver;
use fnhost_zygote::invocation::{ErrorObject, Invocation};
use fnhost_zygote::protocol::{InitFailure, CONTROL_FD};

pub use serde_json::Value;

/// What a handler knows about its invocation (the Lambda context fields).
#[derive(Debug, Clone)]
pub struct Context {
    pub request_id: String,
    pub function_name: String,
    pub memory_limit_mb: u64,
    deadline: Instant,
}

impl Context {
    /// Time left until the function's deadline (the sandbox is killed then).
    pub fn remaining_time(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The deadline as an instant.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// A handler error with an explicit `errorType` for the caller. Any other
/// error a handler returns is reported with `errorType` "Error" (or
/// "IoError" / "JsonError" for `std::io::Error` / `serde_json::Error`) and
/// its `Display` text as `errorMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    error_type: String,
    message: String,
}

impl HandlerError {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> HandlerError {
        HandlerError {
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    pub fn error_type(&self) -> &str {
        &self.error_type
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for HandlerError {}

/// The result a handler returns.
pub type HandlerResult = Result<Value, Box<dyn Error>>;

/// Turns this process into the function's zygote and serves invocations
/// with `handler`; never returns. Call it from `main`, single-threaded (see
/// the crate docs).
pub fn run<F>(handler: F) -> !
where
    F: Fn(Value, &Context) -> HandlerResult,
{
    let Some(control) = control_socket() else {
        run_locally(&handler)
    };
    if let Some(threads) = forkserver::thread_count().filter(|&n| n > 1) {
        let message = format!(
            "main started {} thread(s) before calling fnhost_sdk::run; a zygote must be single-threaded \
             when it forks: start threads (async runtimes, pools) inside the handler instead",
            threads - 1
        );
        let failure = InitFailure::new("import", "ZygoteNotSingleThreaded", message);
        let _ = forkserver::report_init_failure(control, failure);
        sys::exit_immediately(1);
    }
    let cwd = std::env::current_dir().ok();
    // Returns only in a fresh clone: own namespaces, cgroup and writable
    // root, privileges dropped. The zygote stays inside, serving clones.
    let fd = forkserver::serve(CONTROL_FD, 0);
    // Entering its root left the clone at "/"; the handler runs where main did.
    if let Some(cwd) = cwd {
        let _ = std::env::set_current_dir(cwd);
    }
    let invocation = match Invocation::accept(fd) {
        Ok(invocation) => invocation,
        Err(e) => {
            eprintln!("fnhost-sdk: {e}");
            sys::exit_immediately(3)
        }
    };
    let ctx = Context {
        request_id: invocation.meta.request_id.clone(),
        function_name: invocation.meta.function.clone(),
        memory_limit_mb: invocation.meta.memory_mb,
        deadline: invocation.deadline,
    };
    let started = Instant::now();
    let outcome = call(&handler, &invocation.payload, &ctx);
    let handler_us = started.elapsed().as_micros() as u64;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let sent = match outcome {
        Ok(body) => invocation.succeed(handler_us, &body),
        Err(error) => invocation.fail(handler_us, &error),
    };
    if let Err(e) = sent {
        eprintln!("fnhost-sdk: {e}");
    }
    // A clone never unwinds into `main` or runs its destructors.
    sys::exit_immediately(0)
}

/// The zygote's control socket, if fnhost started this process.
fn control_socket() -> Option<BorrowedFd<'static>> {
    nix::fcntl::fcntl(CONTROL_FD, nix::fcntl::FcntlArg::F_GETFD).ok()?;
    // SAFETY: F_GETFD just succeeded, so CONTROL_FD is open; nothing in this
    // process closes it (only clones do, after `serve` returns).
    let fd = unsafe { BorrowedFd::borrow_raw(CONTROL_FD) };
    let kind = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::SockType).ok()?;
    (kind == nix::sys::socket::SockType::SeqPacket).then_some(fd)
}

/// Runs the handler on one payload: the JSON result, or the error object.
fn call<F>(handler: &F, payload: &[u8], ctx: &Context) -> Result<Vec<u8>, ErrorObject>
where
    F: Fn(Value, &Context) -> HandlerResult,
{
    let event: Value = if payload.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(payload).map_err(|e| {
            ErrorObject::new(
                "Runtime.UnmarshalError",
                format!("the event is not JSON: {e}"),
            )
        })?
    };
    match catch_unwind(AssertUnwindSafe(|| handler(event, ctx))) {
        Ok(Ok(value)) => {
            Ok(serde_json::to_vec(&value).expect("a serde_json::Value always serializes"))
        }
        Ok(Err(error)) => Err(error_object(error.as_ref())),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the handler panicked".to_string());
            Err(ErrorObject::new("Panic", message))
        }
    }
}

/// `errorType` from the error's type, `errorMessage` from its `Display`,
/// `stackTrace` from its chain of sources.
fn error_object(error: &(dyn Error + 'static)) -> ErrorObject {
    let error_type = if let Some(e) = error.downcast_ref::<HandlerError>() {
        e.error_type.clone()
    } else if error.is::<std::io::Error>() {
        "IoError".to_string()
    } else if error.is::<serde_json::Error>() {
        "JsonError".to_string()
    } else {
        "Error".to_string()
    };
    let mut object = ErrorObject::new(error_type, error.to_string());
    let mut source = error.source();
    while let Some(cause) = source {
        object.trace.push(format!("caused by: {cause}"));
        source = cause.source();
    }
    object
}

/// Not under fnhost: one invocation from stdin to stdout.
fn run_locally<F>(handler: &F) -> !
where
    F: Fn(Value, &Context) -> HandlerResult,
{
    let mut payload = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut payload) {
        eprintln!("fnhost-sdk: cannot read the event from stdin: {e}");
        std::process::exit(2);
    }
    let ctx = Context {
        request_id: "local".to_string(),
        function_name: std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or_else(|_| "local".to_string()),
        memory_limit_mb: 0,
        deadline: Instant::now() + Duration::from_secs(900),
    };
    match call(handler, &payload, &ctx) {
        Ok(body) => {
            let mut out = std::io::stdout();
            let _ = out.write_all(&body);
            let _ = out.write_all(b"\n");
            let _ = out.flush();
            std::process::exit(0)
        }
        Err(error) => {
            eprintln!("{}", String::from_utf8_lossy(&error.to_json()));
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            request_id: "r".into(),
            function_name: "f".into(),
            memory_limit_mb: 128,
            deadline: Instant::now() + Duration::from_secs(1),
        }
    }

    fn echo(event: Value, ctx: &Context) -> HandlerResult {
        match event.get("fail").and_then(Value::as_str) {
            Some("typed") => Err(HandlerError::new("Nope", "typed failure").into()),
            Some("io") => {
                Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such thing").into())
            }
            Some("plain") => Err("plain failure".into()),
            Some(_) => panic!("handler panicked on purpose"),
            None => Ok(serde_json::json!({ "event": event, "request_id": ctx.request_id })),
        }
    }

    fn error_of(payload: &str) -> Value {
        let error = call(&echo, payload.as_bytes(), &ctx()).unwrap_err();
        serde_json::from_slice(&error.to_json()).unwrap()
    }

    #[test]
    fn results_are_json() {
        let body = call(&echo, br#"{"a":1}"#, &ctx()).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            serde_json::json!({"event": {"a": 1}, "request_id": "r"})
        );
        let empty = call(&echo, b"", &ctx()).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&empty).unwrap()["event"],
            serde_json::json!({})
        );
    }

    #[test]
    fn errors_carry_type_and_message() {
        let typed = error_of(r#"{"fail":"typed"}"#);
        assert_eq!(
            (typed["errorType"].as_str(), typed["errorMessage"].as_str()),
            (Some("Nope"), Some("typed failure"))
        );
        assert_eq!(error_of(r#"{"fail":"io"}"#)["errorType"], "IoError");
        let plain = error_of(r#"{"fail":"plain"}"#);
        assert_eq!(
            (plain["errorType"].as_str(), plain["errorMessage"].as_str()),
            (Some("Error"), Some("plain failure"))
        );
        let panicked = error_of(r#"{"fail":"panic"}"#);
        assert_eq!(panicked["errorType"], "Panic");
        assert_eq!(panicked["errorMessage"], "handler panicked on purpose");
        assert_eq!(error_of("{nope")["errorType"], "Runtime.UnmarshalError");
    }

    #[test]
    fn remaining_time_counts_down() {
        let ctx = ctx();
        assert!(ctx.remaining_time() <= Duration::from_secs(1));
        let past = Context {
            deadline: Instant::now() - Duration::from_millis(1),
            ..ctx
        };
        assert_eq!(past.remaining_time(), Duration::ZERO);
    }
}
