//! Wire formats between the daemon, a zygote and its clones.
//!
//! **Control channel** (daemon ↔ zygote fork server): a `SOCK_SEQPACKET`
//! socket at fd [`CONTROL_FD`] in the zygote. One JSON message per packet,
//! descriptors attached with `SCM_RIGHTS`.
//!
//! **Invocation channel** (daemon ↔ one clone): a `SOCK_STREAM` socket.
//! Frames are `u32 LE length | u8 kind | u32 LE meta length | meta JSON |
//! body`, where `length` counts everything after itself. The Python shim
//! (`python/fnhost_shim.py`) implements the clone's side of the same format.

use serde::{Deserialize, Serialize};

use crate::clone_request::CloneRequest;
use crate::settings::ZygoteSettings;

/// Descriptor number of the control socket inside a zygote.
pub const CONTROL_FD: i32 = 3;

/// Environment variable carrying the zygote spec (JSON) to the init.
pub const SPEC_ENV: &str = "FNHOST_ZYGOTE_SPEC";

/// Daemon → zygote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DaemonMessage {
    /// fnhost's settings of this zygote: the answer to
    /// [`ZygoteMessage::NeedSettings`], before the fork server reports `Ready`.
    Configure(ZygoteSettings),
    /// Clone a sandbox. One descriptor attached: the clone's end of its
    /// invocation socket.
    Clone {
        #[serde(flatten)]
        request: CloneRequest,
    },
    /// Hibernate (see `fnhost_snapshot`). Attached, in this order: the
    /// snapshot file to write, the daemon's own end of this channel, with
    /// `output` the read end of the zygote's output pipe (the zygote keeps
    /// both while it sleeps; the daemon closes its copies) and with `base`
    /// its sharing group's base. The zygote creates its own (user-mode-only)
    /// userfaultfd, answers [`ZygoteMessage::Hibernating`] with it, then
    /// [`ZygoteMessage::Hibernated`] (or `HibernateFailed`), and serves
    /// nothing until [`DaemonMessage::Wake`].
    Hibernate { output: bool, base: bool },
    /// Resume after hibernation. The zygote maps its snapshot back over
    /// every hibernated region (`fnhost_snapshot::remap`) and answers
    /// [`ZygoteMessage::Woken`]; the daemon serves its page faults until
    /// then and sends nothing else (no clone request) before it, so the
    /// zygote's next receive never has the kernel write a dropped page
    /// (which a user-mode-only userfaultfd would fail with `EFAULT`).
    Wake,
}

/// [`DaemonMessage::Wake`] as sent on the wire; a hibernated zygote reads
/// it into a stack buffer (its heap may be missing then).
pub const WAKE_MESSAGE: &[u8] = br#"{"type":"wake"}"#;

/// The wake-up of a zygote in a sharing group: [`WAKE_MESSAGE`], then each
/// run to map from the group's base (`SharedRun::encode`, binary), which
/// the zygote decodes on its stack. Built once, when the snapshot is
/// sealed.
pub fn wake_message(runs: &[fnhost_snapshot::SharedRun]) -> Vec<u8> {
    let mut message =
        Vec::with_capacity(WAKE_MESSAGE.len() + runs.len() * fnhost_snapshot::shared::RUN_BYTES);
    message.extend_from_slice(WAKE_MESSAGE);
    for run in runs {
        message.extend_from_slice(&run.encode());
    }
    message
}

/// Zygote → daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ZygoteMessage {
    /// The fork server starts and asks for its settings
    /// ([`DaemonMessage::Configure`]). Asked, not pushed: a zygote that
    /// fails before it serves leaves nothing unread, so the daemon still
    /// receives its `InitFailed`.
    NeedSettings,
    /// The runtime started and imported the function; ready to clone.
    Ready { import_us: u64 },
    /// Starting the zygote failed (mounts, runtime start, or the function's
    /// import).
    InitFailed(InitFailure),
    /// A clone exists; its pidfd is attached.
    Cloned {
        sandbox: u64,
        pid: i32,
        fork_us: u64,
    },
    /// `clone3` itself failed.
    CloneFailed { sandbox: u64, message: String },
    /// Hibernation started: the zygote's userfaultfd is attached; these
    /// regions are about to be written to the snapshot and dropped.
    Hibernating {
        regions: Vec<fnhost_snapshot::Region>,
        /// The number of the zygote's own copy of that userfaultfd, which
        /// it keeps open until it is awake: the daemon closes its copy
        /// while the zygote sleeps and takes one back (`pidfd_getfd`) to
        /// wake it.
        uffd: i32,
        /// The number of its copy of the daemon's end of this channel (sent
        /// with the request), kept likewise until it is awake.
        control: i32,
        /// The number of its copy of its output pipe's read end, if sent.
        output: Option<i32>,
    },
    /// The zygote's memory is in the snapshot and dropped. Encoded without
    /// allocating (see [`encode_hibernated`]).
    Hibernated {
        pages_written: u64,
        bytes_dropped: u64,
    },
    /// Hibernation did not happen; nothing was dropped and the zygote
    /// serves on as before.
    HibernateFailed { message: String },
    /// Every hibernated region is mapped from the snapshot again: the
    /// zygote is awake. Encoded without allocating (see [`encode_woken`]).
    Woken { mapped_bytes: u64 },
}

