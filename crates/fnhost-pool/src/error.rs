//! Errors of an invocation, one variant per way it can fail. The dispatcher
//! maps each to an HTTP status and a JSON body; messages name the function
//! and the limit or key involved so a user knows what to change.

use std::time::Duration;

use fnhost_zygote::daemon::StartError;
use fnhost_zygote::protocol::InitFailure;

/// Why an invocation did not produce the function's result.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// Which functions exist is the admin API's to say, not an error's.
    #[error("function '{function}' is not defined")]
    NotFound { function: String },

    #[error(
        "function '{function}' is at its limit of {max_concurrency} concurrent invocations \
         (max_concurrency) and no slot freed within {queue_timeout_ms} ms (queue_timeout_ms)"
    )]
    Overloaded {
        function: String,
        max_concurrency: u32,
        queue_timeout_ms: u64,
    },

    /// The function's zygote could not start (sandbox, runtime, or import).
    #[error("function '{function}' failed to initialize ({}): {failure}", failure.stage)]
    InitFailed {
        function: String,
        failure: InitFailure,
    },

    /// The handler raised; `body` is the Lambda-style error object it produced.
    #[error("function '{function}' raised an error")]
    FunctionError { function: String, body: Vec<u8> },

    #[error("function '{function}' exceeded its timeout of {timeout_ms} ms (timeout_ms); the sandbox was killed")]
    Timeout { function: String, timeout_ms: u64 },

    #[error("function '{function}' exceeded its memory limit of {memory_mb} MiB (memory_mb); the sandbox was killed")]
    MemoryLimit { function: String, memory_mb: u64 },

    #[error("function '{function}' returned {size} bytes, more than max_response_bytes = {limit}")]
    ResponseTooLarge {
        function: String,
        size: usize,
        limit: usize,
    },

    #[error("the sandbox of function '{function}' exited without a response: {detail}")]
    SandboxCrashed { function: String, detail: String },

    /// The host could not create a sandbox (clone, cgroup, zygote death).
    #[error("cannot create a sandbox for function '{function}': {detail}")]
    SandboxUnavailable { function: String, detail: String },

    #[error(
        "cannot start a sandbox for function '{function}': the memory budget of {budget_mb} MiB \
         (server.memory_budget_mb) is used ({used_mb} MiB) and nothing idle could be evicted"
    )]
    OverBudget {
        function: String,
        budget_mb: u64,
        used_mb: u64,
    },

    #[error(
        "cannot start a zygote for function '{function}': the zygotes and clones running hold \
         the {limit} descriptors the daemon's open-file limit leaves them (beside \
         server.max_connections), and no zygote is idle to stop; raise the hard RLIMIT_NOFILE \
         (systemd LimitNOFILE, `ulimit -Hn`) or lower server.max_connections"
    )]
    DescriptorLimit { function: String, limit: usize },

    #[error("fnhost is shutting down")]
    ShuttingDown,

    /// The caller stopped waiting (an HTTP client disconnected); its
    /// sandbox was stopped. Nobody reads this answer; it is logged.
    #[error("the caller of function '{function}' went away; its sandbox was stopped")]
    Cancelled { function: String },
}

impl InvokeError {
    /// The zygote of `function` could not start: its own failure, or one
    /// of stage "sandbox", type `ZygoteStartFailed`.
    pub fn init_failed(function: &str, error: StartError) -> InvokeError {
        InvokeError::InitFailed {
            function: function.to_string(),
            failure: error.into_init_failure(),
        }
    }

    /// A short machine-readable type, used as `errorType` in JSON bodies and
    /// as the `outcome` label of metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "FunctionNotFound",
            Self::Overloaded { .. } => "TooManyRequests",
            Self::InitFailed { .. } => "InitError",
            Self::FunctionError { .. } => "FunctionError",
            Self::Timeout { .. } => "Timeout",
            Self::MemoryLimit { .. } => "MemoryLimitExceeded",
            Self::ResponseTooLarge { .. } => "ResponseTooLarge",
            Self::SandboxCrashed { .. } => "SandboxCrashed",
            Self::SandboxUnavailable { .. } => "SandboxUnavailable",
            Self::OverBudget { .. } => "MemoryBudgetExceeded",
            Self::DescriptorLimit { .. } => "DescriptorLimitReached",
            Self::ShuttingDown => "ShuttingDown",
            Self::Cancelled { .. } => "Cancelled",
        }
    }

    /// When a client should retry, for overload answers.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Overloaded { .. }
            | Self::ShuttingDown
            | Self::OverBudget { .. }
            | Self::DescriptorLimit { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_failure_text_is_unchanged() {
        let err = InvokeError::InitFailed {
            function: "f".into(),
            failure: InitFailure::new("import", "ImportError", "no module named x"),
        };
        assert_eq!(
            err.to_string(),
            "function 'f' failed to initialize (import): ImportError: no module named x"
        );
        assert_eq!(err.kind(), "InitError");
    }
}
