//! Request routing and the invoke handler: admission of the body (size,
//! JSON), invocation through the host, and per-request metrics.

pub(crate) use fnhost_control::sigv4::percent_decode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fnhost_pool::Host;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::lambda::{self, InvocationType};
use crate::payload::{PayloadAdmission, PayloadError};
use crate::response::{self, Body};

/// What every request handler shares.
pub struct App {
    pub host: Arc<Host>,
    pub metrics: Option<PrometheusHandle>,
    payloads: PayloadAdmission,
    /// One permit per asynchronous (`Event`) invocation still running.
    async_slots: Arc<tokio::sync::Semaphore>,
    max_async: usize,
    request_seq: AtomicU64,
    /// The Lambda control plane (absent: its paths are not found).
    lambda_control: Option<Arc<crate::LambdaControl>>,
}

impl App {
    pub fn new(
        host: Arc<Host>,
        server: &fnhost_config::ServerConfig,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        let http = &server.http;
        App {
            host,
            metrics,
            payloads: PayloadAdmission::new(
                server.max_payload_bytes,
                Duration::from_millis(http.body_timeout_ms),
                http.max_payload_memory_mb,
            ),
            async_slots: Arc::new(tokio::sync::Semaphore::new(http.max_async_invocations)),
            max_async: http.max_async_invocations,
            request_seq: AtomicU64::new(0),
            lambda_control: None,
        }
    }

    /// Serves the Lambda control plane (and its invoke auth) too.
    pub fn with_lambda_control(mut self, lc: Arc<crate::LambdaControl>) -> Self {
        self.lambda_control = Some(lc);
        self
    }

    /// Whether invocations must be signed (`server.invoke_auth = "sigv4"`).
    fn sigv4_invokes(&self) -> Option<&Arc<crate::LambdaControl>> {
        self.lambda_control
            .as_ref()
            .filter(|lc| lc.invoke_auth() == fnhost_config::InvokeAuth::Sigv4)
    }

    /// A unique request id in UUID form (not a secret: time, counter, pid).
    fn request_id(&self) -> String {
        let seq = self.request_seq.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let pid = std::process::id() as u64;
        let a = nanos ^ pid.rotate_left(40);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            (a & 0xfff) as u16,
            (seq >> 48) as u16 & 0xfff,
            seq & 0xffff_ffff_ffff
        )
    }
}

/// Where a request goes (pure: method and path only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Metrics,
    /// An invocation of `function` through the native or the Lambda API.
    Invoke {
        function: String,
        lambda: bool,
    },
    /// The path exists with other methods; `allow` lists them.
    MethodNotAllowed {
        allow: &'static str,
    },
    NotFound,
}

/// Routes a method and path.
pub fn route(method: &Method, path: &str) -> Route {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => Route::Healthz,
        (&Method::GET, ["metrics"]) => Route::Metrics,
        (&Method::POST, ["v1", "functions", name, "invoke"]) => Route::Invoke {
            function: name.to_string(),
            lambda: false,
        },
        (&Method::POST, ["2015-03-31", "functions", name, "invocations"]) => {
            let decoded = percent_decode(name);
            Route::Invoke {
                function: lambda::function_name(&decoded).to_string(),
                lambda: true,
            }
        }
        (_, ["healthz"]) | (_, ["metrics"]) => Route::MethodNotAllowed { allow: "GET" },
        (_, ["v1", "functions", _, "invoke"])
        | (_, ["2015-03-31", "functions", _, "invocations"]) => {
            Route::MethodNotAllowed { allow: "POST" }
        }
        _ => Route::NotFound,
    }
}

