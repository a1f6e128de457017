//! The raw TOML schema: serde structs mirroring `config/fnhost.toml` key for key,
//! every key optional so that validation (not serde) reports what is missing,
//! plus the key lists used to reject unknown keys with their exact path.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml_edit::{Item, TableLike};

use crate::span::KeyPath;

/// Keys of the top-level table.
pub(crate) const ROOT_KEYS: &[&str] = &["server", "defaults", "functions"];

/// Keys of `[server]`.
pub(crate) const SERVER_KEYS: &[&str] = &[
    "listen",
    "state_dir",
    "cgroup_root",
    "max_payload_bytes",
    "max_response_bytes",
    "shutdown_grace_ms",
    "admin_listen",
    "admin_token",
    "memory_budget_mb",
    "user_namespace",
    "userns_host_base",
    "userns_ranges",
    "header_timeout_ms",
    "body_timeout_ms",
    "max_connections",
    "max_payload_memory_mb",
    "max_async_invocations",
    "aws_credentials",
    "aws_credentials_file",
    "invoke_auth",
    "max_code_zip_bytes",
    "max_code_unzipped_bytes",
    "function_metrics_max",
    "cgroup_favordynmods",
];

/// Keys of `[defaults]`: everything a function may override.
pub(crate) const OVERRIDE_KEYS: &[&str] = &[
    "memory_mb",
    "cpu",
    "pids",
    "timeout_ms",
    "writable_layer_mb",
    "network",
    "zygotes",
    "ready_clones",
    "max_concurrency",
    "queue_timeout_ms",
    "idle_ttl_ms",
    "max_instances",
    "prewarm",
    "burst",
    "hibernate_after_ms",
    "hibernate_mode",
    "hibernate_prefetch",
    "hibernate_ready_clones",
    "hibernate_share_pages",
    "seccomp",
    "detailed_metrics",
    "python",
    "node",
    "env",
];

/// Keys only a `[[functions]]` entry has (`handler` is for python3, `command` for exec and rust).
pub(crate) const FUNCTION_ONLY_KEYS: &[&str] =
    &["name", "runtime", "code", "handler", "command", "image"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) server: RawServer,
    #[serde(default)]
    pub(crate) defaults: RawOverrides,
    #[serde(default)]
    pub(crate) functions: Vec<RawFunction>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) listen: Option<String>,
    pub(crate) state_dir: Option<String>,
    pub(crate) cgroup_root: Option<String>,
    pub(crate) max_payload_bytes: Option<i64>,
    pub(crate) max_response_bytes: Option<i64>,
    pub(crate) shutdown_grace_ms: Option<i64>,
    pub(crate) admin_listen: Option<String>,
    pub(crate) admin_token: Option<String>,
    pub(crate) memory_budget_mb: Option<i64>,
    pub(crate) user_namespace: Option<bool>,
    pub(crate) userns_host_base: Option<i64>,
    pub(crate) userns_ranges: Option<i64>,
    pub(crate) header_timeout_ms: Option<i64>,
    pub(crate) body_timeout_ms: Option<i64>,
    pub(crate) max_connections: Option<i64>,
    pub(crate) max_payload_memory_mb: Option<i64>,
    pub(crate) max_async_invocations: Option<i64>,
    // Lambda control plane (control_plane.rs).
    pub(crate) aws_credentials: Option<Vec<crate::control_plane::RawAwsCredential>>,
    pub(crate) aws_credentials_file: Option<String>,
    pub(crate) invoke_auth: Option<String>,
    pub(crate) max_code_zip_bytes: Option<i64>,
    pub(crate) max_code_unzipped_bytes: Option<i64>,
    pub(crate) function_metrics_max: Option<i64>,
    pub(crate) cgroup_favordynmods: Option<String>,
}

/// The per-function keys, as found in `[defaults]` or in one `[[functions]]` entry.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOverrides {
    pub(crate) memory_mb: Option<i64>,
    pub(crate) cpu: Option<f64>,
    pub(crate) pids: Option<i64>,
    pub(crate) timeout_ms: Option<i64>,
    pub(crate) writable_layer_mb: Option<i64>,
    pub(crate) network: Option<String>,
    pub(crate) zygotes: Option<i64>,
    pub(crate) ready_clones: Option<i64>,
    pub(crate) max_concurrency: Option<i64>,
    pub(crate) queue_timeout_ms: Option<i64>,
    pub(crate) idle_ttl_ms: Option<i64>,
    pub(crate) max_instances: Option<i64>,
    pub(crate) prewarm: Option<bool>,
    pub(crate) burst: Option<i64>,
    pub(crate) hibernate_after_ms: Option<i64>,
    pub(crate) hibernate_mode: Option<String>,
    pub(crate) hibernate_prefetch: Option<bool>,
    pub(crate) hibernate_ready_clones: Option<i64>,
    pub(crate) hibernate_share_pages: Option<bool>,
    pub(crate) seccomp: Option<String>,
    pub(crate) detailed_metrics: Option<bool>,
    pub(crate) python: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) env: Option<BTreeMap<String, String>>,
}