/// Writes `{"type":"hibernated",...}` into `buf` without allocating (the
/// zygote sends it right after dropping its heap) and returns its length.
pub fn encode_hibernated(buf: &mut [u8; 96], pages_written: u64, bytes_dropped: u64) -> usize {
    let mut at = 0;
    put(buf, &mut at, br#"{"type":"hibernated","pages_written":"#);
    put_u64(buf, &mut at, pages_written);
    put(buf, &mut at, br#","bytes_dropped":"#);
    put_u64(buf, &mut at, bytes_dropped);
    put(buf, &mut at, b"}");
    at
}

/// Writes `{"type":"woken",...}` into `buf` without allocating (sent right
/// after the snapshot is mapped back) and returns its length.
pub fn encode_woken(buf: &mut [u8; 96], mapped_bytes: u64) -> usize {
    let mut at = 0;
    put(buf, &mut at, br#"{"type":"woken","mapped_bytes":"#);
    put_u64(buf, &mut at, mapped_bytes);
    put(buf, &mut at, b"}");
    at
}

fn put(buf: &mut [u8; 96], at: &mut usize, bytes: &[u8]) {
    buf[*at..*at + bytes.len()].copy_from_slice(bytes);
    *at += bytes.len();
}

fn put_u64(buf: &mut [u8; 96], at: &mut usize, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        put(buf, at, &[digits[i]]);
    }
}

/// Why a zygote could not start: reported by its init, fork server or
/// runtime shim, kept whole by the daemon's handle and by the invocation
/// error the user sees.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InitFailure {
    /// "sandbox" (init's mounts/namespaces), "runtime" or "import".
    pub stage: String,
    #[serde(rename = "errorType")]
    pub error_type: String,
    #[serde(rename = "errorMessage")]
    pub message: String,
    #[serde(rename = "stackTrace", default)]
    pub trace: Vec<String>,
}

impl InitFailure {
    /// A failure with no stack trace.
    pub fn new(stage: &str, error_type: &str, message: impl Into<String>) -> InitFailure {
        InitFailure {
            stage: stage.to_string(),
            error_type: error_type.to_string(),
            message: message.into(),
            trace: Vec::new(),
        }
    }
}

impl std::fmt::Display for InitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl std::error::Error for InitFailure {}

/// Parses an [`InitFailure`] sent by a runtime shim (JSON), if well-formed.
pub fn parse_init_failure(bytes: &[u8]) -> Option<InitFailure> {
    serde_json::from_slice(bytes).ok()
}

/// Kinds of invocation-channel frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// clone → daemon: sandbox set up, waiting for its invocation. Meta: [`SetupTimes`].
    Ready = 1,
    /// daemon → clone: meta [`InvokeMeta`], body = payload.
    Invoke = 2,
    /// clone → daemon: meta [`ResultMeta`], body = JSON result.
    Result = 3,
    /// clone → daemon: meta [`ResultMeta`], body = JSON `{errorType, errorMessage, stackTrace}`.
    Error = 4,
    /// clone → daemon: sandbox setup failed. Meta [`SetupFailure`].
    SetupFailed = 5,
}

impl FrameKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Ready,
            2 => Self::Invoke,
            3 => Self::Result,
            4 => Self::Error,
            5 => Self::SetupFailed,
            _ => return None,
        })
    }
}

/// Time a clone spent setting itself up, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetupTimes {
    /// Moving the clone into its cgroups (done by the daemon, by pid).
    pub cgroup_us: u64,
    /// Mapping the clone's ids in its own user namespace.
    #[serde(default)]
    pub userns_us: u64,
    pub mount_us: u64,
    /// Bringing up the clone's own loopback (0 when it shares the zygote's).
    #[serde(default)]
    pub network_us: u64,
    pub privileges_us: u64,
    /// Installing the clone stage of the seccomp filter (0 when the function
    /// runs unconfined).
    #[serde(default)]
    pub seccomp_us: u64,
}

/// What a clone needs to know about its invocation (Lambda context fields).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InvokeMeta {
    pub request_id: String,
    pub function: String,
    pub memory_mb: u64,
    /// Milliseconds left until the deadline when the daemon sent the frame.
    pub remaining_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResultMeta {
    pub handler_us: u64,
    /// Page faults the clone took, when its runtime counts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<PageFaults>,
}

/// A clone's page faults (minor and major): each is a page copied on
/// write from its zygote, zeroed, or mapped in. A clone is a fresh process,
/// so its counters start at its fork.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PageFaults {
    /// From the fork until the clone waited for its request: its setup and
    /// the runtime's rehearsal of the invocation path (off the request path
    /// for a ready clone).
    pub ready: u64,
    /// From the request to the answer, handler included.
    pub invocation: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SetupFailure {
    pub step: String,
    pub message: String,
}

