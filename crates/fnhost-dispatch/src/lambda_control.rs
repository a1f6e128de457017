//! The Lambda control-plane endpoint on the invoke listener (so
//! `--endpoint-url` serves both): routing of the REST paths, the request
//! body (bounded by the zip limit), SigV4 authentication of every request,
//! and AWS-shaped errors. The operations are in [`crate::lambda_functions`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fnhost_config::{ControlPlaneConfig, InvokeAuth};
use fnhost_control::runtime::Runtimes;
use fnhost_control::sigv4::{self, AuthError, Credentials, SignedRequest};
use fnhost_control::{ApiError, FunctionRecord, Store, ZipLimits};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};

use crate::control::Control;
use crate::response::{self, Body};

/// A control-plane operation, from method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create,
    List,
    Get(String),
    Delete(String),
    GetConfiguration(String),
    UpdateConfiguration(String),
    UpdateCode(String),
    PutConcurrency(String),
    GetConcurrency(String),
    DeleteConcurrency(String),
    PutProvisioned(String),
    GetProvisioned(String),
    DeleteProvisioned(String),
    /// A Lambda API path fnhost does not implement; names what it is.
    Unsupported(&'static str),
}

/// Whether the first path segment is an API version (`2015-03-31`).
fn is_api_version(segment: &str) -> bool {
    let b = segment.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// The control-plane operation of a request, or `None` for paths that are
/// not the Lambda API's (and for the Invoke route, served elsewhere).
pub fn route(method: &Method, path: &str) -> Option<Op> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let version = *segments.first()?;
    if !is_api_version(version) {
        return None;
    }
    let name =
        |s: &str| crate::lambda::function_name(&crate::routes::percent_decode(s)).to_string();
    let m = method.clone();
    let op = match (version, &segments[1..]) {
        ("2015-03-31", ["functions", _, "invocations"]) => return None,
        ("2015-03-31", ["functions"] | ["functions", ""]) if m == Method::POST => Op::Create,
        ("2015-03-31", ["functions"] | ["functions", ""]) if m == Method::GET => Op::List,
        ("2015-03-31", ["functions", f] | ["functions", f, ""]) if m == Method::GET => {
            Op::Get(name(f))
        }
        ("2015-03-31", ["functions", f] | ["functions", f, ""]) if m == Method::DELETE => {
            Op::Delete(name(f))
        }
        ("2015-03-31", ["functions", f, "configuration"]) if m == Method::GET => {
            Op::GetConfiguration(name(f))
        }
        ("2015-03-31", ["functions", f, "configuration"]) if m == Method::PUT => {
            Op::UpdateConfiguration(name(f))
        }
        ("2015-03-31", ["functions", f, "code"]) if m == Method::PUT => Op::UpdateCode(name(f)),
        (_, ["functions", f, "concurrency"]) if m == Method::PUT => Op::PutConcurrency(name(f)),
        (_, ["functions", f, "concurrency"]) if m == Method::GET => Op::GetConcurrency(name(f)),
        (_, ["functions", f, "concurrency"]) if m == Method::DELETE => {
            Op::DeleteConcurrency(name(f))
        }
        (_, ["functions", f, "provisioned-concurrency"]) if m == Method::PUT => {
            Op::PutProvisioned(name(f))
        }
        (_, ["functions", f, "provisioned-concurrency"]) if m == Method::GET => {
            Op::GetProvisioned(name(f))
        }
        (_, ["functions", f, "provisioned-concurrency"]) if m == Method::DELETE => {
            Op::DeleteProvisioned(name(f))
        }
        (_, ["functions", _, "versions", ..]) => {
            Op::Unsupported("function versions (PublishVersion, ListVersionsByFunction)")
        }
        (_, ["functions", _, "aliases", ..]) => Op::Unsupported("aliases"),
        (_, ["functions", _, "policy", ..]) => {
            Op::Unsupported("resource-based policies (AddPermission, GetPolicy)")
        }
        (_, ["functions", _, "url", ..]) => {
            Op::Unsupported("function URLs (use fnhost's /v1/functions/{name}/invoke)")
        }
        (_, ["functions", _, "event-invoke-config", ..]) => {
            Op::Unsupported("event invoke configuration")
        }
        (_, ["layers", ..]) => Op::Unsupported("layers (put dependencies into the deployment zip)"),
        (_, ["event-source-mappings", ..]) => Op::Unsupported("event source mappings"),
        (_, ["tags", ..]) => Op::Unsupported("tags"),
        (_, ["functions", _, "invoke-async", ..]) => {
            Op::Unsupported("InvokeAsync (use Invoke with InvocationType=Event)")
        }
        _ => Op::Unsupported("this operation"),
    };
    Some(op)
}

/// The control plane's shared state.
pub struct LambdaControl {
    pub(crate) control: Arc<Control>,
    pub(crate) store: Arc<Store>,
    pub(crate) runtimes: Runtimes,
    pub(crate) zip_limits: ZipLimits,
    /// API functions by name (the store's records), changed only under
    /// this lock.
    pub(crate) records: tokio::sync::Mutex<BTreeMap<String, FunctionRecord>>,
    credentials: Credentials,
    invoke_auth: InvokeAuth,
    /// Bodies of up to ~67 MiB: a few at a time.
    bodies: tokio::sync::Semaphore,
    body_timeout: Duration,
}

/// Largest body a control-plane request may have: a base64 zip plus JSON.
fn max_body(limits: &ZipLimits) -> usize {
    (limits.max_zipped_bytes.saturating_mul(4) / 3 + (1 << 20)) as usize
}