/// One `[[functions]]` entry. The override keys are repeated rather than
/// `#[serde(flatten)]`ed: flatten would lose both `deny_unknown_fields` and the
/// spans that type errors are located by.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFunction {
    pub(crate) name: Option<String>,
    pub(crate) runtime: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) handler: Option<String>,
    pub(crate) command: Option<Vec<String>>,
    pub(crate) image: Option<String>,
    pub(crate) memory_mb: Option<i64>,
    pub(crate) cpu: Option<f64>,
    pub(crate) pids: Option<i64>,
    pub(crate) timeout_ms: Option<i64>,
    pub(crate) writable_layer_mb: Option<i64>,
    pub(crate) network: Option<String>,
    pub(crate) zygotes: Option<i64>,
    pub(crate) ready_clones: Option<i64>,
    pub(crate) max_concurrency: Option<i64>,
    pub(crate) queue_timeout_ms: Option<i64>,
    pub(crate) idle_ttl_ms: Option<i64>,
    pub(crate) max_instances: Option<i64>,
    pub(crate) prewarm: Option<bool>,
    pub(crate) burst: Option<i64>,
    pub(crate) hibernate_after_ms: Option<i64>,
    pub(crate) hibernate_mode: Option<String>,
    pub(crate) hibernate_prefetch: Option<bool>,
    pub(crate) hibernate_ready_clones: Option<i64>,
    pub(crate) hibernate_share_pages: Option<bool>,
    pub(crate) seccomp: Option<String>,
    pub(crate) detailed_metrics: Option<bool>,
    pub(crate) python: Option<String>,
    pub(crate) node: Option<String>,
    pub(crate) env: Option<BTreeMap<String, String>>,
}

impl RawFunction {
    /// The override keys this function sets.
    pub(crate) fn overrides(&self) -> RawOverrides {
        RawOverrides {
            memory_mb: self.memory_mb,
            cpu: self.cpu,
            pids: self.pids,
            timeout_ms: self.timeout_ms,
            writable_layer_mb: self.writable_layer_mb,
            network: self.network.clone(),
            zygotes: self.zygotes,
            ready_clones: self.ready_clones,
            max_concurrency: self.max_concurrency,
            queue_timeout_ms: self.queue_timeout_ms,
            idle_ttl_ms: self.idle_ttl_ms,
            max_instances: self.max_instances,
            prewarm: self.prewarm,
            burst: self.burst,
            hibernate_after_ms: self.hibernate_after_ms,
            hibernate_mode: self.hibernate_mode.clone(),
            hibernate_prefetch: self.hibernate_prefetch,
            hibernate_ready_clones: self.hibernate_ready_clones,
            hibernate_share_pages: self.hibernate_share_pages,
            seccomp: self.seccomp.clone(),
            detailed_metrics: self.detailed_metrics,
            python: self.python.clone(),
            node: self.node.clone(),
            env: self.env.clone(),
        }
    }
}

/// An unknown key: its path and the keys that would have been accepted there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownKey {
    pub(crate) path: KeyPath,
    pub(crate) expected: Vec<&'static str>,
}

impl UnknownKey {
    pub(crate) fn message(&self) -> String {
        let expected: Vec<String> = self.expected.iter().map(|k| format!("`{k}`")).collect();
        format!(
            "unknown key; expected one of {} (check the spelling, or remove it)",
            expected.join(", ")
        )
    }
}

