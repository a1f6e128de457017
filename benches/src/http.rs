//! The benchmark's HTTP/1 client: one keep-alive connection to the daemon,
//! re-established only if the server closes it, timing each request from
//! just before it is sent until its body has been read in full.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where the daemon listens: `http://host:port[/prefix]`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`, what the TCP connection dials and the `Host` header says.
    authority: String,
    /// Path prefix without a trailing slash (usually empty).
    prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid URL {url:?}: expected http://HOST:PORT"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                bail!("unsupported URL scheme {other:?} in {url:?}: only http is supported")
            }
            None => bail!("URL {url:?} has no scheme: expected http://HOST:PORT"),
        }
        let authority = uri
            .authority()
            .with_context(|| format!("URL {url:?} has no host"))?;
        let authority = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{}:80", authority.host()),
        };
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self { authority, prefix })
    }

    /// The path of the native invoke API for `function`.
    pub fn invoke_path(&self, function: &str) -> String {
        format!("{}/v1/functions/{function}/invoke", self.prefix)
    }

    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// A completed exchange.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// From just before the request was handed to the connection until the
    /// last byte of the body was read.
    pub elapsed: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One HTTP/1 keep-alive connection, reconnected on demand.
pub struct Connection {
    endpoint: Endpoint,
    /// Sent as `Authorization: Bearer …` (the admin API's token).
    bearer: Option<String>,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Connections opened after the first one.
    pub reconnects: u64,
    opened: u64,
}

impl Connection {
    /// A connection that dials on first use.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            bearer: None,
            sender: None,
            reconnects: 0,
            opened: 0,
        }
    }

    /// Sends `token` as a bearer token with every request.
    pub fn with_bearer(mut self, token: Option<&str>) -> Self {
        self.bearer = token.map(str::to_owned);
        self
    }

    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        if let Some(sender) = &mut self.sender {
            if sender.ready().await.is_err() {
                self.sender = None;
            }
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect(&self.endpoint.authority)
                .await
                .with_context(|| format!("connecting to {}", self.endpoint))?;
            stream
                .set_nodelay(true)
                .context("setting TCP_NODELAY on the benchmark connection")?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .with_context(|| format!("HTTP/1 handshake with {}", self.endpoint))?;
            // The connection task ends when the server closes the connection
            // or the sender is dropped; the next request then reconnects.
            tokio::spawn(async move {
                let _ = conn.await;
            });
            sender
                .ready()
                .await
                .with_context(|| format!("HTTP/1 connection to {} closed", self.endpoint))?;
            if self.opened > 0 {
                self.reconnects += 1;
            }
            self.opened += 1;
            self.sender = Some(sender);
        }
        Ok(self
            .sender
            .as_mut()
            .expect("sender was set above or returned early"))
    }

    /// Sends one request and reads the whole response within `timeout`
    /// (connection set-up included). On timeout or transport error the
    /// connection is dropped, so the next request starts on a fresh one.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply> {
        let result = tokio::time::timeout(timeout, self.send_inner(method, path, body)).await;
        match result {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(err)) => {
                self.sender = None;
                Err(err)
            }
            Err(_) => {
                self.sender = None;
                bail!(
                    "no complete response from {} within {} ms",
                    self.endpoint,
                    timeout.as_millis()
                )
            }
        }
    }

    async fn send_inner(&mut self, method: Method, path: &str, body: Bytes) -> Result<Reply> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.endpoint.authority)
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = &self.bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .with_context(|| format!("building request for {path}"))?;
        let sender = self.ready_sender().await?;

        let start = Instant::now();
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("sending request to {path}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .with_context(|| format!("reading response body of {path}"))?
            .to_bytes();
        let elapsed = start.elapsed();

        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            elapsed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:41234").expect("valid");
        assert_eq!(e.invoke_path("noop"), "/v1/functions/noop/invoke");
        assert_eq!(e.to_string(), "http://127.0.0.1:41234");

        let e = Endpoint::parse("http://localhost/fnhost/").expect("valid");
        assert_eq!(e.path("/healthz"), "/fnhost/healthz");
        assert_eq!(e.to_string(), "http://localhost:80/fnhost");

        assert!(Endpoint::parse("https://127.0.0.1:1").is_err());
        assert!(Endpoint::parse("127.0.0.1:1").is_err());
    }
}
