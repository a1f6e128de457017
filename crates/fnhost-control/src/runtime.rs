//! Lambda runtime names → fnhost runtimes. `python3.X` maps only to the
//! host's own python (the built-in host layer binds the host's /usr), so a
//! function is never silently run on another version than it asked for.

use std::path::Path;
use std::process::Command;

use crate::api_error::ApiError;

/// The runtimes this host can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtimes {
    /// `"3.11"`, or `None` when the host has no python.
    pub python: Option<String>,
}

impl Runtimes {
    /// Asks the interpreter functions will run for its version.
    pub fn detect(python: &Path) -> Self {
        let version = Command::new(python)
            .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Runtimes { python: version }
    }

    /// The Lambda names this host accepts.
    pub fn available(&self) -> Vec<String> {
        self.python.iter().map(|v| format!("python{v}")).collect()
    }

    /// The fnhost `runtime` key for a Lambda `Runtime`.
    pub fn resolve(&self, aws: &str) -> Result<&'static str, ApiError> {
        let available = self.available();
        let list = if available.is_empty() {
            "none (the host has no python3)".to_string()
        } else {
            available.join(", ")
        };
        if available.iter().any(|a| a == aws) {
            return Ok("python3");
        }
        let why = if aws.starts_with("python") {
            "that python version is not installed on this host (functions run on the host's python)"
        } else if aws.starts_with("provided") {
            "fnhost does not serve the Lambda Runtime API that custom runtimes (bootstrap) use"
        } else {
            "fnhost does not serve it"
        };
        Err(ApiError::invalid(format!(
            "The runtime parameter of {aws} is not supported: {why}. Supported runtimes: {list}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_only_the_host_version() {
        let r = Runtimes {
            python: Some("3.11".into()),
        };
        assert_eq!(r.resolve("python3.11"), Ok("python3"));
        let e = r.resolve("python3.12").unwrap_err();
        assert_eq!(e.kind, "InvalidParameterValueException");
        assert!(e.message.contains("python3.11"), "{e}");
        assert!(r.resolve("nodejs20.x").is_err());
        assert!(r
            .resolve("provided.al2")
            .unwrap_err()
            .message
            .contains("Runtime API"));
        let none = Runtimes { python: None };
        assert!(none
            .resolve("python3.11")
            .unwrap_err()
            .message
            .contains("none"));
    }

    #[test]
    fn detects_a_python_when_there_is_one() {
        let r = Runtimes::detect(Path::new("/usr/bin/python3"));
        if Path::new("/usr/bin/python3").exists() {
            let v = r.python.expect("a version");
            assert!(v.starts_with("3."), "{v}");
        }
        assert_eq!(
            Runtimes::detect(Path::new("/nonexistent/python")).python,
            None
        );
    }
}
