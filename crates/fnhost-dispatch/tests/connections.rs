//! The connection layer against real sockets, without a host: what a slow,
//! idle or oversized client gets. Root-free. Waits are upper bounds for
//! something the design promises (a close, an answer), never timings.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use fnhost_dispatch::response::{self, Body};
use fnhost_dispatch::{serve, ConnectionLimits, Listener};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest the tests wait for what must happen.
const PATIENCE: Duration = Duration::from_secs(30);

/// Answers 413 without reading the body (as the invoke route does for a
/// declared size over the limit), or 200 for a GET.
async fn handler(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(if req.method() == hyper::Method::GET {
        response::json(StatusCode::OK, "{}")
    } else {
        response::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            "too large",
        )
    })
}

async fn start(limits: ConnectionLimits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        Listener::Tcp(listener),
        handler,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
        limits,
    ));
    (addr, stop)
}

fn limits(header_timeout_ms: u64, max_connections: usize) -> ConnectionLimits {
    ConnectionLimits {
        header_timeout: Duration::from_millis(header_timeout_ms),
        max_connections,
        listener: "test",
    }
}

async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("read");
    answer
}

#[tokio::test]
async fn a_client_sending_an_oversized_body_reads_the_413() {
    let (addr, _stop) = start(limits(10_000, 16)).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = vec![b'x'; 7 << 20];
    let head = format!(
        "POST /v1/functions/f/invoke HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    // The whole body goes out although the server answered before reading it.
    tokio::time::timeout(PATIENCE, stream.write_all(&body))
        .await
        .expect("not stuck")
        .expect("no broken pipe while sending the body");
    let answer = read_all(&mut stream).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("RequestTooLarge"), "{text}");
}

#[tokio::test]
async fn partial_headers_are_dropped_after_the_header_timeout() {
    let (addr, _stop) = start(limits(200, 16)).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n")
        .await
        .expect("partial head");
    let answer = read_all(&mut stream).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "a request whose headers never completed was served"
    );
}

#[tokio::test]
async fn idle_connections_at_the_cap_do_not_lock_out_new_clients() {
    let (addr, _stop) = start(limits(200, 4)).await;
    // Four connections that never send anything hold every slot...
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // ...until the header timeout closes them: a fifth client is served.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .expect("request");
    let answer = read_all(&mut stream).await;
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    for mut conn in idle {
        assert!(
            read_all(&mut conn).await.is_empty(),
            "idle connections were closed"
        );
    }
}

#[tokio::test]
async fn a_keep_alive_connection_left_idle_is_closed() {
    let (addr, _stop) = start(limits(200, 16)).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .expect("request");
    let answer = read_all(&mut stream).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}
