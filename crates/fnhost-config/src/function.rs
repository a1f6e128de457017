//! Validation of `[defaults]` and each `[[functions]]` entry: identity (name,
//! runtime, handler, code directory), limits, pool sizing, network, interpreter
//! and environment, each falling back to `[defaults]`, then to the built-ins.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::model::{
    FunctionSpec, HibernateMode, Limits, NetworkMode, PoolSettings, Runtime, DEFAULT_NODE,
    DEFAULT_PYTHON,
};
use crate::schema::{RawFunction, RawOverrides};
use crate::span::KeyPath;
use crate::validate::{bounded, invalid, spellings, to_u32, to_u64, Invalid};

/// The overridable per-function settings, as resolved so far.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    limits: Limits,
    pool: PoolSettings,
    network: NetworkMode,
    python: PathBuf,
    node: PathBuf,
    seccomp: String,
    env: BTreeMap<String, String>,
    detailed_metrics: bool,
}

impl Settings {
    pub(crate) fn builtin() -> Self {
        Self {
            limits: Limits::default(),
            pool: PoolSettings::default(),
            network: NetworkMode::default(),
            python: PathBuf::from(DEFAULT_PYTHON),
            node: PathBuf::from(DEFAULT_NODE),
            seccomp: "default".to_owned(),
            env: BTreeMap::new(),
            detailed_metrics: false,
        }
    }
}