/// Routes one request.
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    if let Some(lc) = &app.lambda_control {
        if let Some(op) = crate::lambda_control::route(req.method(), req.uri().path()) {
            return Ok(crate::lambda_control::handle(lc, op, req).await);
        }
    }
    let response = match route(req.method(), req.uri().path()) {
        Route::Healthz => healthz(&app),
        Route::Metrics => match &app.metrics {
            Some(handle) => {
                let mut r = Response::new(Body::new(Bytes::from(handle.render())));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            None => response::error(
                StatusCode::NOT_FOUND,
                "RouteNotFound",
                "metrics are disabled",
            ),
        },
        Route::Invoke { function, lambda } => {
            let api = if lambda { Api::Lambda } else { Api::Native };
            if app.sigv4_invokes().is_some() && api == Api::Native {
                response::error(
                    StatusCode::FORBIDDEN,
                    "SignatureRequired",
                    "server.invoke_auth = \"sigv4\": invoke through the Lambda API (POST /2015-03-31/functions/{name}/invocations) with a SigV4-signed request",
                )
            } else {
                invoke(&app, &function, req, api).await
            }
        }
        Route::MethodNotAllowed { allow } => method_not_allowed(allow),
        Route::NotFound => response::error(
            StatusCode::NOT_FOUND,
            "RouteNotFound",
            format!(
                "no route for {} {}; try POST /v1/functions/{{name}}/invoke",
                req.method(),
                req.uri().path()
            ),
        ),
    };
    Ok(response)
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = response::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("use {allow}"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn healthz(app: &App) -> Response<Body> {
    // How many, not which: the names are for the admin API, not for
    // anonymous callers.
    let body = serde_json::json!({
        "status": "ok",
        "functions": app.host.function_count(),
    });
    response::json(StatusCode::OK, body.to_string())
}

/// Which API a request came through: errors are shaped differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Native,
    Lambda,
}

/// The answer to a body that was not admitted. Each closes the connection:
/// the rest of the body, if any, is not read (see `linger`).
fn refused_body(api: Api, err: &PayloadError) -> Response<Body> {
    let message = err.to_string();
    let (status, native, lambda) = match err {
        PayloadError::TooLarge { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLarge",
            "RequestTooLargeException",
        ),
        PayloadError::Timeout { .. } => (
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeout",
            "RequestTimeoutException",
        ),
        PayloadError::Busy { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "PayloadMemoryExhausted",
            "ServiceException",
        ),
        PayloadError::Read(_) => (
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "InvalidRequestContentException",
        ),
    };
    let mut r = match api {
        Api::Native => response::error(status, native, message),
        Api::Lambda => lambda::service_error(status, lambda, message),
    };
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    if matches!(err, PayloadError::Busy { .. }) {
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn bad_request(api: Api, message: String) -> Response<Body> {
    match api {
        Api::Native => response::error(StatusCode::BAD_REQUEST, "InvalidRequestContent", message),
        Api::Lambda => lambda::service_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            message,
        ),
    }
}

fn error_response(api: Api, err: &fnhost_pool::InvokeError) -> Response<Body> {
    match api {
        Api::Native => response::invoke_error(err),
        Api::Lambda => lambda::invoke_error(err),
    }
}

/// Admits the body, runs the invocation, answers in the API's shape.
async fn invoke(app: &Arc<App>, name: &str, req: Request<Incoming>, api: Api) -> Response<Body> {
    let received = Instant::now();
    let invocation_type = match api {
        Api::Native => InvocationType::RequestResponse,
        Api::Lambda => {
            let header = req
                .headers()
                .get("x-amz-invocation-type")
                .and_then(|v| v.to_str().ok());
            match InvocationType::parse(header) {
                Ok(t) => t,
                Err(message) => return bad_request(api, message),
            }
        }
    };
    // Unsigned requests are refused before anything else is told (even
    // whether the function exists).
    if app.sigv4_invokes().is_some() && !req.headers().contains_key(hyper::header::AUTHORIZATION) {
        return crate::lambda_control::api_error(
            &fnhost_control::sigv4::AuthError::Missing.to_api(),
        );
    }
    // Unknown functions are answered before the body is read, and are not
    // used as a metrics label (clients choose them).
    if app.host.pool(name).is_none() {
        let err = fnhost_pool::InvokeError::NotFound {
            function: name.to_string(),
        };
        metrics::counter!("fnhost_invocations_total", "function" => "-", "outcome" => err.kind())
            .increment(1);
        return error_response(api, &err);
    }
    // Under invoke_auth = "sigv4" the signature covers the body: checked
    // once it is admitted; an unsigned request is refused at once.
    let signed = app.sigv4_invokes().map(|_| {
        (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        )
    });
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let payload = match app.payloads.admit(req.into_body(), declared).await {
        Ok(payload) => payload,
        Err(e) => {
            metrics::counter!("fnhost_payloads_refused_total", "reason" => payload_refusal(&e))
                .increment(1);
            return refused_body(api, &e);
        }
    };
    if let (Some(lc), Some((method, uri, headers))) = (app.sigv4_invokes(), &signed) {
        if let Err(e) = lc.authenticate(method, uri, headers, &payload.bytes) {
            return crate::lambda_control::api_error(&e);
        }
    }
    if !payload.bytes.is_empty() {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload.bytes) {
            return bad_request(api, format!("request body is not valid JSON: {e}"));
        }
    }
    let request_id = app.request_id();
    match invocation_type {
        InvocationType::DryRun => {
            let mut r = Response::new(Body::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            return r;
        }
        InvocationType::Event => {
            // Accepted now, run in the background under the same limits;
            // how many may be running is bounded like everything else.
            let Ok(slot) = app.async_slots.clone().try_acquire_owned() else {
                let mut r = lambda::service_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsException",
                    format!(
                        "{} asynchronous invocations are already running (server.max_async_invocations); retry later",
                        app.max_async
                    ),
                );
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            };
            let app = app.clone();
            let name = name.to_string();
            let id = request_id.clone();
            tokio::spawn(async move {
                let result = app
                    .host
                    .invoke(&name, payload.bytes.clone(), id.clone())
                    .await;
                drop((payload, slot));
                let outcome = match &result {
                    Ok(_) => "ok",
                    Err(e) => e.kind(),
                };
                metrics::counter!("fnhost_invocations_total", "function" => name.clone(), "outcome" => outcome, "start" => "event").increment(1);
                if let Err(e) = result {
                    tracing::warn!(function = %name, request_id = %id, error = %e, "asynchronous invocation failed");
                }
            });
            let mut r = Response::new(Body::new(Bytes::new()));
            *r.status_mut() = StatusCode::ACCEPTED;
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                r.headers_mut().insert("x-amzn-requestid", v);
            }
            return r;
        }
        InvocationType::RequestResponse => {}
    }
    let span = tracing::info_span!("invoke", function = name, request_id = %request_id);
    let _enter = span.enter();
    let admitted_us = received.elapsed().as_micros() as u64;
    let result = app
        .host
        .invoke(name, payload.bytes.clone(), request_id.clone())
        .await;
    drop(payload);
    let invoked = Instant::now();
    let function = name.to_string();
    match result {
        Ok(inv) => {
            // Dispatcher share: admission (body read, JSON check) plus the
            // time from the host's answer to the response being built.
            let dispatch_us = admitted_us + invoked.elapsed().as_micros() as u64;
            let start = inv.start.as_str();
            metrics::counter!("fnhost_invocations_total", "function" => function.clone(), "outcome" => "ok", "start" => start).increment(1);
            app.host
                .record_dispatch(&function, dispatch_us as f64 / 1e6);
            let mut r = response::invocation(inv, &request_id, dispatch_us);
            if api == Api::Lambda {
                r.headers_mut().insert(
                    "x-amz-executed-version",
                    HeaderValue::from_static("$LATEST"),
                );
            }
            r
        }
        Err(err) => {
            tracing::info!(error = %err, "invocation failed");
            metrics::counter!("fnhost_invocations_total", "function" => function, "outcome" => err.kind()).increment(1);
            let mut r = error_response(api, &err);
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                r.headers_mut().insert("x-amzn-requestid", v);
            }
            r
        }
    }
}

