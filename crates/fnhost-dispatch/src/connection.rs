//! Accepting and serving HTTP/1 connections with bounds a client cannot
//! exceed: at most `max_connections` open at once (more wait in the kernel's
//! accept queue), a deadline for every request's headers (which also closes
//! idle keep-alive connections), and a lingering close so that a client
//! still sending an oversized body reads its 413 instead of a reset.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

use crate::linger::Lingering;
use crate::response;

/// A listening socket of either kind.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An accepted connection of either kind.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection for T {}

impl Listener {
    async fn accept(&self) -> io::Result<Box<dyn Connection>> {
        match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
            Listener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                Ok(Box::new(stream))
            }
        }
    }
}

/// Bounds on the connections of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// See `server.header_timeout_ms`.
    pub header_timeout: Duration,
    /// See `server.max_connections`.
    pub max_connections: usize,
    /// Label of the listener in metrics ("invoke", "admin").
    pub listener: &'static str,
}

impl ConnectionLimits {
    /// The invoke listener's bounds from `[server]`.
    pub fn invoke(http: &fnhost_config::HttpLimits) -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_millis(http.header_timeout_ms),
            max_connections: http.max_connections,
            listener: "invoke",
        }
    }

    /// The admin listener: operators' tools, a few connections suffice.
    pub fn admin(http: &fnhost_config::HttpLimits) -> Self {
        ConnectionLimits {
            header_timeout: Duration::from_millis(http.header_timeout_ms),
            max_connections: 64,
            listener: "admin",
        }
    }
}

/// Serves HTTP/1 on `listener` with `handler` until `shutdown` resolves,
/// then waits up to `grace` for open connections to finish their requests.
pub async fn serve<H, F>(
    listener: Listener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: ConnectionLimits,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<response::Body>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = metrics::gauge!("fnhost_http_connections", "listener" => limits.listener);
    let header_timeouts =
        metrics::counter!("fnhost_http_header_timeouts_total", "listener" => limits.listener);
    tokio::pin!(shutdown);
    loop {
        // At the cap, stop accepting: new connections wait in the kernel's
        // queue until one of ours closes (header timeouts close idle ones).
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let handler = handler.clone();
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(Lingering::new(stream)), service_fn(handler));
        let conn = graceful.watch(conn);
        let (open, header_timeouts) = (open.clone(), header_timeouts.clone());
        tokio::spawn(async move {
            open.increment(1.0);
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    header_timeouts.increment(1);
                    // Logged: a client that sees its connection closed
                    // without an answer can be matched to this line.
                    tracing::info!(
                        listener = limits.listener,
                        header_timeout_ms = limits.header_timeout.as_millis() as u64,
                        "closed a connection whose request head did not arrive in time \
                         (server.header_timeout_ms)"
                    );
                } else {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            open.decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "connections still open after the shutdown grace period"
        );
    }
}
