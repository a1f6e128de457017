//! Lambda runtime names → fnhost runtimes. `python3.X` maps only to the
//! host's own python and `nodejsN.x` only to the host's own node major
//! version (the built-in host layer binds the host's /usr), so a function
//! is never silently run on another version than it asked for.

use std::path::Path;
use std::process::Command;

use crate::api_error::ApiError;

/// The runtimes this host can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtimes {
    /// `"3.11"`, or `None` when the host has no python.
    pub python: Option<String>,
    /// node's major version (`"20"`), or `None` when the host has no node.
    pub node: Option<String>,
}

impl Runtimes {
    /// Asks the interpreters functions will run for their versions.
    pub fn detect(python: &Path, node: &Path) -> Self {
        let python = version_of(
            python,
            &["-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        );
        // `v20.20.2` → `20`.
        let node = version_of(node, &["--version"]).and_then(|v| {
            let major = v.trim_start_matches('v').split('.').next()?.to_owned();
            major.parse::<u32>().ok().map(|_| major)
        });
        Runtimes { python, node }
    }

    /// The Lambda names this host accepts.
    pub fn available(&self) -> Vec<String> {
        let python = self.python.iter().map(|v| format!("python{v}"));
        let node = self.node.iter().map(|v| format!("nodejs{v}.x"));
        python.chain(node).collect()
    }

    /// The fnhost `runtime` key for a Lambda `Runtime`.
    pub fn resolve(&self, aws: &str) -> Result<&'static str, ApiError> {
        let available = self.available();
        if available.iter().any(|a| a == aws) {
            return Ok(if aws.starts_with("nodejs") {
                "nodejs"
            } else {
                "python3"
            });
        }
        let list = if available.is_empty() {
            "none (the host has neither python3 nor node)".to_string()
        } else {
            available.join(", ")
        };
        let why = if aws.starts_with("python") {
            "that python version is not installed on this host (functions run on the host's python)"
        } else if aws.starts_with("nodejs") {
            "that node version is not installed on this host (functions run on the host's node)"
        } else if aws.starts_with("provided") {
            "fnhost does not serve the Lambda Runtime API that custom runtimes (bootstrap) use"
        } else {
            "fnhost does not serve it"
        };
        Err(ApiError::invalid(format!(
            "The runtime parameter of {aws} is not supported: {why}. Supported runtimes: {list}"
        )))
    }

    /// The Lambda name of fnhost runtime `runtime` on this host (for
    /// functions defined in the config file), if it has one.
    pub fn lambda_name(&self, runtime: &str) -> Option<String> {
        let prefix = match runtime {
            "python3" => "python",
            "nodejs" => "nodejs",
            _ => return None,
        };
        self.available().into_iter().find(|a| a.starts_with(prefix))
    }
}

/// The trimmed stdout of `program args`, when it ran and succeeded.
fn version_of(program: &Path, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_only_the_host_versions() {
        let r = Runtimes {
            python: Some("3.11".into()),
            node: Some("20".into()),
        };
        assert_eq!(r.resolve("python3.11"), Ok("python3"));
        assert_eq!(r.resolve("nodejs20.x"), Ok("nodejs"));
        let e = r.resolve("python3.12").unwrap_err();
        assert_eq!(e.kind, "InvalidParameterValueException");
        assert!(e.message.contains("python3.11, nodejs20.x"), "{e}");
        let e = r.resolve("nodejs22.x").unwrap_err();
        assert!(e.message.contains("node version is not installed"), "{e}");
        assert!(r
            .resolve("provided.al2")
            .unwrap_err()
            .message
            .contains("Runtime API"));
        assert_eq!(r.lambda_name("nodejs").as_deref(), Some("nodejs20.x"));
        assert_eq!(r.lambda_name("python3").as_deref(), Some("python3.11"));
        assert_eq!(r.lambda_name("exec"), None);
        let none = Runtimes {
            python: None,
            node: None,
        };
        assert!(none
            .resolve("python3.11")
            .unwrap_err()
            .message
            .contains("none"));
        assert!(none.resolve("nodejs20.x").is_err());
    }

    #[test]
    fn detects_the_interpreters_there_are() {
        let (python, node) = (Path::new("/usr/bin/python3"), Path::new("/usr/bin/node"));
        let r = Runtimes::detect(python, node);
        if python.exists() {
            let v = r.python.expect("a python version");
            assert!(v.starts_with("3."), "{v}");
        }
        if node.exists() {
            let v = r.node.expect("a node version");
            assert!(v.parse::<u32>().is_ok(), "{v}");
        }
        let missing = Runtimes::detect(
            Path::new("/nonexistent/python"),
            Path::new("/nonexistent/node"),
        );
        assert_eq!((missing.python, missing.node), (None, None));
    }
}
