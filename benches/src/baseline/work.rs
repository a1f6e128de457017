//! The work every baseline runs once per start-to-exit: an interpreter
//! loading the function at /var/task and calling its handler once — the
//! Python no-op (`python3 -B -c "import handler; handler.handler(…)"`) or a
//! Node function (`node -e`, requiring `/var/task/index.js` and awaiting
//! `handler({bench: true}, {})`) whose code directory is copied to
//! /var/task. The parent hands it to the re-executed worker as CLI args.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::ValueEnum;

/// The interpreter of the Python work (and of fnhost's Python zygotes).
pub const PYTHON: &str = "/usr/bin/python3";

/// The interpreter of the Node work (and of fnhost's Node zygotes).
pub const NODE: &str = "/usr/bin/node";

/// The language of a baseline's work (`--baseline-work`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Language {
    #[default]
    Python,
    Node,
}

/// What a baseline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// `python3` importing the no-op handler (`handler.py`) and calling it.
    Python,
    /// `node` requiring `index.js` of `code` (copied to /var/task) and
    /// awaiting its handler.
    Node { code: PathBuf },
}

impl Work {
    /// The work named by the worker's hidden CLI args.
    pub fn from_cli(language: Language, code: Option<&Path>) -> Result<Self> {
        match (language, code) {
            (Language::Python, None) => Ok(Self::Python),
            (Language::Python, Some(code)) => bail!(
                "--baseline-code {} is for node work; the python work is the no-op handler",
                code.display()
            ),
            (Language::Node, Some(code)) => Ok(Self::Node {
                code: code.to_owned(),
            }),
            (Language::Node, None) => {
                bail!("node work needs --baseline-code DIR (the directory holding index.js)")
            }
        }
    }

    /// The hidden CLI args that make the worker run this work.
    pub fn cli_args(&self) -> Vec<OsString> {
        match self {
            Self::Python => vec!["--baseline-work".into(), "python".into()],
            Self::Node { code } => vec![
                "--baseline-work".into(),
                "node".into(),
                "--baseline-code".into(),
                code.clone().into_os_string(),
            ],
        }
    }

    /// The interpreter's absolute path.
    pub fn interpreter(&self) -> &'static str {
        match self {
            Self::Python => PYTHON,
            Self::Node { .. } => NODE,
        }
    }

    /// The Debian package that installs the interpreter.
    pub fn package(&self) -> &'static str {
        match self {
            Self::Python => "python3",
            Self::Node { .. } => "nodejs",
        }
    }

    /// A short description for progress lines and reports.
    pub fn describe(&self) -> String {
        match self {
            Self::Python => "python3 no-op".to_owned(),
            Self::Node { code } => format!("node {}", code.display()),
        }
    }

    /// The interpreter's arguments (after its path): load the function from
    /// `task_dir` and call its handler once.
    pub fn args(&self, task_dir: &str) -> Vec<String> {
        match self {
            Self::Python => vec!["-B".to_owned(), "-c".to_owned(), python_script(task_dir)],
            Self::Node { .. } => vec!["-e".to_owned(), node_script(task_dir)],
        }
    }
}

/// The Python work: import the handler from `task_dir` and call it once.
pub fn python_script(task_dir: &str) -> String {
    format!(
        "import sys; sys.path.insert(0, {task_dir:?}); import handler; \
         handler.handler({{'bench': True}}, None)"
    )
}

/// The Node work: require `task_dir/index.js`, call its handler once and
/// await the result; a rejection exits 1 with the error on stderr.
pub fn node_script(task_dir: &str) -> String {
    let index = format!("{}/index.js", task_dir.trim_end_matches('/'));
    let index = serde_json::to_string(&index).expect("a string always serializes");
    format!(
        "const h = require({index}).handler; \
         Promise.resolve(h({{bench: true}}, {{}})).then(() => {{}}, \
         (e) => {{ console.error(e); process.exit(1); }});"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Work {
        Work::Node {
            code: PathBuf::from("/tmp/fn"),
        }
    }

    #[test]
    fn python_script_imports_from_the_task_dir() {
        let s = python_script("/var/task");
        assert!(s.contains("sys.path.insert(0, \"/var/task\")"), "{s}");
        assert!(s.contains("handler.handler("), "{s}");
        assert_eq!(Work::Python.args("/var/task")[..2], ["-B", "-c"]);
    }

    #[test]
    fn node_script_requires_index_and_awaits_the_handler() {
        let s = node_script("/var/task");
        assert!(s.contains("require(\"/var/task/index.js\").handler"), "{s}");
        assert!(s.contains("h({bench: true}, {})"), "{s}");
        assert!(s.contains("Promise.resolve("), "{s}");
        assert!(s.contains("process.exit(1)"), "{s}");
        // A trailing slash and quotes in the path stay one JS string.
        let quoted = node_script("/tmp/a\"b/");
        assert!(
            quoted.contains(r#"require("/tmp/a\"b/index.js")"#),
            "{quoted}"
        );
        assert_eq!(node().args("/var/task"), ["-e".to_owned(), s]);
    }

    #[test]
    fn work_names_its_interpreter_and_package() {
        assert_eq!(
            (Work::Python.interpreter(), Work::Python.package()),
            (PYTHON, "python3")
        );
        assert_eq!((node().interpreter(), node().package()), (NODE, "nodejs"));
    }

    #[test]
    fn work_round_trips_through_the_worker_args() {
        for work in [Work::Python, node()] {
            let args = work.cli_args();
            let language = Language::from_str(args[1].to_str().expect("utf-8"), false)
                .expect("a language name");
            let code = args.get(3).map(Path::new);
            assert_eq!(Work::from_cli(language, code).expect("valid"), work);
        }
        assert!(Work::from_cli(Language::Node, None).is_err());
        assert!(Work::from_cli(Language::Python, Some(Path::new("/x"))).is_err());
    }
}
