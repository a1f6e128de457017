//! The AWS Lambda `Invoke` API (`POST /2015-03-31/functions/{name}/invocations`),
//! so `aws lambda invoke --endpoint-url …` and boto3 work unchanged.
//!
//! What Lambda clients expect: function errors (raised, timed out, killed)
//! come back as **200** with `X-Amz-Function-Error: Unhandled` and an
//! `{errorMessage, errorType, stackTrace}` body; service errors carry their
//! type in `x-amzn-ErrorType` and a `message` in the body; invocation type
//! `Event` is accepted with 202 and runs in the background, `DryRun` answers
//! 204.

use bytes::Bytes;
use fnhost_pool::InvokeError;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};

use crate::response::{self, Body};

/// `X-Amz-Invocation-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

impl InvocationType {
    pub fn parse(header: Option<&str>) -> Result<Self, String> {
        match header.unwrap_or("RequestResponse") {
            "RequestResponse" => Ok(Self::RequestResponse),
            "Event" => Ok(Self::Event),
            "DryRun" => Ok(Self::DryRun),
            other => Err(format!(
                "invalid X-Amz-Invocation-Type {other:?}; expected RequestResponse, Event or DryRun"
            )),
        }
    }
}

/// The function name from a path segment that may be a name, `name:qualifier`,
/// a partial ARN (`123456789012:function:name`) or a full ARN.
pub fn function_name(segment: &str) -> &str {
    let after_function = match segment.find("function:") {
        Some(i) => &segment[i + "function:".len()..],
        None => segment,
    };
    after_function.split(':').next().unwrap_or(after_function)
}

/// A Lambda service error: `x-amzn-ErrorType` header and `{Type, message}` body.
pub fn service_error(
    status: StatusCode,
    error_type: &'static str,
    message: impl Into<String>,
) -> Response<Body> {
    let body = serde_json::json!({ "Type": "User", "message": message.into() });
    let mut r = response::json(status, body.to_string());
    r.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    r
}

/// Maps an invocation failure the way Lambda reports it.
pub fn invoke_error(err: &InvokeError) -> Response<Body> {
    let unhandled = |body: Bytes| {
        let mut r = response::json(StatusCode::OK, body);
        r.headers_mut().insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
        r.headers_mut().insert(
            "x-amz-executed-version",
            HeaderValue::from_static("$LATEST"),
        );
        r
    };
    let function_failure = |error_type: &str| {
        let body = serde_json::json!({ "errorMessage": err.to_string(), "errorType": error_type, "stackTrace": [] });
        unhandled(Bytes::from(body.to_string()))
    };
    let mut r = match err {
        InvokeError::FunctionError { body, .. } => unhandled(Bytes::copy_from_slice(body)),
        InvokeError::InitFailed { failure, .. } => {
            let body = serde_json::json!({
                "errorMessage": err.to_string(),
                "errorType": format!("Runtime.InitError.{}", failure.error_type),
                "stackTrace": failure.trace,
            });
            unhandled(Bytes::from(body.to_string()))
        }
        InvokeError::Timeout { .. } => function_failure("Sandbox.Timedout"),
        InvokeError::MemoryLimit { .. } => function_failure("Runtime.OutOfMemory"),
        InvokeError::SandboxCrashed { .. } => function_failure("Runtime.ExitError"),
        InvokeError::ResponseTooLarge { .. } => function_failure("Function.ResponseSizeTooLarge"),
        InvokeError::NotFound { function, .. } => service_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("Function not found: arn:aws:lambda:local:000000000000:function:{function}"),
        ),
        InvokeError::Overloaded { .. } => service_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            err.to_string(),
        ),
        InvokeError::SandboxUnavailable { .. }
        | InvokeError::ShuttingDown
        | InvokeError::Cancelled { .. }
        | InvokeError::OverBudget { .. }
        | InvokeError::DescriptorLimit { .. } => service_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceException",
            err.to_string(),
        ),
    };
    if let Some(after) = err.retry_after() {
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_arns_and_qualifiers() {
        assert_eq!(function_name("hello"), "hello");
        assert_eq!(function_name("hello:$LATEST"), "hello");
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123456789012:function:hello"),
            "hello"
        );
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123456789012:function:hello:prod"),
            "hello"
        );
        assert_eq!(function_name("123456789012:function:hello"), "hello");
    }

    #[test]
    fn invocation_types() {
        assert_eq!(
            InvocationType::parse(None).unwrap(),
            InvocationType::RequestResponse
        );
        assert_eq!(
            InvocationType::parse(Some("Event")).unwrap(),
            InvocationType::Event
        );
        assert!(InvocationType::parse(Some("Later")).is_err());
    }

    #[test]
    fn function_errors_are_200_with_the_error_header() {
        let r = invoke_error(&InvokeError::Timeout {
            function: "f".into(),
            timeout_ms: 5,
        });
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-amz-function-error"], "Unhandled");
        let r = invoke_error(&InvokeError::NotFound {
            function: "f".into(),
        });
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["x-amzn-errortype"], "ResourceNotFoundException");
    }
}
