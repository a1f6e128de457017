//! The Lambda JSON shapes (FunctionConfiguration, the bodies of
//! CreateFunction and UpdateFunctionConfiguration), their validation with
//! Lambda's constraints, and the mapping of a stored function to the keys
//! of a fnhost `[[functions]]` entry.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::api_error::ApiError;
use crate::runtime::Runtimes;

/// The ARN fnhost reports for a function (one pseudo account and region).
pub fn arn(name: &str) -> String {
    format!("arn:aws:lambda:local:000000000000:function:{name}")
}

/// One function created through the Lambda API, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    /// The Lambda spelling, e.g. `python3.11`.
    pub runtime: String,
    pub handler: String,
    pub role: String,
    pub description: String,
    pub memory_size: u32,
    pub timeout: u32,
    pub environment: BTreeMap<String, String>,
    /// Hex SHA-256 of the deployment zip (names the code directory).
    pub code_sha256: String,
    pub code_size: u64,
    pub last_modified: String,
    pub revision_id: String,
    /// `PutFunctionConcurrency` → `max_concurrency`.
    pub reserved_concurrency: Option<u32>,
    /// `PutProvisionedConcurrencyConfig` → `ready_clones`.
    pub provisioned_concurrency: Option<u32>,
}

impl FunctionRecord {
    /// A new revision id and modification time, after any change.
    pub fn touch(&mut self, now_secs: i64) {
        self.last_modified = last_modified(now_secs);
        self.revision_id = String::new();
        let digest = Sha256::digest(serde_json::to_vec(self).unwrap_or_default());
        let h = hex::encode(&digest[..16]);
        self.revision_id = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
    }

    /// `FunctionConfiguration`.
    pub fn configuration(&self) -> Value {
        let code_sha256 = hex::decode(&self.code_sha256)
            .map(|b| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b))
            .unwrap_or_default();
        json!({
            "FunctionName": self.name,
            "FunctionArn": arn(&self.name),
            "Runtime": self.runtime,
            "Role": self.role,
            "Handler": self.handler,
            "CodeSize": self.code_size,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "LastModified": self.last_modified,
            "CodeSha256": code_sha256,
            "Version": "$LATEST",
            "Environment": { "Variables": self.environment },
            "RevisionId": self.revision_id,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")],
            "EphemeralStorage": { "Size": 512 },
        })
    }

    /// The keys of the fnhost `[[functions]]` entry serving it.
    pub fn config_entry(&self, runtime: &str, code_dir: &Path) -> Value {
        let mut entry = json!({
            "runtime": runtime,
            "code": code_dir.display().to_string(),
            "handler": self.handler,
            "memory_mb": self.memory_size,
            "timeout_ms": u64::from(self.timeout) * 1000,
        });
        if !self.environment.is_empty() {
            entry["env"] = json!(self.environment);
        }
        if let Some(n) = self.reserved_concurrency {
            entry["max_concurrency"] = json!(n);
        }
        if let Some(n) = self.provisioned_concurrency {
            // Warm capacity: one zygote and `n` clones ready to run.
            entry["zygotes"] = json!(1);
            entry["ready_clones"] = json!(n);
            entry["prewarm"] = json!(true);
        }
        entry
    }
}

/// `2026-12-02T19:30:00.000+0000`, Lambda's format.
pub fn last_modified(now_secs: i64) -> String {
    let d = crate::sigv4::format_amz_date(now_secs);
    format!(
        "{}-{}-{}T{}:{}:{}.000+0000",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    )
}

/// Fields fnhost refuses rather than ignores: accepting them would mislead.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "Layers",
        "layers are not supported: put dependencies into the zip",
    ),
    ("VpcConfig", "VPC configuration is not supported"),
    ("DeadLetterConfig", "dead-letter queues are not supported"),
    ("KMSKeyArn", "KMS keys are not supported"),
    (
        "ImageConfig",
        "container images are not supported: deploy a zip",
    ),
    ("FileSystemConfigs", "file systems are not supported"),
    ("CodeSigningConfigArn", "code signing is not supported"),
    ("SnapStart", "SnapStart is not supported"),
];

/// What CreateFunction and UpdateFunctionConfiguration may set.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConfigChange {
    pub runtime: Option<String>,
    pub handler: Option<String>,
    pub role: Option<String>,
    pub description: Option<String>,
    pub memory_size: Option<u32>,
    pub timeout: Option<u32>,
    pub environment: Option<BTreeMap<String, String>>,
}

fn constraint(value: impl std::fmt::Display, field: &str, rule: &str) -> ApiError {
    ApiError::validation(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {rule}"
    ))
}

fn string(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::invalid(format!(
            "{key} must be a string, got {other}"
        ))),
    }
}

fn int_in(
    body: &Map<String, Value>,
    key: &str,
    field: &str,
    min: i64,
    max: i64,
) -> Result<Option<u32>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = v
                .as_i64()
                .ok_or_else(|| ApiError::invalid(format!("{key} must be an integer, got {v}")))?;
            if n < min {
                return Err(constraint(
                    n,
                    field,
                    &format!("Member must have value greater than or equal to {min}"),
                ));
            }
            if n > max {
                return Err(constraint(
                    n,
                    field,
                    &format!("Member must have value less than or equal to {max}"),
                ));
            }
            Ok(Some(n as u32))
        }
    }
}

