//! An error as the Lambda API reports it: an HTTP status, the error type
//! clients read from `x-amzn-ErrorType`, and a message.

/// A Lambda service error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// 400 `InvalidParameterValueException`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameterValueException", message)
    }

    /// 400 `ValidationException` (a value outside a documented constraint).
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", message)
    }

    /// 404 `ResourceNotFoundException` for a function.
    pub fn not_found(name: &str) -> Self {
        Self::new(
            404,
            "ResourceNotFoundException",
            format!("Function not found: {}", crate::model::arn(name)),
        )
    }

    /// 409 `ResourceConflictException`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "ResourceConflictException", message)
    }

    /// 500 `ServiceException`.
    pub fn service(message: impl Into<String>) -> Self {
        Self::new(500, "ServiceException", message)
    }

    /// The JSON body Lambda sends with it.
    pub fn body(&self) -> String {
        serde_json::json!({ "Type": "User", "message": self.message }).to_string()
    }
}
