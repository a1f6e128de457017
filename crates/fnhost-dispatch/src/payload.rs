//! Admission of request bodies: each is bounded in size
//! (`max_payload_bytes`), in time (`body_timeout_ms`), and all of them
//! together in memory (`max_payload_memory_mb`): a body holds its share of
//! that budget from its first byte until its invocation ends, so many slow
//! or large uploads cannot grow the daemon without bound.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in KiB so that it fits the semaphore's permits.
const UNIT: u64 = 1024;

/// Why a body was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("request body{} exceeds max_payload_bytes = {limit}", declared.map(|d| format!(" ({d} bytes)")).unwrap_or_default())]
    TooLarge { declared: Option<u64>, limit: usize },
    #[error("request body did not arrive within body_timeout_ms = {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error(
        "request bodies in memory have reached max_payload_memory_mb = {budget_mb} MiB; retry shortly"
    )]
    Busy { budget_mb: u64 },
    #[error("cannot read request body: {0}")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Limits of one listener's bodies, shared by all its requests.
#[derive(Debug, Clone)]
pub struct PayloadAdmission {
    max_bytes: usize,
    timeout: Duration,
    budget: Arc<Semaphore>,
    budget_mb: u64,
}

/// A body admitted, with its share of the memory budget (released on drop).
#[derive(Debug)]
pub struct Payload {
    pub bytes: Bytes,
    _share: OwnedSemaphorePermit,
}

impl PayloadAdmission {
    pub fn new(max_bytes: usize, timeout: Duration, budget_mb: u64) -> Self {
        let units = (budget_mb << 20) / UNIT;
        PayloadAdmission {
            max_bytes,
            timeout,
            budget: Arc::new(Semaphore::new(units as usize)),
            budget_mb,
        }
    }

    /// Takes `bytes` more of the budget into `share`, or says the budget is used.
    fn grow(&self, share: &mut OwnedSemaphorePermit, bytes: u64) -> Result<(), PayloadError> {
        let units = bytes.div_ceil(UNIT);
        let more = u32::try_from(units)
            .ok()
            .and_then(|n| self.budget.clone().try_acquire_many_owned(n).ok())
            .ok_or(PayloadError::Busy {
                budget_mb: self.budget_mb,
            })?;
        share.merge(more);
        Ok(())
    }

    /// Reads a body whose headers declared `declared` bytes (if they did).
    /// A declared size over the limit is refused before anything is read.
    pub async fn admit<B>(&self, body: B, declared: Option<u64>) -> Result<Payload, PayloadError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let too_large = |declared| PayloadError::TooLarge {
            declared,
            limit: self.max_bytes,
        };
        if declared.is_some_and(|len| len > self.max_bytes as u64) {
            return Err(too_large(declared));
        }
        let mut share =
            self.budget
                .clone()
                .try_acquire_many_owned(0)
                .map_err(|_| PayloadError::Busy {
                    budget_mb: self.budget_mb,
                })?;
        // Reserve what the client announced up front; a body without a
        // length reserves as it arrives.
        let mut reserved = declared.unwrap_or(0);
        self.grow(&mut share, reserved)?;
        let read = async {
            let mut body = body;
            let mut buf = BytesMut::with_capacity(reserved as usize);
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| PayloadError::Read(e.into()))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let len = (buf.len() + data.len()) as u64;
                if len > self.max_bytes as u64 {
                    return Err(too_large(None));
                }
                if len > reserved {
                    self.grow(&mut share, len - reserved)?;
                    reserved = len;
                }
                buf.extend_from_slice(&data);
            }
            Ok(buf.freeze())
        };
        let bytes = tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| PayloadError::Timeout {
                timeout_ms: self.timeout.as_millis() as u64,
            })??;
        Ok(Payload {
            bytes,
            _share: share,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::body::Frame;

    fn admission(max_bytes: usize, budget_mb: u64) -> PayloadAdmission {
        PayloadAdmission::new(max_bytes, Duration::from_secs(5), budget_mb)
    }

    #[tokio::test]
    async fn a_body_within_the_limits_is_read_whole() {
        let admission = admission(1 << 20, 1);
        let payload = admission
            .admit(Full::new(Bytes::from_static(b"{\"a\":1}")), Some(7))
            .await
            .expect("admitted");
        assert_eq!(&payload.bytes[..], b"{\"a\":1}");
    }

    #[tokio::test]
    async fn an_oversized_declared_or_streamed_body_is_refused() {
        let admission = admission(8, 1);
        let declared = admission
            .admit(Full::new(Bytes::from_static(b"x")), Some(9))
            .await;
        assert!(matches!(
            declared,
            Err(PayloadError::TooLarge {
                declared: Some(9),
                limit: 8
            })
        ));
        let chunks = futures_stream(vec![b"12345".to_vec(), b"67890".to_vec()]);
        let streamed = admission.admit(chunks, None).await;
        assert!(matches!(
            streamed,
            Err(PayloadError::TooLarge { declared: None, .. })
        ));
    }

    #[tokio::test]
    async fn the_memory_budget_is_held_until_the_payload_is_dropped() {
        // 1 MiB budget, bodies up to 1 MiB: one 700 KiB body fits, a second does not.
        let admission = admission(1 << 20, 1);
        let big = vec![b'1'; 700 << 10];
        let first = admission
            .admit(Full::new(Bytes::from(big.clone())), Some(big.len() as u64))
            .await
            .expect("first fits");
        let second = admission
            .admit(Full::new(Bytes::from(big.clone())), Some(big.len() as u64))
            .await;
        assert!(matches!(second, Err(PayloadError::Busy { budget_mb: 1 })));
        // A body without a length is refused as it grows past the budget.
        let chunks = futures_stream(vec![vec![b'1'; 200 << 10], vec![b'1'; 200 << 10]]);
        assert!(matches!(
            admission.admit(chunks, None).await,
            Err(PayloadError::Busy { .. })
        ));
        drop(first);
        admission
            .admit(Full::new(Bytes::from(big.clone())), Some(big.len() as u64))
            .await
            .expect("fits again once the first is dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_times_out() {
        let admission = PayloadAdmission::new(1 << 20, Duration::from_millis(500), 1);
        let result = admission.admit(Stalled, None).await;
        assert!(matches!(
            result,
            Err(PayloadError::Timeout { timeout_ms: 500 })
        ));
    }

    /// A body delivering `chunks` one frame at a time, with no length.
    fn futures_stream(chunks: Vec<Vec<u8>>) -> Chunks {
        Chunks(chunks.into_iter().map(Bytes::from).collect())
    }

    struct Chunks(std::collections::VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    /// A body whose client never sends anything.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }
}