impl LambdaControl {
    pub fn new(
        control: Arc<Control>,
        store: Arc<Store>,
        records: Vec<FunctionRecord>,
        config: &ControlPlaneConfig,
        runtimes: Runtimes,
        body_timeout: Duration,
    ) -> Self {
        LambdaControl {
            control,
            store,
            runtimes,
            zip_limits: ZipLimits {
                max_zipped_bytes: config.max_code_zip_bytes,
                max_unzipped_bytes: config.max_code_unzipped_bytes,
                ..ZipLimits::default()
            },
            records: tokio::sync::Mutex::new(
                records.into_iter().map(|r| (r.name.clone(), r)).collect(),
            ),
            credentials: Credentials::new(config.credentials.iter().cloned()),
            invoke_auth: config.invoke_auth,
            bodies: tokio::sync::Semaphore::new(4),
            body_timeout,
        }
    }

    pub fn invoke_auth(&self) -> InvokeAuth {
        self.invoke_auth
    }

    /// Checks a request's signature (for invocations under `invoke_auth = "sigv4"`).
    pub fn authenticate(
        &self,
        method: &Method,
        uri: &hyper::Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), ApiError> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let req = SignedRequest {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers,
            body,
        };
        sigv4::verify(&req, &self.credentials, now_secs())
            .map(|_| ())
            .map_err(|e: AuthError| e.to_api())
    }
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An AWS-shaped error response.
pub fn api_error(err: &ApiError) -> Response<Body> {
    let mut r = response::json(
        StatusCode::from_u16(err.status).unwrap_or(StatusCode::BAD_REQUEST),
        err.body(),
    );
    r.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(err.kind));
    r
}

/// Serves one control-plane request.
pub async fn handle(lc: &Arc<LambdaControl>, op: Op, req: Request<Incoming>) -> Response<Body> {
    if lc.credentials.is_empty() {
        return api_error(&ApiError::new(
            403,
            "AccessDeniedException",
            "the Lambda control plane is disabled: no access keys are configured; add [[server.aws_credentials]] (access_key_id, secret_access_key) or server.aws_credentials_file to the config",
        ));
    }
    if !req.headers().contains_key(hyper::header::AUTHORIZATION) {
        return api_error(&AuthError::Missing.to_api());
    }
    let (parts, body) = req.into_parts();
    let Ok(_permit) = lc.bodies.acquire().await else {
        return api_error(&ApiError::service("the server is shutting down"));
    };
    let limit = max_body(&lc.zip_limits);
    let body = match tokio::time::timeout(lc.body_timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return api_error(&ApiError::new(
                413,
                "RequestEntityTooLargeException",
                format!("Request must be smaller than {limit} bytes: the zip may be at most {} bytes (server.max_code_zip_bytes)", lc.zip_limits.max_zipped_bytes),
            ))
        }
        Ok(Err(e)) => return api_error(&ApiError::new(400, "InvalidRequestContentException", format!("cannot read the request body: {e}"))),
        Err(_) => return api_error(&ApiError::new(408, "RequestTimeoutException", "the request body did not arrive in time (server.body_timeout_ms)")),
    };
    if let Err(e) = lc.authenticate(&parts.method, &parts.uri, &parts.headers, &body) {
        return api_error(&e);
    }
    let query = parts.uri.query().unwrap_or("").to_string();
    let result = crate::lambda_functions::serve(lc, op, &query, body_json(&body)).await;
    let r = match result {
        Ok((status, body)) => match body {
            Some(v) => response::json(status, Bytes::from(v.to_string())),
            None => {
                let mut r = Response::new(Body::new(Bytes::new()));
                *r.status_mut() = status;
                r
            }
        },
        Err(e) => api_error(&e),
    };
    metrics::counter!("fnhost_control_plane_requests_total", "status" => r.status().as_u16().to_string()).increment(1);
    r
}

/// The body as a JSON object (an empty body is an empty object).
fn body_json(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(ApiError::new(
            400,
            "InvalidRequestContentException",
            "Could not parse request body into json: the body must be a JSON object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_of_the_control_plane() {
        let r = |m: Method, p: &str| route(&m, p);
        assert_eq!(r(Method::POST, "/2015-03-31/functions"), Some(Op::Create));
        assert_eq!(r(Method::GET, "/2015-03-31/functions/"), Some(Op::List));
        assert_eq!(
            r(Method::GET, "/2015-03-31/functions/f"),
            Some(Op::Get("f".into()))
        );
        assert_eq!(
            r(
                Method::PUT,
                "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Af/code"
            ),
            Some(Op::UpdateCode("f".into()))
        );
        assert_eq!(
            r(Method::GET, "/2019-09-30/functions/f/concurrency"),
            Some(Op::GetConcurrency("f".into()))
        );
        assert_eq!(
            r(Method::PUT, "/2017-10-31/functions/f/concurrency"),
            Some(Op::PutConcurrency("f".into()))
        );
        assert_eq!(
            r(
                Method::PUT,
                "/2019-09-30/functions/f/provisioned-concurrency"
            ),
            Some(Op::PutProvisioned("f".into()))
        );
        assert!(
            matches!(r(Method::POST, "/2015-03-31/functions/f/versions"), Some(Op::Unsupported(w)) if w.contains("versions"))
        );
        assert!(
            matches!(r(Method::GET, "/2018-10-31/layers"), Some(Op::Unsupported(w)) if w.contains("layers"))
        );
        assert_eq!(r(Method::POST, "/2015-03-31/functions/f/invocations"), None);
        assert_eq!(r(Method::GET, "/healthz"), None);
        assert_eq!(r(Method::POST, "/v1/functions/f/invoke"), None);
    }

    #[test]
    fn bodies_are_json_objects() {
        assert!(body_json(b"").expect("empty").is_empty());
        assert!(body_json(b"[1]").is_err());
        assert_eq!(body_json(br#"{"a":1}"#).expect("object")["a"], 1);
    }
}
