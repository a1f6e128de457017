//! Validation of `[defaults]` and each `[[functions]]` entry: identity (name,
//! runtime, handler, code directory), limits, pool sizing, network, interpreter
//! and environment, each falling back to `[defaults]`, then to the built-ins.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::model::{FunctionSpec, Limits, NetworkMode, PoolSettings, Runtime, DEFAULT_PYTHON};
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
    env: BTreeMap<String, String>,
}

impl Settings {
    pub(crate) fn builtin() -> Self {
        Self {
            limits: Limits::default(),
            pool: PoolSettings::default(),
            network: NetworkMode::default(),
            python: PathBuf::from(DEFAULT_PYTHON),
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
    if let Some(python) = &raw.python {
        if !python.starts_with('/') || python.contains('\0') {
            return Err(invalid(
                path.key("python"),
                format!("{python:?} is not an absolute path; give the interpreter's path inside the sandbox root, e.g. \"{DEFAULT_PYTHON}\""),
            ));
        }
        s.python = PathBuf::from(python);
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
            invalid(path.key(key), format!("missing required key `{key}`; every [[functions]] entry needs name, runtime, code and handler"))
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
    let handler = required("handler", &raw.handler)?;
    match runtime {
        Runtime::Python3 => check_python_handler(&handler, &path.key("handler"))?,
    }
    let settings = overrides(&raw.overrides(), path, defaults)?;
    Ok(FunctionSpec {
        name,
        runtime,
        code,
        handler,
        python: settings.python,
        limits: settings.limits,
        pool: settings.pool,
        network: settings.network,
        env: settings.env,
    })
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
    Ok(())
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
            ("zygotes = -1", "zygotes", "got -1"),
            ("network = \"host\"", "network", "supported: \"none\""),
            ("python = \"python3\"", "python", "absolute path"),
            ("env = { \"A B\" = \"v\" }", "env.\"A B\"", "variable names"),
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
            "supported: \"python3\"",
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