/// Bytes of the fixed frame header: length + kind + meta length.
pub const FRAME_HEADER: usize = 4 + 1 + 4;

/// Encodes one invocation-channel frame.
pub fn encode_frame(kind: FrameKind, meta: &[u8], body: &[u8]) -> Vec<u8> {
    let len = 1 + 4 + meta.len() + body.len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(body);
    out
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub meta: Vec<u8>,
    pub body: Vec<u8>,
}

/// Error decoding a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

/// Reads the total length from the first 4 bytes of a frame and checks it
/// against `limit` before anything is allocated.
pub fn frame_len(prefix: [u8; 4], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    if len < 5 {
        return Err(FrameError::Malformed("frame shorter than its header"));
    }
    Ok(len)
}

/// Decodes the part of a frame after its 4-byte length.
pub fn decode_frame_rest(rest: Vec<u8>) -> Result<Frame, FrameError> {
    if rest.len() < 5 {
        return Err(FrameError::Malformed("frame shorter than its header"));
    }
    let kind = FrameKind::from_u8(rest[0]).ok_or(FrameError::Malformed("unknown frame kind"))?;
    let meta_len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
    let meta_end = 5usize.checked_add(meta_len).filter(|&e| e <= rest.len());
    let meta_end = meta_end.ok_or(FrameError::Malformed(
        "meta length past the end of the frame",
    ))?;
    let meta = rest[5..meta_end].to_vec();
    let mut body = rest;
    body.drain(..meta_end);
    Ok(Frame { kind, meta, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip() {
        let bytes = encode_frame(FrameKind::Invoke, br#"{"a":1}"#, b"payload");
        let len = frame_len(bytes[..4].try_into().unwrap(), 1 << 20).unwrap();
        assert_eq!(len, bytes.len() - 4);
        let frame = decode_frame_rest(bytes[4..].to_vec()).unwrap();
        assert_eq!(frame.kind, FrameKind::Invoke);
        assert_eq!(frame.meta, br#"{"a":1}"#);
        assert_eq!(frame.body, b"payload");
    }

    #[test]
    fn oversized_frame_rejected_before_allocation() {
        let err = frame_len((10_000u32).to_le_bytes(), 100).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: 10_000,
                limit: 100
            }
        );
    }

    #[test]
    fn malformed_frames() {
        assert!(decode_frame_rest(vec![9, 0, 0, 0, 0]).is_err());
        assert!(decode_frame_rest(vec![3, 10, 0, 0, 0, 1]).is_err());
        assert!(frame_len(2u32.to_le_bytes(), 100).is_err());
    }

    #[test]
    fn control_messages_are_tagged_json() {
        let msg = DaemonMessage::Clone {
            request: CloneRequest {
                sandbox: 7,
                writable_bytes: 1024,
                carry: vec!["/usr".into()],
            },
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert!(json.starts_with(r#"{"type":"clone","sandbox":7"#), "{json}");
        assert_eq!(serde_json::from_str::<DaemonMessage>(&json).unwrap(), msg);
        let need: ZygoteMessage = serde_json::from_str(r#"{"type":"need_settings"}"#).unwrap();
        assert_eq!(need, ZygoteMessage::NeedSettings);
        let configure = DaemonMessage::Configure(ZygoteSettings::default());
        let json = serde_json::to_string(&configure).unwrap();
        assert_eq!(
            serde_json::from_str::<DaemonMessage>(&json).unwrap(),
            configure
        );
        let failed: ZygoteMessage = serde_json::from_str(
            r#"{"type":"init_failed","stage":"import","errorType":"ModuleNotFoundError","errorMessage":"No module named 'x'","stackTrace":[]}"#,
        )
        .unwrap();
        assert!(
            matches!(failed, ZygoteMessage::InitFailed(f) if f.error_type == "ModuleNotFoundError")
        );
    }

    #[test]
    fn hand_encoded_hibernation_messages_parse() {
        let wake: DaemonMessage = serde_json::from_slice(WAKE_MESSAGE).unwrap();
        assert_eq!(wake, DaemonMessage::Wake);
        assert_eq!(
            serde_json::to_vec(&DaemonMessage::Wake).unwrap(),
            WAKE_MESSAGE
        );
        for (pages, bytes) in [(0, 0), (7, 4096), (u64::MAX, u64::MAX)] {
            let mut buf = [0u8; 96];
            let len = encode_hibernated(&mut buf, pages, bytes);
            let msg: ZygoteMessage = serde_json::from_slice(&buf[..len]).unwrap();
            assert_eq!(
                msg,
                ZygoteMessage::Hibernated {
                    pages_written: pages,
                    bytes_dropped: bytes
                }
            );
            let len = encode_woken(&mut buf, bytes);
            let msg: ZygoteMessage = serde_json::from_slice(&buf[..len]).unwrap();
            assert_eq!(
                msg,
                ZygoteMessage::Woken {
                    mapped_bytes: bytes
                }
            );
        }
    }
}
