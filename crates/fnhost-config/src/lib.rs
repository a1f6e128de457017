//! fnhost-config: the `fnhost.toml` schema, its defaults (the embedded
//! `config/fnhost.toml`) and validation, with errors that name the file, line
//! and dotted key of the offending value and say what to change.

#![forbid(unsafe_code)]

pub mod control_plane;
pub mod edit;
mod function;
mod model;
mod schema;
mod server;
mod span;
pub mod subid;
mod validate;

use std::path::{Path, PathBuf};

use toml_edit::ImDocument;

pub use control_plane::{ControlPlaneConfig, InvokeAuth};
pub use function::split_node_handler;
pub use model::{
    AdminListen, FavorDynmodsMode, FunctionSpec, HibernateMode, HttpLimits, Limits, NetworkMode,
    PoolSettings, Runtime, ServerConfig, DEFAULT_NODE, DEFAULT_PYTHON, DEFAULT_USERNS_HOST_BASE,
    DEFAULT_USERNS_RANGES, USERNS_SIZE,
};

use span::{line_of, KeyPath, Locator};

/// The default configuration, embedded in the binary.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/fnhost.toml");

/// How errors name [`DEFAULT_CONFIG`].
pub const DEFAULT_CONFIG_ORIGIN: &str = "<embedded config/fnhost.toml>";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A syntax, type or validation error at `origin:line`, under dotted `key`.
    #[error("{origin}{}: {key}: {message}", LineSuffix(*.line))]
    Invalid {
        origin: String,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

/// Renders `Some(n)` as `:n` and `None` as nothing.
struct LineSuffix(Option<usize>);

impl std::fmt::Display for LineSuffix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it came from: a file path or [`DEFAULT_CONFIG_ORIGIN`].
    pub origin: String,
    pub server: ServerConfig,
    pub functions: Vec<FunctionSpec>,
}

impl Config {
    /// Reads and validates a file; relative paths inside resolve against the file's directory.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        Self::parse(&text, &path.display().to_string(), base_dir)
    }

    /// The embedded default, with relative paths resolved against `base_dir`
    /// (callers pass `<cwd>/config`).
    pub fn embedded_default(base_dir: &Path) -> Result<Config, ConfigError> {
        Self::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_ORIGIN, base_dir)
    }

    /// Parses `text`; `origin` names it in errors (a path or [`DEFAULT_CONFIG_ORIGIN`]).
    pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let invalid = |line: Option<usize>, key: String, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            line,
            key,
            message,
        };
        let doc = ImDocument::parse(text.to_owned()).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            invalid(line, "(syntax)".to_owned(), one_line(e.message()))
        })?;
        let locator = Locator::new(text, &doc);
        let at_path = |path: &KeyPath, message: String| {
            invalid(locator.line_of_path(path), path.to_string(), message)
        };

        if let Some(unknown) = schema::find_unknown_key(doc.as_table()) {
            return Err(at_path(&unknown.path, unknown.message()));
        }
        let raw: schema::RawConfig = toml_edit::de::from_document(doc.clone()).map_err(|e| {
            let offset = e.span().map(|s| s.start);
            let message = type_message(e.message());
            match offset.and_then(|o| locator.path_at(o)) {
                Some(path) => at_path(&path, message),
                None => invalid(
                    offset.map(|o| line_of(text, o)),
                    "(document)".to_owned(),
                    message,
                ),
            }
        })?;
        // A relative base stays relative only if the working directory is gone;
        // state_dir validation then reports the non-absolute result.
        let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        let (server, functions) =
            validate::validate(&raw, &base_dir).map_err(|e| at_path(&e.path, e.message))?;
        Ok(Config {
            origin: origin.to_owned(),
            server,
            functions,
        })
    }

    /// The function named `name`, if configured.
    pub fn function(&self, name: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.name == name)
    }
}