/// `base` with the keys set in `raw` replaced; `env` merges variable by variable.
pub(crate) fn overrides(
    raw: &RawOverrides,
    path: &KeyPath,
    base: &Settings,
) -> Result<Settings, Invalid> {
    let mut s = base.clone();
    if let Some(v) = raw.memory_mb {
        s.limits.memory_mb = to_u64(bounded(v, &path.key("memory_mb"), 16, 1_048_576, " MiB")?);
    }
    if let Some(cpu) = raw.cpu {
        if !(cpu.is_finite() && cpu > 0.0 && cpu <= 1024.0) {
            return Err(invalid(
                path.key("cpu"),
                format!("must be a number of CPUs greater than 0 and at most 1024 (e.g. 0.5 or 2), got {cpu}"),
            ));
        }
        s.limits.cpu = cpu;
    }
    if let Some(v) = raw.pids {
        s.limits.pids = to_u64(bounded(v, &path.key("pids"), 1, 4_194_304, "")?);
    }
    if let Some(v) = raw.timeout_ms {
        s.limits.timeout_ms = to_u64(bounded(v, &path.key("timeout_ms"), 1, 900_000, " ms")?);
    }
    if let Some(v) = raw.writable_layer_mb {
        s.limits.writable_layer_mb = to_u64(bounded(
            v,
            &path.key("writable_layer_mb"),
            1,
            1_048_576,
            " MiB",
        )?);
    }
    if let Some(network) = &raw.network {
        s.network = NetworkMode::from_toml(network).ok_or_else(|| {
            invalid(
                path.key("network"),
                format!(
                    "unsupported network mode {network:?}; supported: {}",
                    spellings(NetworkMode::ALL.iter().map(|m| m.as_str()))
                ),
            )
        })?;
    }
    if let Some(v) = raw.zygotes {
        s.pool.zygotes = to_u32(bounded(v, &path.key("zygotes"), 0, 64, "")?);
    }
    if let Some(v) = raw.ready_clones {
        s.pool.ready_clones = to_u32(bounded(v, &path.key("ready_clones"), 0, 1024, "")?);
    }
    if let Some(v) = raw.max_concurrency {
        s.pool.max_concurrency = to_u32(bounded(
            v,
            &path.key("max_concurrency"),
            1,
            i64::from(u32::MAX),
            "",
        )?);
    }
    if let Some(v) = raw.queue_timeout_ms {
        s.pool.queue_timeout_ms = to_u64(bounded(
            v,
            &path.key("queue_timeout_ms"),
            0,
            600_000,
            " ms",
        )?);
    }
    if let Some(v) = raw.idle_ttl_ms {
        s.pool.idle_ttl_ms = to_u64(bounded(v, &path.key("idle_ttl_ms"), 0, 86_400_000, " ms")?);
    }
    if let Some(v) = raw.max_instances {
        s.pool.max_instances = to_u32(bounded(v, &path.key("max_instances"), 1, 64, "")?);
    }
    if s.pool.max_instances < s.pool.zygotes {
        let key = if raw.max_instances.is_some() {
            "max_instances"
        } else {
            "zygotes"
        };
        return Err(invalid(
            path.key(key),
            format!(
                "max_instances ({}) must be at least zygotes ({}): raise max_instances or lower zygotes",
                s.pool.max_instances, s.pool.zygotes
            ),
        ));
    }
    if let Some(v) = raw.prewarm {
        s.pool.prewarm = v;
    }
    if let Some(v) = raw.burst {
        s.pool.burst = to_u32(bounded(v, &path.key("burst"), 1, 256, "")?);
    }
    if let Some(v) = raw.hibernate_after_ms {
        s.pool.hibernate_after_ms = to_u64(bounded(
            v,
            &path.key("hibernate_after_ms"),
            0,
            86_400_000,
            " ms",
        )?);
    }
    if let Some(mode) = &raw.hibernate_mode {
        s.pool.hibernate_mode = HibernateMode::from_toml(mode).ok_or_else(|| {
            invalid(
                path.key("hibernate_mode"),
                format!(
                    "unsupported hibernate mode {mode:?}; supported: {}",
                    spellings(HibernateMode::ALL.iter().map(|m| m.as_str()))
                ),
            )
        })?;
    }
    if let Some(v) = raw.hibernate_prefetch {
        s.pool.hibernate_prefetch = v;
    }
    if let Some(v) = raw.hibernate_ready_clones {
        s.pool.hibernate_ready_clones = to_u32(bounded(
            v,
            &path.key("hibernate_ready_clones"),
            0,
            1024,
            "",
        )?);
    }
    if let Some(v) = raw.detailed_metrics {
        s.detailed_metrics = v;
    }
    if let Some(v) = raw.hibernate_share_pages {
        s.pool.hibernate_share_pages = v;
    }
    if let Some(python) = &raw.python {
        s.python = interpreter(python, &path.key("python"), DEFAULT_PYTHON)?;
    }
    if let Some(node) = &raw.node {
        s.node = interpreter(node, &path.key("node"), DEFAULT_NODE)?;
    }
    if let Some(seccomp) = &raw.seccomp {
        let valid = seccomp == "default"
            || seccomp == "unconfined"
            || (seccomp.starts_with('/') && !seccomp.contains('\0'));
        if !valid {
            return Err(invalid(
                path.key("seccomp"),
                format!("{seccomp:?}: use \"default\", \"unconfined\" or the absolute path of a profile inside the sandbox root"),
            ));
        }
        s.seccomp = seccomp.clone();
    }
    if let Some(env) = &raw.env {
        for (name, value) in env {
            check_env(name, value, &path.key("env").key(name))?;
            s.env.insert(name.clone(), value.clone());
        }
    }
    Ok(s)
}

/// An interpreter's path inside the sandbox root (`python`, `node`).
fn interpreter(value: &str, key: &KeyPath, example: &str) -> Result<PathBuf, Invalid> {
    if !value.starts_with('/') || value.contains('\0') {
        return Err(invalid(
            key.clone(),
            format!("{value:?} is not an absolute path; give the interpreter's path inside the sandbox root, e.g. \"{example}\""),
        ));
    }
    Ok(PathBuf::from(value))
}

