//! fnhost dispatcher: the HTTP API on tokio + hyper. Routes requests,
//! admits bodies (size, JSON), runs invocations through the host's pools,
//! maps every error to a status and a JSON body, serves `/healthz` and
//! `/metrics`, and drains connections on shutdown.

pub mod lambda;
pub mod response;
pub mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use routes::App;

/// Serves HTTP on `listener` until `shutdown` resolves, then waits up to
/// `grace` for open connections to finish their requests.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>, grace: Duration) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |req| routes::handle(app.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace_ms = grace.as_millis() as u64, "connections still open after the shutdown grace period");
    }
}