/// A multi-line parser message on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A serde type error in TOML vocabulary, without the raw struct names.
fn type_message(message: &str) -> String {
    let mut message = one_line(message);
    if let Some(at) = message.find("expected struct ") {
        message.truncate(at);
        message.push_str("expected a table");
    }
    let message = message
        .trim_start_matches("invalid type: ")
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a map", "expected a table")
        .replace("expected a sequence", "expected an array");
    format!("wrong type: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
    }

    fn parse_err(text: &str) -> (Option<usize>, String, String) {
        match Config::parse(text, "test.toml", Path::new("/")) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn embedded_default_parses_with_builtin_defaults() {
        let config = Config::embedded_default(&config_dir()).expect("embedded default is valid");
        assert_eq!(config.origin, DEFAULT_CONFIG_ORIGIN);
        assert_eq!(config.server, ServerConfig::default());
        assert_eq!(config.functions.len(), 2);
        let wordcount = config
            .function("wordcount")
            .expect("wordcount is configured");
        assert_eq!(wordcount.runtime, Runtime::Exec);
        assert_eq!(wordcount.command, vec!["/var/task/wordcount".to_string()]);
        let hello = config.function("hello").expect("hello is configured");
        assert_eq!(hello.runtime, Runtime::Python3);
        assert_eq!(hello.handler, "handler.handler");
        assert_eq!(hello.limits, Limits::default());
        assert_eq!(hello.pool, PoolSettings::default());
        assert_eq!(hello.network, NetworkMode::None);
        assert_eq!(hello.python, PathBuf::from(DEFAULT_PYTHON));
        assert!(hello.env.is_empty());
        let expected_code = config_dir()
            .join("../examples/functions/hello")
            .canonicalize()
            .expect("example function exists");
        assert_eq!(hello.code, expected_code);
        assert!(hello.code.is_absolute());
        assert!(config.function("missing").is_none());
    }

    #[test]
    fn empty_text_is_an_empty_host_with_builtin_defaults() {
        let config =
            Config::parse("", "empty.toml", Path::new("/")).expect("empty config is valid");
        assert!(config.functions.is_empty());
        assert_eq!(config.server, ServerConfig::default());
    }

    #[test]
    fn load_file_resolves_relative_paths_against_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("fns/echo")).expect("mkdir");
        let file = dir.path().join("host.toml");
        let text = "[server]\nstate_dir = \"state\"\n[[functions]]\nname = \"echo\"\nruntime = \"python3\"\ncode = \"fns/echo\"\nhandler = \"main.handle\"\n";
        std::fs::write(&file, text).expect("write config");
        let config = Config::load_file(&file).expect("valid config");
        let root = dir.path().canonicalize().expect("canonical tempdir");
        assert_eq!(config.origin, file.display().to_string());
        assert_eq!(config.functions[0].code, root.join("fns/echo"));
        assert_eq!(config.server.state_dir, dir.path().join("state"));
    }

    #[test]
    fn load_file_missing_names_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("nope.toml");
        let err = Config::load_file(&file).expect_err("file does not exist");
        assert!(matches!(&err, ConfigError::Read { path, .. } if *path == file));
        let shown = err.to_string();
        assert!(shown.starts_with("cannot read config file "), "{shown}");
        assert!(shown.contains(&file.display().to_string()), "{shown}");
    }

    #[test]
    fn errors_display_origin_line_key_message() {
        let err = Config::parse("[server]\n\nport = 1\n", "host.toml", Path::new("/"))
            .expect_err("port is unknown");
        let shown = err.to_string();
        assert!(
            shown.starts_with("host.toml:3: server.port: unknown key; expected one of `listen`"),
            "{shown}"
        );
        let err = ConfigError::Invalid {
            origin: "x".to_owned(),
            line: None,
            key: "k".to_owned(),
            message: "m".to_owned(),
        };
        assert_eq!(err.to_string(), "x: k: m");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        assert_eq!(parse_err("\n\ncolour = 1\n").0, Some(3));
        let (line, key, message) = parse_err("[defaults]\nmemory_mb = 64\nmem = 1\n");
        assert_eq!((line, key.as_str()), (Some(3), "defaults.mem"));
        assert!(message.contains("`memory_mb`"), "{message}");
        let (line, key, _) = parse_err(
            "[[functions]]\nname = \"a\"\n\n[[functions]]\nname = \"b\"\ncodee = \"x\"\n",
        );
        assert_eq!((line, key.as_str()), (Some(6), "functions[1].codee"));
    }

    #[test]
    fn type_errors_carry_the_key_and_line() {
        let (line, key, message) =
            parse_err("[server]\nlisten = \"127.0.0.1:1\"\nmax_payload_bytes = \"big\"\n");
        assert_eq!((line, key.as_str()), (Some(3), "server.max_payload_bytes"));
        assert!(message.contains("expected an integer"), "{message}");
        let (line, key, _) = parse_err("[[functions]]\nname = \"a\"\n[functions.env]\nX = 1\n");
        assert_eq!((line, key.as_str()), (Some(4), "functions[0].env.X"));
        let (line, key, message) = parse_err("server = 5\n");
        assert_eq!((line, key.as_str()), (Some(1), "server"));
        assert_eq!(message, "wrong type: integer `5`, expected a table");
        let (line, key, message) = parse_err("\nfunctions = [1]\n");
        assert_eq!((line, key.as_str()), (Some(2), "functions[0]"));
        assert_eq!(message, "wrong type: integer `1`, expected a table");
        let (_, _, message) = parse_err("functions = 3\n");
        assert_eq!(message, "wrong type: integer `3`, expected an array");
        let (line, key, _) = parse_err("[defaults]\n\ncpu = \"two\"\n");
        assert_eq!((line, key.as_str()), (Some(3), "defaults.cpu"));
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let (line, key, message) = parse_err("[server]\nlisten = \"127.0.0.1:1\n");
        assert_eq!((line, key.as_str()), (Some(2), "(syntax)"));
        assert!(!message.contains('\n'), "{message}");
        let (line, _, message) = parse_err("[server]\nlisten = \"a\"\nlisten = \"b\"\n");
        assert_eq!(line, Some(3));
        assert!(message.contains("duplicate key"), "{message}");
    }
}
