//! The clone's side of the invocation channel, for runtimes written in Rust
//! (the exec runtime's built-in server and the Rust SDK): read the one
//! `Invoke` frame the daemon sends, answer with one `Result` or `Error`
//! frame. The Python shim implements the same in Python.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::protocol::{
    decode_frame_rest, encode_frame, frame_len, FrameError, FrameKind, InvokeMeta, ResultMeta,
};

/// Largest `Invoke` frame a clone accepts. The daemon admits far smaller
/// payloads (`max_payload_bytes`); this only bounds a corrupt length.
const MAX_INVOKE_FRAME: usize = 1 << 30;

/// Why a clone could not take or answer its invocation.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("cannot read the invocation frame: {0}")]
    Read(#[source] io::Error),
    #[error("malformed invocation frame: {0}")]
    Frame(#[from] FrameError),
    #[error("expected an invoke frame, got {0:?}")]
    UnexpectedKind(FrameKind),
    #[error("malformed invocation metadata: {0}")]
    Meta(#[source] serde_json::Error),
    #[error("cannot send the response frame: {0}")]
    Write(#[source] io::Error),
}

/// One invocation, read from a clone's invocation socket.
#[derive(Debug)]
pub struct Invocation {
    pub meta: InvokeMeta,
    pub payload: Vec<u8>,
    /// When the function's deadline passes (from `remaining_ms` at receipt).
    pub deadline: Instant,
    stream: UnixStream,
}

/// The Lambda-style error object of an `Error` frame's body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorObject {
    #[serde(rename = "errorType")]
    pub error_type: String,
    #[serde(rename = "errorMessage")]
    pub message: String,
    #[serde(rename = "stackTrace")]
    pub trace: Vec<String>,
}

impl ErrorObject {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> ErrorObject {
        ErrorObject {
            error_type: error_type.into(),
            message: message.into(),
            trace: Vec::new(),
        }
    }

    /// The JSON body of an `Error` frame.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an error object of strings always serializes")
    }
}

impl Invocation {
    /// Takes ownership of the invocation socket `fd` (as returned by
    /// [`crate::forkserver::serve`]) and reads its `Invoke` frame. The socket
    /// is made close-on-exec, so programs the function starts cannot write
    /// frames of their own.
    pub fn accept(fd: RawFd) -> Result<Invocation, InvocationError> {
        // SAFETY: `serve` hands over the clone's invocation socket, an open
        // descriptor nothing else in this process owns.
        let mut stream = unsafe { UnixStream::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        let mut prefix = [0u8; 4];
        stream
            .read_exact(&mut prefix)
            .map_err(InvocationError::Read)?;
        let len = frame_len(prefix, MAX_INVOKE_FRAME)?;
        let mut rest = vec![0u8; len];
        stream
            .read_exact(&mut rest)
            .map_err(InvocationError::Read)?;
        let received = Instant::now();
        let frame = decode_frame_rest(rest)?;
        if frame.kind != FrameKind::Invoke {
            return Err(InvocationError::UnexpectedKind(frame.kind));
        }
        let meta: InvokeMeta =
            serde_json::from_slice(&frame.meta).map_err(InvocationError::Meta)?;
        let deadline = received + Duration::from_millis(meta.remaining_ms);
        Ok(Invocation {
            meta,
            payload: frame.body,
            deadline,
            stream,
        })
    }

    /// Answers with a `Result` frame (`body` = the function's output).
    pub fn succeed(self, handler_us: u64, body: &[u8]) -> Result<(), InvocationError> {
        self.respond(FrameKind::Result, handler_us, body)
    }

    /// Answers with an `Error` frame carrying `error`.
    pub fn fail(self, handler_us: u64, error: &ErrorObject) -> Result<(), InvocationError> {
        self.respond(FrameKind::Error, handler_us, &error.to_json())
    }

    fn respond(
        mut self,
        kind: FrameKind,
        handler_us: u64,
        body: &[u8],
    ) -> Result<(), InvocationError> {
        let meta = serde_json::to_vec(&ResultMeta {
            handler_us,
            page_faults: None,
        })
        .expect("result meta always serializes");
        self.stream
            .write_all(&encode_frame(kind, &meta, body))
            .map_err(InvocationError::Write)?;
        self.stream.flush().map_err(InvocationError::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    fn read_reply(daemon: &mut UnixStream) -> (FrameKind, Vec<u8>, Vec<u8>) {
        let mut prefix = [0u8; 4];
        daemon.read_exact(&mut prefix).unwrap();
        let mut rest = vec![0u8; frame_len(prefix, 1 << 20).unwrap()];
        daemon.read_exact(&mut rest).unwrap();
        let frame = decode_frame_rest(rest).unwrap();
        (frame.kind, frame.meta, frame.body)
    }

    fn invoke(daemon: &mut UnixStream, payload: &[u8]) {
        let meta = InvokeMeta {
            request_id: "r1".into(),
            function: "f".into(),
            memory_mb: 128,
            remaining_ms: 3000,
        };
        let meta = serde_json::to_vec(&meta).unwrap();
        daemon
            .write_all(&encode_frame(FrameKind::Invoke, &meta, payload))
            .unwrap();
    }

    #[test]
    fn accept_then_succeed() {
        let (mut daemon, clone) = UnixStream::pair().unwrap();
        invoke(&mut daemon, br#"{"x":1}"#);
        let invocation = Invocation::accept(clone.into_raw_fd()).unwrap();
        assert_eq!(invocation.meta.request_id, "r1");
        assert_eq!(invocation.payload, br#"{"x":1}"#);
        assert!(invocation.deadline > Instant::now());
        invocation.succeed(42, b"[1,2]").unwrap();
        let (kind, meta, body) = read_reply(&mut daemon);
        assert_eq!(kind, FrameKind::Result);
        assert_eq!(meta, br#"{"handler_us":42}"#);
        assert_eq!(body, b"[1,2]");
    }

    #[test]
    fn fail_sends_a_lambda_error_object() {
        let (mut daemon, clone) = UnixStream::pair().unwrap();
        invoke(&mut daemon, b"{}");
        let invocation = Invocation::accept(clone.into_raw_fd()).unwrap();
        let mut error = ErrorObject::new("Function.ExitError", "exited with code 3");
        error.trace.push("line".into());
        invocation.fail(7, &error).unwrap();
        let (kind, _, body) = read_reply(&mut daemon);
        assert_eq!(kind, FrameKind::Error);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errorType"], "Function.ExitError");
        assert_eq!(body["errorMessage"], "exited with code 3");
        assert_eq!(body["stackTrace"][0], "line");
    }

    #[test]
    fn rejects_frames_other_than_invoke() {
        let (mut daemon, clone) = UnixStream::pair().unwrap();
        daemon
            .write_all(&encode_frame(FrameKind::Result, b"{}", b""))
            .unwrap();
        let err = Invocation::accept(clone.into_raw_fd()).unwrap_err();
        assert!(
            matches!(err, InvocationError::UnexpectedKind(FrameKind::Result)),
            "{err}"
        );
    }

    #[test]
    fn closed_socket_is_a_read_error() {
        let (daemon, clone) = UnixStream::pair().unwrap();
        drop(daemon);
        let err = Invocation::accept(clone.into_raw_fd()).unwrap_err();
        assert!(matches!(err, InvocationError::Read(_)), "{err}");
    }
}
