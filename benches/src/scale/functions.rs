//! The scale suite's functions: N distinct Python functions, each with a
//! code directory of its own, in one generated config. Most are no-ops;
//! every tenth counts words and every tenth (offset by one) hashes its
//! input, so the suite also checks that each function answers with its
//! own code.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use fnhost_testkit::{toml_string, ServerSection};

/// The payload every request sends.
pub const PAYLOAD: &[u8] = br#"{"text": "a b c"}"#;

/// SHA-256 of "a b c", what the hashing handlers answer.
const SHA256_ABC: &str = "0e9f64031fcb2bc708b531c2a20441580425d151a38503f38592a7dd36019d3b";

/// What one function does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Noop,
    Words,
    Digest,
}

pub fn kind(index: usize) -> Kind {
    match index % 10 {
        3 => Kind::Words,
        4 => Kind::Digest,
        _ => Kind::Noop,
    }
}

pub fn name(index: usize) -> String {
    format!("s{index:05}")
}

fn handler(index: usize) -> String {
    let name = name(index);
    match kind(index) {
        Kind::Noop => format!("def handler(event, context):\n    return {{\"fn\": \"{name}\"}}\n"),
        Kind::Words => format!(
            "def handler(event, context):\n    return {{\"fn\": \"{name}\", \"words\": len(event.get(\"text\", \"\").split())}}\n"
        ),
        Kind::Digest => format!(
            "import hashlib\n\ndef handler(event, context):\n    data = event.get(\"text\", \"\").encode()\n    return {{\"fn\": \"{name}\", \"sha256\": hashlib.sha256(data).hexdigest()}}\n"
        ),
    }
}

/// Whether `body` is function `index`'s answer to [`PAYLOAD`].
pub fn answer_is_correct(index: usize, body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    if value["fn"] != name(index) {
        return false;
    }
    match kind(index) {
        Kind::Noop => true,
        Kind::Words => value["words"] == 3,
        Kind::Digest => value["sha256"] == SHA256_ABC,
    }
}

/// Pool settings of every function.
#[derive(Debug, Clone, Copy)]
pub struct PoolKeys {
    pub hibernate_after_ms: u64,
    pub memory_budget_mb: u64,
}

/// Writes the code directories of functions `0..n` under `code` and
/// returns the config text serving them.
pub fn write(n: usize, code: &Path, server: &ServerSection, keys: PoolKeys) -> Result<String> {
    let mut config = server.to_toml();
    let _ = writeln!(config, "memory_budget_mb = {}", keys.memory_budget_mb);
    let _ = write!(
        config,
        "\n[defaults]\nzygotes = 1\nready_clones = 0\nprewarm = false\nhibernate_after_ms = {}\nmemory_mb = 64\ntimeout_ms = 10000\n",
        keys.hibernate_after_ms
    );
    for index in 0..n {
        let dir = code.join(name(index));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("handler.py"), handler(index))
            .with_context(|| format!("writing {}", dir.join("handler.py").display()))?;
        let _ = write!(
            config,
            "\n[[functions]]\nname = \"{}\"\nruntime = \"python3\"\ncode = {}\nhandler = \"handler.handler\"\n",
            name(index),
            toml_string(&dir.display().to_string())
        );
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_answers() {
        assert_eq!(
            (kind(0), kind(3), kind(14)),
            (Kind::Noop, Kind::Words, Kind::Digest)
        );
        assert!(answer_is_correct(0, br#"{"fn": "s00000"}"#));
        assert!(!answer_is_correct(0, br#"{"fn": "s00001"}"#));
        assert!(answer_is_correct(3, br#"{"fn": "s00003", "words": 3}"#));
        assert!(!answer_is_correct(3, br#"{"fn": "s00003", "words": 2}"#));
        let digest = format!(r#"{{"fn": "s00004", "sha256": "{SHA256_ABC}"}}"#);
        assert!(answer_is_correct(4, digest.as_bytes()));
        assert!(!answer_is_correct(4, b"not json"));
    }

    #[test]
    fn writes_one_code_dir_per_function() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServerSection::new(&dir.path().join("state"), "fnhost-scale-test");
        let keys = PoolKeys {
            hibernate_after_ms: 2000,
            memory_budget_mb: 1024,
        };
        let config = write(12, &dir.path().join("code"), &server, keys).expect("write");
        assert_eq!(config.matches("[[functions]]").count(), 12);
        assert!(dir.path().join("code/s00011/handler.py").is_file());
        assert!(config.contains("memory_budget_mb = 1024"));
    }
}