pub(crate) fn function(
    raw: &RawFunction,
    path: &KeyPath,
    defaults: &Settings,
    base_dir: &Path,
) -> Result<FunctionSpec, Invalid> {
    let required = |key: &str, value: &Option<String>| {
        value.clone().ok_or_else(|| {
            invalid(path.key(key), format!("missing required key `{key}`; every [[functions]] entry needs name, runtime and code, plus handler (python3, nodejs) or command (exec, rust)"))
        })
    };
    let name = required("name", &raw.name)?;
    check_name(&name, &path.key("name"))?;
    let runtime_text = required("runtime", &raw.runtime)?;
    let runtime = Runtime::from_toml(&runtime_text).ok_or_else(|| {
        invalid(
            path.key("runtime"),
            format!(
                "unsupported runtime {runtime_text:?}; supported: {}",
                spellings(Runtime::ALL.iter().map(|r| r.as_str()))
            ),
        )
    })?;
    let code = code_dir(&required("code", &raw.code)?, &path.key("code"), base_dir)?;
    let (handler, command) = entry_point(raw, runtime, path)?;
    let image = raw
        .image
        .as_deref()
        .map(|i| check_image(i, &path.key("image")))
        .transpose()?;
    let settings = overrides(&raw.overrides(), path, defaults)?;
    Ok(FunctionSpec {
        name,
        runtime,
        code,
        handler,
        command,
        image,
        python: settings.python,
        node: settings.node,
        seccomp: settings.seccomp,
        limits: settings.limits,
        pool: settings.pool,
        network: settings.network,
        env: settings.env,
        detailed_metrics: settings.detailed_metrics,
    })
}

/// `handler` (python3) or `command` (exec, rust): required for its runtime,
/// rejected for the others.
fn entry_point(
    raw: &RawFunction,
    runtime: Runtime,
    path: &KeyPath,
) -> Result<(String, Vec<String>), Invalid> {
    let rt = runtime.as_str();
    match runtime {
        Runtime::Python3 => {
            if raw.command.is_some() {
                return Err(invalid(
                    path.key("command"),
                    "`command` is for exec and rust functions; a python3 function names its entry point with handler = \"module.function\"",
                ));
            }
            let handler = raw.handler.clone().ok_or_else(|| {
                invalid(path.key("handler"), "missing required key `handler`; a python3 function needs handler = \"module.function\" (e.g. \"handler.handler\")")
            })?;
            check_python_handler(&handler, &path.key("handler"))?;
            Ok((handler, Vec::new()))
        }
        Runtime::Nodejs => {
            if raw.command.is_some() {
                return Err(invalid(
                    path.key("command"),
                    "`command` is for exec and rust functions; a nodejs function names its entry point with handler = \"file.function\"",
                ));
            }
            let handler = raw.handler.clone().ok_or_else(|| {
                invalid(path.key("handler"), "missing required key `handler`; a nodejs function needs handler = \"file.function\" (e.g. \"index.handler\" for exports.handler in index.js)")
            })?;
            check_node_handler(&handler, &path.key("handler"))?;
            Ok((handler, Vec::new()))
        }
        Runtime::Exec | Runtime::Rust => {
            if raw.handler.is_some() {
                return Err(invalid(
                    path.key("handler"),
                    format!("`handler` is for python3 and nodejs functions; a {rt} function names its program with command = [\"/var/task/<program>\", ...]"),
                ));
            }
            let command = raw.command.clone().ok_or_else(|| {
                invalid(path.key("command"), format!("missing required key `command`; a {rt} function needs command = [\"/var/task/<program>\", ...] (its path inside the sandbox; code is mounted at /var/task)"))
            })?;
            check_command(&command, &path.key("command"))?;
            Ok((String::new(), command))
        }
    }
}

fn check_command(command: &[String], path: &KeyPath) -> Result<(), Invalid> {
    let Some(program) = command.first() else {
        return Err(invalid(path.clone(), "must not be empty; give the program's path inside the sandbox first, e.g. [\"/var/task/fn\"]"));
    };
    if !program.starts_with('/') {
        return Err(invalid(
            path.clone(),
            format!("{program:?} is not an absolute path; give the program's path inside the sandbox (code is mounted at /var/task), e.g. \"/var/task/{}\"", program.trim_start_matches("./")),
        ));
    }
    if command.iter().any(|arg| arg.contains('\0')) {
        return Err(invalid(
            path.clone(),
            "arguments must not contain NUL characters",
        ));
    }
    Ok(())
}

