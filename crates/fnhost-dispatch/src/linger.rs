//! Lingering close: when the server closes a connection whose client is
//! still sending (a body over the limit answered before it was read), the
//! kernel would answer the unread bytes with a reset, and the client would
//! see "connection reset" or "broken pipe" instead of the response. So on
//! shutdown the write side is closed first (the client gets the response
//! and EOF) and what the client still sends is read and discarded, for a
//! bounded time and size, before the socket is closed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a closing connection keeps reading what its client still sends.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes read and discarded from a closing connection.
pub const LINGER_MAX_BYTES: u64 = 64 << 20;

/// A connection that drains its peer's unread data when shut down.
pub struct Lingering<T> {
    inner: T,
    /// Set once the write side is closed and draining has begun.
    draining: Option<Drain>,
}

struct Drain {
    deadline: Pin<Box<Sleep>>,
    discarded: u64,
}

impl<T> Lingering<T> {
    pub fn new(inner: T) -> Self {
        Lingering {
            inner,
            draining: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.draining.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.draining = Some(Drain {
                deadline: Box::pin(tokio::time::sleep(LINGER_TIMEOUT)),
                discarded: 0,
            });
        }
        let drain = this.draining.as_mut().expect("set above");
        let mut scratch = [0u8; 16 * 1024];
        loop {
            if drain.discarded >= LINGER_MAX_BYTES || drain.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                // EOF or an error: the peer is done, nothing left to reset.
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => drain.discarded += buf.filled().len() as u64,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The peer is still writing when the server answers and shuts down: it
    /// can finish writing and then read the whole answer.
    #[tokio::test]
    async fn a_peer_still_sending_reads_the_answer() {
        let (client, server) = tokio::net::UnixStream::pair().expect("socketpair");
        let (mut client_read, mut client_write) = client.into_split();
        let sender = tokio::spawn(async move {
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..64 {
                client_write.write_all(&chunk).await?;
            }
            client_write.shutdown().await
        });
        let mut server = Lingering::new(server);
        server.write_all(b"413 answer").await.expect("write");
        server.shutdown().await.expect("shutdown drains");
        drop(server);
        sender
            .await
            .expect("join")
            .expect("the peer could send everything");
        let mut answer = Vec::new();
        client_read.read_to_end(&mut answer).await.expect("read");
        assert_eq!(answer, b"413 answer");
    }

    /// A peer that keeps the connection open but sends nothing does not hold
    /// the shutdown past the linger timeout.
    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_is_dropped_after_the_timeout() {
        let (_client, server) = tokio::net::UnixStream::pair().expect("socketpair");
        let mut server = Lingering::new(server);
        server.shutdown().await.expect("shutdown returns");
        assert!(server.draining.is_some());
    }
}