/// First key, in document order, that the schema does not know. Containers of
/// the wrong type are skipped: deserialization reports those as type errors.
pub(crate) fn find_unknown_key(root: &dyn TableLike) -> Option<UnknownKey> {
    let path = KeyPath::root();
    if let Some(unknown) = check_table(root, &path, ROOT_KEYS.to_vec()) {
        return Some(unknown);
    }
    for (key, item) in root.iter() {
        let path = path.key(key);
        let found = match key {
            "server" => item
                .as_table_like()
                .and_then(|t| check_table(t, &path, SERVER_KEYS.to_vec())),
            "defaults" => item
                .as_table_like()
                .and_then(|t| check_table(t, &path, OVERRIDE_KEYS.to_vec())),
            "functions" => check_functions(item, &path),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn check_functions(item: &Item, path: &KeyPath) -> Option<UnknownKey> {
    let expected: Vec<&'static str> = FUNCTION_ONLY_KEYS
        .iter()
        .chain(OVERRIDE_KEYS)
        .copied()
        .collect();
    let tables: Vec<&dyn TableLike> = if let Some(array) = item.as_array_of_tables() {
        array.iter().map(|t| t as &dyn TableLike).collect()
    } else if let Some(array) = item.as_array() {
        array
            .iter()
            .filter_map(|v| v.as_inline_table().map(|t| t as &dyn TableLike))
            .collect()
    } else {
        Vec::new()
    };
    tables
        .into_iter()
        .enumerate()
        .find_map(|(i, table)| check_table(table, &path.index(i), expected.clone()))
}

/// `None` when every key of `table` is in `expected`.
fn check_table(
    table: &dyn TableLike,
    path: &KeyPath,
    expected: Vec<&'static str>,
) -> Option<UnknownKey> {
    table
        .iter()
        .find(|(key, _)| !expected.contains(key))
        .map(|(key, _)| UnknownKey {
            path: path.key(key),
            expected: expected.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use toml_edit::ImDocument;

    fn unknown(text: &str) -> Option<String> {
        let doc = ImDocument::parse(text.to_owned()).expect("test document parses");
        find_unknown_key(doc.as_table()).map(|u| u.path.to_string())
    }

    /// A document using every key of the key lists, so that the lists and the
    /// serde structs (which deny unknown fields) cannot drift apart.
    fn every_key_document() -> String {
        let mut text = String::from("[server]\n");
        for key in SERVER_KEYS {
            let value = if *key == "user_namespace" {
                "true"
            } else if *key == "aws_credentials" {
                "[{ access_key_id = \"x\", secret_access_key = \"x\" }]"
            } else if key.ends_with("bytes")
                || key.ends_with("_ms")
                || key.ends_with("_mb")
                || key.ends_with("_base")
                || key.ends_with("_ranges")
                || key.starts_with("max_")
                || key.ends_with("_max")
            {
                "1"
            } else {
                "\"x\""
            };
            text.push_str(&format!("{key} = {value}\n"));
        }
        let overrides: String = OVERRIDE_KEYS
            .iter()
            .map(|key| match *key {
                "network" | "python" | "node" | "seccomp" | "hibernate_mode" => {
                    format!("{key} = \"x\"\n")
                }
                "env" => "env = { A = \"b\" }\n".to_owned(),
                "cpu" => "cpu = 0.5\n".to_owned(),
                "prewarm" | "hibernate_prefetch" | "hibernate_share_pages" | "detailed_metrics" => {
                    format!("{key} = true\n")
                }
                _ => format!("{key} = 1\n"),
            })
            .collect();
        text.push_str("[defaults]\n");
        text.push_str(&overrides);
        text.push_str("[[functions]]\n");
        for key in FUNCTION_ONLY_KEYS {
            match *key {
                "command" => text.push_str("command = [\"x\"]\n"),
                _ => text.push_str(&format!("{key} = \"x\"\n")),
            }
        }
        text.push_str(&overrides);
        text
    }

    #[test]
    fn key_lists_match_the_serde_structs() {
        let text = every_key_document();
        assert_eq!(unknown(&text), None);
        let raw: RawConfig = toml_edit::de::from_str(&text).expect("every listed key deserializes");
        assert_eq!(raw.functions.len(), 1);
        let overrides = raw.functions[0].overrides();
        assert_eq!(overrides.memory_mb, Some(1));
        assert_eq!(overrides.env.map(|e| e.len()), Some(1));
        assert_eq!(raw.defaults.cpu, Some(0.5));
    }

    #[test]
    fn unknown_keys_are_found_at_every_level() {
        assert_eq!(unknown("colour = 1").as_deref(), Some("colour"));
        assert_eq!(
            unknown("[server]\nport = 1").as_deref(),
            Some("server.port")
        );
        assert_eq!(
            unknown("[defaults]\nmemory = 1").as_deref(),
            Some("defaults.memory")
        );
        assert_eq!(
            unknown("[[functions]]\nname = \"a\"\n[[functions]]\nnmae = \"b\"").as_deref(),
            Some("functions[1].nmae")
        );
        assert_eq!(
            unknown("functions = [{ name = \"a\", mem = 1 }]").as_deref(),
            Some("functions[0].mem")
        );
        // env keys are free-form.
        assert_eq!(unknown("[defaults.env]\nANYTHING = \"x\""), None);
    }

    #[test]
    fn unknown_key_message_lists_the_alternatives() {
        let doc = ImDocument::parse("[server]\nport = 1".to_owned()).expect("parses");
        let found = find_unknown_key(doc.as_table()).expect("port is unknown");
        let message = found.message();
        assert!(
            message.starts_with("unknown key; expected one of `listen`"),
            "{message}"
        );
    }
}