impl ConfigChange {
    /// Parses and checks the configuration fields of a request body.
    pub fn parse(body: &Map<String, Value>, runtimes: &Runtimes) -> Result<Self, ApiError> {
        for (key, why) in UNSUPPORTED {
            let set = match body.get(*key) {
                None | Some(Value::Null) => false,
                Some(Value::Array(a)) => !a.is_empty(),
                Some(Value::Object(o)) => {
                    !o.is_empty()
                        && !o
                            .values()
                            .all(|v| v.is_null() || v.as_array().is_some_and(|a| a.is_empty()))
                }
                Some(Value::String(s)) => !s.is_empty(),
                Some(_) => true,
            };
            if set {
                return Err(ApiError::invalid(format!("{key}: {why} by fnhost")));
            }
        }
        let runtime = string(body, "Runtime")?;
        if let Some(r) = &runtime {
            runtimes.resolve(r)?;
        }
        let handler = string(body, "Handler")?;
        if let Some(h) = &handler {
            check_handler(h)?;
        }
        let description = string(body, "Description")?;
        if let Some(d) = &description {
            if d.chars().count() > 256 {
                return Err(constraint(
                    "…",
                    "description",
                    "Member must have length less than or equal to 256",
                ));
            }
        }
        let environment = match body.get("Environment") {
            None | Some(Value::Null) => None,
            Some(env) => {
                let vars = env
                    .get("Variables")
                    .cloned()
                    .unwrap_or(Value::Object(Map::new()));
                let vars: BTreeMap<String, String> =
                    serde_json::from_value(vars).map_err(|_| {
                        ApiError::invalid(
                            "Environment.Variables must be an object of string values",
                        )
                    })?;
                for key in vars.keys() {
                    check_env_key(key)?;
                }
                Some(vars)
            }
        };
        Ok(ConfigChange {
            runtime,
            handler,
            role: string(body, "Role")?,
            description,
            memory_size: int_in(body, "MemorySize", "memorySize", 128, 10_240)?,
            timeout: int_in(body, "Timeout", "timeout", 1, 900)?,
            environment,
        })
    }

    pub fn apply(&self, record: &mut FunctionRecord) {
        let c = self.clone();
        if let Some(v) = c.runtime {
            record.runtime = v;
        }
        if let Some(v) = c.handler {
            record.handler = v;
        }
        if let Some(v) = c.role {
            record.role = v;
        }
        if let Some(v) = c.description {
            record.description = v;
        }
        if let Some(v) = c.memory_size {
            record.memory_size = v;
        }
        if let Some(v) = c.timeout {
            record.timeout = v;
        }
        if let Some(v) = c.environment {
            record.environment = v;
        }
    }
}

/// Lambda's function-name rule, then fnhost's stricter one (names are URL
/// path segments and cgroup names: lowercase).
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let lambda_ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !lambda_ok {
        return Err(constraint(
            name,
            "functionName",
            "Member must satisfy regular expression pattern: [a-zA-Z0-9-_]{1,64}",
        ));
    }
    let fnhost_ok = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with(['-', '_']);
    if !fnhost_ok {
        return Err(ApiError::invalid(format!(
            "function name {name:?} is not accepted by fnhost: use 1 to 63 characters from a-z 0-9 - _ starting with a letter or digit (lowercase: names are URL path segments)"
        )));
    }
    Ok(())
}

fn check_handler(handler: &str) -> Result<(), ApiError> {
    if handler.is_empty() || handler.len() > 128 || handler.chars().any(char::is_whitespace) {
        return Err(constraint(
            handler,
            "handler",
            "Member must satisfy regular expression pattern: [^\\s]+ and have length at most 128",
        ));
    }
    match handler.rsplit_once('.') {
        Some((module, func)) if !module.is_empty() && !func.is_empty() => Ok(()),
        _ => Err(ApiError::invalid(format!(
            "handler {handler:?} must be module.function, e.g. lambda_function.lambda_handler"
        ))),
    }
}

fn check_env_key(key: &str) -> Result<(), ApiError> {
    let mut chars = key.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(constraint(
            key,
            "environment.variables",
            "Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+",
        ));
    }
    const RESERVED: &[&str] = &[
        "_HANDLER",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    ];
    if RESERVED.contains(&key) {
        return Err(ApiError::invalid(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {key}"
        )));
    }
    Ok(())
}

/// Checks that the handler's module is in the code for fnhost runtime
/// `runtime` (Lambda would fail every invocation with
/// `Runtime.ImportModuleError`; fnhost says so at once).
pub fn check_handler_module(runtime: &str, handler: &str, code: &Path) -> Result<(), ApiError> {
    if runtime == "nodejs" {
        return check_node_module(handler, code);
    }
    let module = handler.rsplit_once('.').map(|(m, _)| m).unwrap_or(handler);
    let rel = module.replace('.', "/");
    let found = code.join(format!("{rel}.py")).is_file()
        || code.join(&rel).join("__init__.py").is_file()
        || code.join(&rel).is_dir();
    if found {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Runtime.ImportModuleError: Unable to import module '{module}': the code has no {rel}.py (handler {handler:?}); check the handler or the zip's layout (files at the zip's root)"
        )))
    }
}

/// A node handler is `path/file.function.path`: the file is what comes
/// before the first dot of the last path segment, loaded as file.js,
/// file.mjs, file.cjs, or a directory (its package.json or index.js).
fn check_node_module(handler: &str, code: &Path) -> Result<(), ApiError> {
    let file = fnhost_config::split_node_handler(handler).map_or(handler, |(file, _)| file);
    let found = ["js", "mjs", "cjs"]
        .iter()
        .any(|ext| code.join(format!("{file}.{ext}")).is_file())
        || code.join(file).is_dir();
    if found {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Runtime.ImportModuleError: Error: Cannot find module '{file}': the code has no {file}.js, {file}.mjs or {file}.cjs (handler {handler:?}); check the handler or the zip's layout (files at the zip's root)"
        )))
    }
}

#[cfg(test)]
mod tests;
