//! Request routing and the invoke handler: admission of the body (size,
//! JSON), invocation through the host, and per-request metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fnhost_pool::Host;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_LENGTH};
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::response::{self, Body};

/// What every request handler shares.
pub struct App {
    pub host: Arc<Host>,
    pub max_payload_bytes: usize,
    pub metrics: Option<PrometheusHandle>,
    request_seq: AtomicU64,
}

impl App {
    pub fn new(host: Arc<Host>, max_payload_bytes: usize, metrics: Option<PrometheusHandle>) -> Self {
        App { host, max_payload_bytes, metrics, request_seq: AtomicU64::new(0) }
    }

    /// A unique request id in UUID form (not a secret: time, counter, pid).
    fn request_id(&self) -> String {
        let seq = self.request_seq.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
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

/// Routes one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let response = match (req.method(), segments.as_slice()) {
        (&Method::GET, ["healthz"]) => healthz(&app),
        (&Method::GET, ["metrics"]) => match &app.metrics {
            Some(handle) => {
                let mut r = Response::new(Body::new(Bytes::from(handle.render())));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            None => response::error(StatusCode::NOT_FOUND, "RouteNotFound", "metrics are disabled"),
        },
        (&Method::POST, ["v1", "functions", name, "invoke"]) => {
            let name = name.to_string();
            invoke(&app, &name, req).await
        }
        (_, ["healthz"]) | (_, ["metrics"]) => method_not_allowed("GET"),
        (_, ["v1", "functions", _, "invoke"]) => method_not_allowed("POST"),
        _ => response::error(
            StatusCode::NOT_FOUND,
            "RouteNotFound",
            format!("no route for {} {path}; try POST /v1/functions/{{name}}/invoke", req.method()),
        ),
    };
    Ok(response)
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = response::error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("use {allow}"));
    r.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn healthz(app: &App) -> Response<Body> {
    let body = serde_json::json!({
        "status": "ok",
        "functions": app.host.function_names(),
        "cgroups": app.host.cgroup_layout(),
    });
    response::json(StatusCode::OK, body.to_string())
}

fn too_large(app: &App, size: Option<u64>) -> Response<Body> {
    let size = size.map(|s| format!(" ({s} bytes)")).unwrap_or_default();
    response::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestTooLarge",
        format!("request body{size} exceeds max_payload_bytes = {}", app.max_payload_bytes),
    )
}

async fn invoke(app: &App, name: &str, req: Request<Incoming>) -> Response<Body> {
    let received = Instant::now();
    // Unknown functions are answered before the body is read, and are not
    // used as a metrics label (clients choose them).
    if app.host.pool(name).is_none() {
        let err = fnhost_pool::InvokeError::NotFound {
            function: name.to_string(),
            defined: app.host.function_names().join(", "),
        };
        metrics::counter!("fnhost_invocations_total", "function" => "-", "outcome" => err.kind()).increment(1);
        return response::invoke_error(&err);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > app.max_payload_bytes as u64) {
        return too_large(app, declared);
    }
    let payload = match Limited::new(req.into_body(), app.max_payload_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(app, None),
        Err(e) => {
            return response::error(StatusCode::BAD_REQUEST, "InvalidRequestContent", format!("cannot read request body: {e}"))
        }
    };
    if !payload.is_empty() {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
            return response::error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                format!("request body is not valid JSON: {e}"),
            );
        }
    }
    let request_id = app.request_id();
    let span = tracing::info_span!("invoke", function = name, request_id = %request_id);
    let _enter = span.enter();
    let admitted_us = received.elapsed().as_micros() as u64;
    let result = app.host.invoke(name, &payload, request_id.clone()).await;
    let invoked = Instant::now();
    let function = name.to_string();
    match result {
        Ok(inv) => {
            // Dispatcher share: admission (body read, JSON check) plus the
            // time from the host's answer to the response being built.
            let dispatch_us = admitted_us + invoked.elapsed().as_micros() as u64;
            let start = inv.start.as_str();
            metrics::counter!("fnhost_invocations_total", "function" => function.clone(), "outcome" => "ok", "start" => start).increment(1);
            metrics::histogram!("fnhost_phase_seconds", "function" => function, "phase" => "dispatch").record(dispatch_us as f64 / 1e6);
            response::invocation(inv, &request_id, dispatch_us)
        }
        Err(err) => {
            tracing::info!(error = %err, "invocation failed");
            metrics::counter!("fnhost_invocations_total", "function" => function, "outcome" => err.kind()).increment(1);
            let mut r = response::invoke_error(&err);
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                r.headers_mut().insert("x-amzn-requestid", v);
            }
            r
        }
    }
}