fn check_name(name: &str, path: &KeyPath) -> Result<(), Invalid> {
    let bytes = name.as_bytes();
    let ok = (1..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(path.clone(), format!("{name:?} is not a valid function name; use 1 to 63 characters from a-z 0-9 _ -, starting with a letter or digit")))
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_python_handler(handler: &str, path: &KeyPath) -> Result<(), Invalid> {
    let parts: Vec<&str> = handler.split('.').collect();
    if parts.len() >= 2 && parts.iter().all(|p| is_identifier(p)) {
        Ok(())
    } else {
        Err(invalid(path.clone(), format!("{handler:?} is not a python handler; write module.function (e.g. \"handler.handler\" or \"pkg.mod.fn\") using python identifiers")))
    }
}

/// Lambda's Node spelling: the file (relative to the code directory, `/`
/// segments allowed, no extension) up to the first `.` after its last `/`,
/// then the exported function, possibly nested (`index.api.get`).
/// A nodejs handler `path/file.export.path` split into its file (relative
/// to the code directory, without extension) and the export path: the file
/// ends at the first dot of the last path segment.
pub fn split_node_handler(handler: &str) -> Option<(&str, &str)> {
    let dir_end = handler.rfind('/').map_or(0, |i| i + 1);
    let at = dir_end + handler[dir_end..].find('.')?;
    Some((&handler[..at], &handler[at + 1..]))
}

fn check_node_handler(handler: &str, path: &KeyPath) -> Result<(), Invalid> {
    let ok = split_node_handler(handler).is_some_and(|(file, function)| {
        !file.starts_with('/')
            && file
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('\0'))
            && function.split('.').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
            })
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(path.clone(), format!("{handler:?} is not a nodejs handler; write file.function relative to the code directory, without the file's extension (e.g. \"index.handler\" or \"src/app.handler\")")))
    }
}

fn check_env(name: &str, value: &str, path: &KeyPath) -> Result<(), Invalid> {
    if !is_identifier(name) {
        return Err(invalid(
            path.clone(),
            "environment variable names must be letters, digits and _, not starting with a digit",
        ));
    }
    if value.contains('\0') {
        return Err(invalid(
            path.clone(),
            "environment variable values must not contain NUL characters",
        ));
    }
    if name.starts_with("FNHOST_") {
        return Err(invalid(
            path.clone(),
            "FNHOST_* variables are reserved for fnhost's own runtime settings; use the config keys instead",
        ));
    }
    Ok(())
}

/// An image reference, `name[:tag]` as `fnhost image import --name` takes
/// it (the same grammar as fnhost-layers' `ImageRef`): slash-separated
/// lowercase components of letters and digits joined by single `.`, `_`,
/// `-` (or `__`), and a tag of letters, digits, `_`, `.`, `-`.
fn check_image(image: &str, path: &KeyPath) -> Result<String, Invalid> {
    let (name, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter()
                .all(|&x| alnum(x) || matches!(x, b'.' | b'_' | b'-'))
            && !b
                .windows(2)
                .any(|w| !alnum(w[0]) && !alnum(w[1]) && w != b"__")
    };
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if name.len() <= 255 && name.split('/').all(component_ok) && tag_ok {
        Ok(image.to_owned())
    } else {
        Err(invalid(
            path.clone(),
            format!("{image:?} is not an image reference; write \"name:tag\" as given to `fnhost image import --name` (lowercase name, e.g. \"python:3.11\" or \"team/app:v2\")"),
        ))
    }
}

/// `code` resolved against `base_dir`, canonicalized, and checked to be a directory.
fn code_dir(code: &str, path: &KeyPath, base_dir: &Path) -> Result<PathBuf, Invalid> {
    if code.is_empty() {
        return Err(invalid(
            path.clone(),
            "must not be empty; give the directory holding the function's code",
        ));
    }
    let resolved = base_dir.join(code);
    let canonical = resolved.canonicalize().map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::NotFound => "does not exist".to_owned(),
            _ => format!("cannot be accessed ({e})"),
        };
        invalid(
            path.clone(),
            format!(
                "code directory {} {why}; relative paths resolve against {}",
                resolved.display(),
                base_dir.display()
            ),
        )
    })?;
    if !canonical.is_dir() {
        return Err(invalid(
            path.clone(),
            format!(
                "{} is not a directory; point code at the directory holding the handler module",
                resolved.display()
            ),
        ));
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests;