/// The `reason` label of a refused body.
fn payload_refusal(err: &PayloadError) -> &'static str {
    match err {
        PayloadError::TooLarge { .. } => "too_large",
        PayloadError::Timeout { .. } => "timeout",
        PayloadError::Busy { .. } => "memory",
        PayloadError::Read(_) => "read",
    }
}

#[cfg(test)]
mod tests {
    use super::{percent_decode, route, Route};
    use hyper::Method;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::GET, "/healthz"), Route::Healthz);
        assert_eq!(
            route(&Method::POST, "/v1/functions/hello/invoke"),
            Route::Invoke {
                function: "hello".into(),
                lambda: false
            }
        );
        assert_eq!(
            route(&Method::POST, "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Ahello/invocations"),
            Route::Invoke { function: "hello".into(), lambda: true }
        );
        assert_eq!(
            route(&Method::GET, "/v1/functions/hello/invoke"),
            Route::MethodNotAllowed { allow: "POST" }
        );
        assert_eq!(route(&Method::GET, "/nope"), Route::NotFound);
    }

    #[test]
    fn decodes_escapes_and_keeps_malformed_ones() {
        assert_eq!(percent_decode("arn%3Aaws%3Alambda"), "arn:aws:lambda");
        assert_eq!(percent_decode("hello"), "hello");
        assert_eq!(percent_decode("50%"), "50%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
