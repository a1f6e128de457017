//! A minimal blocking HTTP/1.1 client: one request per connection
//! (`Connection: close`), the whole response read into memory. Enough for
//! health checks, admin calls and assertions; measurement clients live in
//! the benchmark harness and the load tester.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long [`http`] and [`http_with`] wait for a response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics (for tests) with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection, optionally with
/// `Authorization: Bearer <token>`; `timeout` bounds connecting and each read.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
    timeout: Duration,
) -> Result<Response> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .context("setting the read timeout")?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .with_context(|| format!("sending {method} {path} to {addr}"))?;
    // A server may answer (413) before reading a large body; ignore a reset.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        // A reset after a complete answer still leaves the answer usable.
        if raw.is_empty() {
            return Err(e).with_context(|| format!("reading the answer to {method} {path}"));
        }
    }
    parse(&raw).with_context(|| format!("answer of {addr} to {method} {path}"))
}

/// `request` without a token, panicking on transport errors (for tests).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    http_with(addr, method, path, body, None)
}

/// `request` with an optional bearer token, panicking on transport errors.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> Response {
    request(addr, method, path, body, token, DEFAULT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

/// Splits a raw `Connection: close` response into status, headers and body.
fn parse(raw: &[u8]) -> Result<Response> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!(
            "incomplete response head ({} bytes): {:?}",
            raw.len(),
            String::from_utf8_lossy(raw)
        );
    };
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let Some(status) = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
    else {
        bail!("no status code in {status_line:?}");
    };
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    Ok(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_status_headers_and_body() {
        let r = parse(b"HTTP/1.1 404 Not Found\r\nX-Fnhost-Start: cold-start\r\n\r\n{\"a\":1}")
            .expect("parses");
        assert_eq!(r.status, 404);
        assert_eq!(r.header("x-fnhost-start"), Some("cold-start"));
        assert_eq!(r.json()["a"], 1);
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn sends_method_path_token_and_body() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&seen).ends_with("{}") {
                let n = conn.read(&mut buf).expect("read");
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .expect("write");
            String::from_utf8_lossy(&seen).into_owned()
        });
        let r = http_with(addr, "PUT", "/v1/x", b"{}", Some("s3cret"));
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        let seen = server.join().expect("server");
        assert!(seen.starts_with("PUT /v1/x HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains("Authorization: Bearer s3cret\r\n"), "{seen}");
    }
}
