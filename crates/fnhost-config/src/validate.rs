//! Validation: turns the raw schema into the model. `server` checks `[server]`,
//! `function` applies `[defaults]` and checks each function; this module ties them
//! together, rejects duplicate names and holds the shared range checks. Each
//! failure names the key path and says what to change; `lib.rs` adds file and line.

use std::path::Path;

use crate::function::{function, overrides, Settings};
use crate::model::{FunctionSpec, ServerConfig};
use crate::schema::RawConfig;
use crate::server::server;
use crate::span::KeyPath;

/// A value that fails validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub(crate) struct Invalid {
    pub(crate) path: KeyPath,
    pub(crate) message: String,
}

pub(crate) fn invalid(path: KeyPath, message: impl Into<String>) -> Invalid {
    Invalid {
        path,
        message: message.into(),
    }
}

/// Validates `raw`; relative paths resolve against `base_dir`, which is absolute.
pub(crate) fn validate(
    raw: &RawConfig,
    base_dir: &Path,
) -> Result<(ServerConfig, Vec<FunctionSpec>), Invalid> {
    let root = KeyPath::root();
    let server = server(&raw.server, &root.key("server"), base_dir)?;
    let defaults = overrides(&raw.defaults, &root.key("defaults"), &Settings::builtin())?;
    let mut functions: Vec<FunctionSpec> = Vec::with_capacity(raw.functions.len());
    for (i, raw_function) in raw.functions.iter().enumerate() {
        let path = root.key("functions").index(i);
        let spec = function(raw_function, &path, &defaults, base_dir)?;
        if let Some(first) = functions.iter().position(|f| f.name == spec.name) {
            return Err(invalid(
                path.key("name"),
                format!(
                    "duplicate function name {:?}, already used by functions[{first}]; rename one of them",
                    spec.name
                ),
            ));
        }
        functions.push(spec);
    }
    Ok((server, functions))
}

/// `value` if within `min..=max`, else an error saying so.
pub(crate) fn bounded(
    value: i64,
    path: &KeyPath,
    min: i64,
    max: i64,
    unit: &str,
) -> Result<i64, Invalid> {
    if (min..=max).contains(&value) {
        return Ok(value);
    }
    let message = if max == i64::MAX || max == i64::from(u32::MAX) {
        format!("must be at least {min}{unit}, got {value}")
    } else {
        format!("must be between {min} and {max}{unit}, got {value}")
    };
    Err(invalid(path.clone(), message))
}

pub(crate) fn spellings<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// The conversions below only ever see values `bounded` has checked to be
// non-negative and small enough for the target type.
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).expect("bounded() checked the value is non-negative")
}

pub(crate) fn to_u32(value: i64) -> u32 {
    u32::try_from(value).expect("bounded() checked the value fits u32")
}

pub(crate) fn to_usize(value: i64) -> usize {
    usize::try_from(value).expect("bounded() checked the value is at most 1 GiB")
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Shared by the validation tests of `validate`, `server` and `function`.

    use crate::{Config, ConfigError};
    use std::path::Path;

    /// A base directory holding a code directory `fn/` and a plain file `file`.
    pub(crate) fn base() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("fn")).expect("mkdir fn");
        std::fs::write(dir.path().join("file"), "").expect("write file");
        dir
    }

    /// A valid function whose keys are on lines 2 (name) to 5 (handler).
    pub(crate) const FUNCTION: &str =
        "[[functions]]\nname = \"f\"\nruntime = \"python3\"\ncode = \"fn\"\nhandler = \"m.h\"\n";

    pub(crate) fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        Config::parse(text, "t.toml", base)
    }

    /// Asserts that `text` fails at `line` under `key` with a message containing `needle`.
    pub(crate) fn assert_invalid(text: &str, line: usize, key: &str, needle: &str) {
        let dir = base();
        match parse(text, dir.path()) {
            Err(ConfigError::Invalid {
                line: got_line,
                key: got_key,
                message,
                ..
            }) => {
                assert_eq!(
                    (got_line, got_key.as_str()),
                    (Some(line), key),
                    "{text}\n-> {message}"
                );
                assert!(
                    message.contains(needle),
                    "{key}: {message:?} lacks {needle:?}"
                );
            }
            other => panic!("{text}\n-> expected Invalid at {key}, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{assert_invalid, FUNCTION};

    #[test]
    fn duplicate_names_are_reported_on_the_second() {
        let text = format!("{FUNCTION}\n{FUNCTION}");
        assert_invalid(
            &text,
            8,
            "functions[1].name",
            "already used by functions[0]",
        );
    }
}
