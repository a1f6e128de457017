//! Validation of `[defaults]` and each `[[functions]]` entry: identity (name,
//! runtime, handler, code directory), limits, pool sizing, network, interpreter
//! and environment, each falling back to `[defaults]`, then to the built-ins.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::model::{
    FunctionSpec, HibernateMode, Limits, NetworkMode, PoolSettings, Runtime, DEFAULT_PYTHON,
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
    seccomp: String,
    env: BTreeMap<String, String>,
}

impl Settings {
    pub(crate) fn builtin() -> Self {
        Self {
            limits: Limits::default(),
            pool: PoolSettings::default(),
            network: NetworkMode::default(),
            python: PathBuf::from(DEFAULT_PYTHON),
            seccomp: "default".to_owned(),
            env: BTreeMap::new(),
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
    if let Some(python) = &raw.python {
        if !python.starts_with('/') || python.contains('\0') {
            return Err(invalid(
                path.key("python"),
                format!("{python:?} is not an absolute path; give the interpreter's path inside the sandbox root, e.g. \"{DEFAULT_PYTHON}\""),
            ));
        }
        s.python = PathBuf::from(python);
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
        seccomp: settings.seccomp,
        limits: settings.limits,
        pool: settings.pool,
        network: settings.network,
        env: settings.env,
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
fn check_node_handler(handler: &str, path: &KeyPath) -> Result<(), Invalid> {
    let dir_end = handler.rfind('/').map_or(0, |i| i + 1);
    let split = handler[dir_end..].find('.').map(|i| dir_end + i);
    let ok = split.is_some_and(|at| {
        let (file, function) = (&handler[..at], &handler[at + 1..]);
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
mod tests {
    use crate::validate::test_support::{assert_invalid, base, parse, FUNCTION};
    use crate::{ConfigError, NetworkMode};
    use std::path::Path;

    #[test]
    fn nodejs_handlers_use_lambdas_file_dot_function_spelling() {
        let dir = base();
        let node = |handler: &str| {
            format!("[[functions]]\nname = \"n\"\nruntime = \"nodejs\"\ncode = \"fn\"\nhandler = \"{handler}\"\n")
        };
        for good in [
            "index.handler",
            "src/app.handler",
            "lib/v1.2/api.routes.get",
            "a-b.$h",
        ] {
            let config = parse(&node(good), dir.path()).expect(good);
            assert_eq!(config.functions[0].runtime, crate::Runtime::Nodejs);
            assert_eq!(config.functions[0].handler, good);
        }
        for bad in [
            "index",
            "src/index",
            "/abs/index.handler",
            "../up.handler",
            "a//b.h",
            "index.",
            "index.a-b",
        ] {
            assert_invalid(
                &node(bad),
                5,
                "functions[0].handler",
                "is not a nodejs handler",
            );
        }
        assert_invalid(
            "[[functions]]\nname = \"n\"\nruntime = \"nodejs\"\ncode = \"fn\"\n",
            1,
            "functions[0].handler",
            "a nodejs function needs handler = \"file.function\"",
        );
    }

    #[test]
    fn defaults_apply_and_functions_override_them() {
        let dir = base();
        let text = format!(
            "[defaults]\nmemory_mb = 256\ncpu = 2\nzygotes = 0\npython = \"/opt/py/bin/python3\"\n\
             env = {{ A = \"1\", B = \"2\" }}\n\
             {FUNCTION}memory_mb = 512\nready_clones = 0\nenv = {{ B = \"3\" }}\n\
             [[functions]]\nname = \"g\"\nruntime = \"python3\"\ncode = \"fn\"\nhandler = \"pkg.mod.fn\"\n"
        );
        let config = parse(&text, dir.path()).expect("valid config");
        let f = config.function("f").expect("f");
        let g = config.function("g").expect("g");
        assert_eq!((f.limits.memory_mb, g.limits.memory_mb), (512, 256));
        assert_eq!((f.limits.cpu, g.limits.cpu), (2.0, 2.0));
        assert_eq!(
            (f.pool.zygotes, f.pool.ready_clones, g.pool.ready_clones),
            (0, 0, 2)
        );
        assert_eq!(f.limits.timeout_ms, 3000);
        assert_eq!(f.python, Path::new("/opt/py/bin/python3"));
        assert_eq!(f.network, NetworkMode::None);
        let env = |spec: &crate::FunctionSpec| {
            spec.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(env(f), "A=1,B=3");
        assert_eq!(env(g), "A=1,B=2");
        let code = dir.path().join("fn").canonicalize().expect("canonical");
        assert_eq!(f.code, code);
    }

    #[test]
    fn hibernation_keys_default_override_and_validate() {
        let dir = base();
        let text = format!(
            "[defaults]\nhibernate_after_ms = 60000\n\
             {FUNCTION}hibernate_mode = \"reclaim\"\nhibernate_prefetch = true\n\
             [[functions]]\nname = \"g\"\nruntime = \"python3\"\ncode = \"fn\"\nhandler = \"m.h\"\n"
        );
        let config = parse(&text, dir.path()).expect("valid config");
        let (f, g) = (
            config.function("f").expect("f"),
            config.function("g").expect("g"),
        );
        assert_eq!(
            (f.pool.hibernate_after_ms, g.pool.hibernate_after_ms),
            (60000, 60000)
        );
        assert_eq!(f.pool.hibernate_mode, crate::HibernateMode::Reclaim);
        assert_eq!(g.pool.hibernate_mode, crate::HibernateMode::Snapshot);
        assert_eq!(
            (f.pool.hibernate_prefetch, g.pool.hibernate_prefetch),
            (true, false)
        );
        let plain = parse(FUNCTION, dir.path()).expect("valid config");
        assert_eq!(plain.function("f").expect("f").pool.hibernate_after_ms, 0);
        assert_invalid(
            &format!("{FUNCTION}hibernate_mode = \"swap\"\n"),
            6,
            "functions[0].hibernate_mode",
            "supported: \"snapshot\", \"reclaim\"",
        );
        assert_invalid(
            &format!("{FUNCTION}hibernate_after_ms = -1\n"),
            6,
            "functions[0].hibernate_after_ms",
            "between 0 and 86400000 ms",
        );
    }

    #[test]
    fn limits_are_range_checked() {
        let cases = [
            ("memory_mb = 15", "memory_mb", "between 16 and 1048576 MiB"),
            ("memory_mb = 1048577", "memory_mb", "got 1048577"),
            ("cpu = 0", "cpu", "greater than 0"),
            ("cpu = 1024.5", "cpu", "at most 1024"),
            ("cpu = nan", "cpu", "got NaN"),
            ("cpu = inf", "cpu", "got inf"),
            ("pids = 0", "pids", "between 1 and 4194304"),
            (
                "timeout_ms = 900001",
                "timeout_ms",
                "between 1 and 900000 ms",
            ),
            (
                "writable_layer_mb = 0",
                "writable_layer_mb",
                "between 1 and 1048576 MiB",
            ),
            ("max_concurrency = 0", "max_concurrency", "at least 1"),
            (
                "queue_timeout_ms = 600001",
                "queue_timeout_ms",
                "between 0 and 600000",
            ),
            ("ready_clones = 1025", "ready_clones", "between 0 and 1024"),
            ("zygotes = 65", "zygotes", "between 0 and 64"),
            (
                "zygotes = 5",
                "zygotes",
                "max_instances (4) must be at least zygotes (5)",
            ),
            ("max_instances = 0", "max_instances", "between 1 and 64"),
            ("zygotes = -1", "zygotes", "got -1"),
            (
                "network = \"host\"",
                "network",
                "supported: \"none\", \"shared-loopback\"",
            ),
            ("python = \"python3\"", "python", "absolute path"),
            ("env = { \"A B\" = \"v\" }", "env.\"A B\"", "variable names"),
            (
                "env = { FNHOST_SECCOMP = \"unconfined\" }",
                "env.FNHOST_SECCOMP",
                "reserved",
            ),
            ("seccomp = \"lax\"", "seccomp", "\"unconfined\""),
            (
                "env = { 1X = \"v\" }",
                "env.1X",
                "not starting with a digit",
            ),
        ];
        for (line, key, needle) in cases {
            // In a function: line 6, right after the four required keys.
            assert_invalid(
                &format!("{FUNCTION}{line}\n"),
                6,
                &format!("functions[0].{key}"),
                needle,
            );
            // In [defaults], even with no function to apply them to.
            assert_invalid(
                &format!("[defaults]\n\n{line}\n"),
                3,
                &format!("defaults.{key}"),
                needle,
            );
        }
    }

    #[test]
    fn function_identity_is_checked() {
        let with = |key: &str, value: &str| {
            FUNCTION.replace(&format!("{key} = "), &format!("{key} = {value} #"))
        };
        assert_invalid(
            &with("name", "\"Hello\""),
            2,
            "functions[0].name",
            "a-z 0-9 _ -",
        );
        assert_invalid(
            &with("name", "\"-x\""),
            2,
            "functions[0].name",
            "starting with a letter or digit",
        );
        assert_invalid(
            &with("name", &format!("\"{}\"", "a".repeat(64))),
            2,
            "functions[0].name",
            "1 to 63",
        );
        assert_invalid(
            &with("runtime", "\"node18\""),
            3,
            "functions[0].runtime",
            "supported: \"python3\", \"exec\", \"rust\", \"nodejs\"",
        );
        assert_invalid(
            &with("handler", "\"handler\""),
            5,
            "functions[0].handler",
            "module.function",
        );
        assert_invalid(
            &with("handler", "\"a..b\""),
            5,
            "functions[0].handler",
            "module.function",
        );
        assert_invalid(
            &with("handler", "\"1a.b\""),
            5,
            "functions[0].handler",
            "identifiers",
        );
    }

    #[test]
    fn exec_and_rust_functions_take_a_command() {
        let dir = base();
        for runtime in ["exec", "rust"] {
            let text = format!(
                "[[functions]]\nname = \"f\"\nruntime = \"{runtime}\"\ncode = \"fn\"\ncommand = [\"/var/task/fn\", \"-v\"]\n"
            );
            let config = parse(&text, dir.path()).expect("valid config");
            let f = config.function("f").expect("f");
            assert_eq!(f.runtime.as_str(), runtime);
            assert_eq!(
                f.command,
                vec!["/var/task/fn".to_string(), "-v".to_string()]
            );
            assert_eq!(f.handler, "");
        }
        let python = parse(FUNCTION, dir.path()).expect("valid config");
        assert!(python.functions[0].command.is_empty());
    }

    #[test]
    fn image_is_an_optional_reference() {
        let dir = base();
        let config = parse(FUNCTION, dir.path()).expect("valid");
        assert_eq!(config.functions[0].image, None);
        for good in ["pyimg:1", "team/app", "python:3.11-slim", "a__b.c-d/e:V_1"] {
            let config = parse(&format!("{FUNCTION}image = \"{good}\"\n"), dir.path()).expect(good);
            assert_eq!(config.functions[0].image.as_deref(), Some(good));
        }
        for bad in ["", "Py:1", "../x:1", "a//b", "a:", "a:-x", "a b:1", "a:b/c"] {
            assert_invalid(
                &format!("{FUNCTION}image = \"{bad}\"\n"),
                6,
                "functions[0].image",
                "is not an image reference",
            );
        }
    }

    #[test]
    fn command_and_handler_belong_to_their_runtimes() {
        let exec = |line: &str| {
            format!("[[functions]]\nname = \"f\"\nruntime = \"exec\"\ncode = \"fn\"\n{line}\n")
        };
        assert_invalid(
            &exec(""),
            1,
            "functions[0].command",
            "missing required key `command`",
        );
        assert_invalid(
            &exec("command = [\"/var/task/fn\"]\nhandler = \"m.h\""),
            6,
            "functions[0].handler",
            "`handler` is for python3 and nodejs",
        );
        assert_invalid(
            &exec("command = []"),
            5,
            "functions[0].command",
            "must not be empty",
        );
        assert_invalid(
            &exec("command = [\"./fn\"]"),
            5,
            "functions[0].command",
            "\"/var/task/fn\"",
        );
        assert_invalid(
            &exec("command = \"/var/task/fn\""),
            5,
            "functions[0].command",
            "",
        );
        assert_invalid(
            &FUNCTION.replace("rust", "x").replace("python3", "rust"),
            5,
            "functions[0].handler",
            "a rust function names its program with command",
        );
        assert_invalid(
            &format!("{FUNCTION}command = [\"/var/task/fn\"]\n"),
            6,
            "functions[0].command",
            "`command` is for exec and rust functions",
        );
        let no_handler = FUNCTION.replace("handler = \"m.h\"\n", "");
        assert_invalid(
            &no_handler,
            1,
            "functions[0].handler",
            "missing required key `handler`",
        );
    }

    #[test]
    fn required_keys_point_at_the_function_header() {
        let text = format!(
            "{FUNCTION}\n[[functions]]\nname = \"g\"\nruntime = \"python3\"\nhandler = \"m.h\"\n"
        );
        assert_invalid(&text, 7, "functions[1].code", "missing required key `code`");
        assert_invalid(
            "\n[[functions]]\n",
            2,
            "functions[0].name",
            "missing required key `name`",
        );
    }

    #[test]
    fn code_must_be_an_existing_directory() {
        let dir = base();
        let missing = dir.path().join("absent");
        let text = FUNCTION.replace("\"fn\"", "\"absent\"");
        match parse(&text, dir.path()) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => {
                assert_eq!((line, key.as_str()), (Some(4), "functions[0].code"));
                assert!(
                    message.contains(&missing.display().to_string()),
                    "{message}"
                );
                assert!(message.contains("does not exist"), "{message}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        assert_invalid(
            &FUNCTION.replace("\"fn\"", "\"file\""),
            4,
            "functions[0].code",
            "is not a directory",
        );
        // Absolute code paths ignore the base directory.
        let absolute = dir.path().join("fn");
        let text = FUNCTION.replace("\"fn\"", &format!("{:?}", absolute.display().to_string()));
        let config = parse(&text, Path::new("/nonexistent")).expect("absolute code path");
        assert_eq!(
            config.functions[0].code,
            absolute.canonicalize().expect("canonical")
        );
    }
}
