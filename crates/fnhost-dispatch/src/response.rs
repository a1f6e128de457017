//! Turning outcomes into HTTP responses: the one place errors reach users.
//! Every error body has the same shape, `{"errorType", "errorMessage"}`
//! (plus `stackTrace` for function errors), the field names AWS Lambda uses.

use bytes::Bytes;
use fnhost_pool::{Invocation, InvokeError};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};

pub type Body = Full<Bytes>;

/// Builds a JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A host-side error (not the function's): `{"errorType", "errorMessage"}`.
pub fn error(status: StatusCode, error_type: &str, message: impl Into<String>) -> Response<Body> {
    let body = serde_json::json!({ "errorType": error_type, "errorMessage": message.into() });
    let mut response = json(status, body.to_string());
    if let Ok(value) = HeaderValue::from_str(error_type) {
        response.headers_mut().insert("x-fnhost-error", value);
    }
    response
}

/// HTTP status of each invocation failure.
pub fn status_of(err: &InvokeError) -> StatusCode {
    match err {
        InvokeError::NotFound { .. } => StatusCode::NOT_FOUND,
        InvokeError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
        InvokeError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        InvokeError::SandboxUnavailable { .. }
        | InvokeError::ShuttingDown
        | InvokeError::OverBudget { .. }
        | InvokeError::DescriptorLimit { .. } => StatusCode::SERVICE_UNAVAILABLE,
        // Nobody reads it: the client is gone (nginx's "client closed request").
        InvokeError::Cancelled { .. } => {
            StatusCode::from_u16(499).expect("499 is a valid status code")
        }
        InvokeError::InitFailed { .. }
        | InvokeError::FunctionError { .. }
        | InvokeError::MemoryLimit { .. }
        | InvokeError::ResponseTooLarge { .. }
        | InvokeError::SandboxCrashed { .. } => StatusCode::BAD_GATEWAY,
    }
}

/// The response for a failed invocation.
pub fn invoke_error(err: &InvokeError) -> Response<Body> {
    let status = status_of(err);
    let mut response = match err {
        // The function's own error object (errorType/errorMessage/stackTrace), as produced by the runtime.
        InvokeError::FunctionError { body, .. } => {
            let mut r = json(status, Bytes::copy_from_slice(body));
            r.headers_mut()
                .insert("x-fnhost-error", HeaderValue::from_static("FunctionError"));
            r
        }
        InvokeError::InitFailed { failure, .. } => {
            let body = serde_json::json!({
                "errorType": format!("Runtime.InitError.{}", failure.error_type),
                "errorMessage": err.to_string(),
                "stage": failure.stage,
                "stackTrace": failure.trace,
            });
            let mut r = json(status, body.to_string());
            r.headers_mut()
                .insert("x-fnhost-error", HeaderValue::from_static("InitError"));
            r
        }
        other => error(status, other.kind(), other.to_string()),
    };
    if let Some(after) = err.retry_after() {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
    }
    response
}

/// `Server-Timing` value for a successful invocation (milliseconds).
pub fn server_timing(inv: &Invocation, dispatch_us: u64) -> String {
    let t = &inv.timings;
    let mut parts = vec![("queue", t.queue_us)];
    if t.zygote_us > 0 {
        parts.push(("zygote", t.zygote_us));
    }
    if inv.start == fnhost_pool::StartKind::Wake {
        parts.push(("wake", t.wake_us));
    }
    if t.clone_us > 0 || t.setup_us > 0 {
        parts.push(("clone", t.clone_us));
        parts.push(("setup", t.setup_us));
    }
    parts.extend([
        ("handler", t.handler_us),
        ("exchange", t.exchange_us),
        ("dispatch", dispatch_us),
    ]);
    parts.push(("total", t.total_us + dispatch_us));
    parts
        .iter()
        .map(|(name, us)| format!("{name};dur={:.3}", *us as f64 / 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The response for a successful invocation.
pub fn invocation(inv: Invocation, request_id: &str, dispatch_us: u64) -> Response<Body> {
    let timing = server_timing(&inv, dispatch_us);
    let mut response = json(StatusCode::OK, inv.body);
    let headers = response.headers_mut();
    headers.insert(
        "x-fnhost-start",
        HeaderValue::from_static(inv.start.as_str()),
    );
    headers.insert("x-fnhost-sandbox", HeaderValue::from(inv.sandbox_id));
    if let Ok(v) = HeaderValue::from_str(&timing) {
        headers.insert("server-timing", v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use fnhost_pool::{StartKind, Timings};

    #[test]
    fn statuses() {
        let f = || "f".to_string();
        assert_eq!(
            status_of(&InvokeError::NotFound { function: f() }),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status_of(&InvokeError::Timeout {
                function: f(),
                timeout_ms: 1
            }),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            status_of(&InvokeError::MemoryLimit {
                function: f(),
                memory_mb: 1
            }),
            StatusCode::BAD_GATEWAY
        );
        let overloaded = InvokeError::Overloaded {
            function: f(),
            max_concurrency: 1,
            queue_timeout_ms: 1,
        };
        let r = invoke_error(&overloaded);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn error_body_shape() {
        let r = invoke_error(&InvokeError::Timeout {
            function: "slow".into(),
            timeout_ms: 250,
        });
        let body: serde_json::Value = serde_json::from_slice(&futures_body(r)).unwrap();
        assert_eq!(body["errorType"], "Timeout");
        assert!(body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("250 ms (timeout_ms)"));
    }

    fn futures_body(r: Response<Body>) -> Bytes {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { r.into_body().collect().await.unwrap().to_bytes() })
    }

    #[test]
    fn server_timing_lists_phases() {
        let inv = Invocation {
            body: vec![],
            start: StartKind::OnDemandClone,
            sandbox_id: 1,
            timings: Timings {
                queue_us: 10,
                clone_us: 800,
                setup_us: 200,
                handler_us: 30,
                exchange_us: 50,
                total_us: 1100,
                ..Timings::default()
            },
        };
        let st = server_timing(&inv, 40);
        assert_eq!(st, "queue;dur=0.010, clone;dur=0.800, setup;dur=0.200, handler;dur=0.030, exchange;dur=0.050, dispatch;dur=0.040, total;dur=1.140");
    }
}
