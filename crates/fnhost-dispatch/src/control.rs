//! The control plane: where the running config came from, and the three
//! ways it changes — reload from its source (SIGHUP, `POST /admin/reload`),
//! create-or-update of one function and delete of one function (admin API).
//! Every change is a whole new config text that is parsed and validated
//! like a file and then applied by the host; a refused change leaves the
//! running config serving. Functions created through the Lambda API are
//! kept beside the source text and merged into every config applied (a
//! function of the file shadows an API one of the same name).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fnhost_config::{edit, Config, ConfigError, DEFAULT_CONFIG, DEFAULT_CONFIG_ORIGIN};
use fnhost_pool::{Host, HostError, ReloadReport};

/// Where the running config came from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The file, or `None` for the embedded default.
    pub path: Option<PathBuf>,
    /// Directory relative paths resolve against.
    pub base_dir: PathBuf,
}

impl ConfigSource {
    fn origin(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => DEFAULT_CONFIG_ORIGIN.to_string(),
        }
    }

    fn read(&self) -> Result<String, ControlError> {
        match &self.path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| {
                ControlError::Config(ConfigError::Read {
                    path: p.clone(),
                    source,
                })
            }),
            None => Ok(DEFAULT_CONFIG.to_string()),
        }
    }
}

/// Why a change was refused (the running config keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Edit(#[from] edit::EditError),
    #[error("{0}")]
    Host(#[from] HostError),
    #[error("{0}")]
    Store(#[from] fnhost_control::store::StoreError),
}

/// The source text (file plus admin-API edits) and the Lambda API's
/// functions as `[[functions]]` entries.
struct State {
    text: String,
    api: BTreeMap<String, serde_json::Value>,
}

/// The names of the `[[functions]]` entries of a config text.
pub fn defined_names(text: &str) -> Vec<String> {
    text.parse::<toml_edit::DocumentMut>()
        .ok()
        .and_then(|doc| {
            doc.get("functions")
                .and_then(toml_edit::Item::as_array_of_tables)
                .map(|t| {
                    t.iter()
                        .filter_map(|f| f.get("name").and_then(toml_edit::Item::as_str))
                        .map(str::to_string)
                        .collect()
                })
        })
        .unwrap_or_default()
}

/// `text` with the API functions it does not define itself appended.
pub fn merge(
    text: &str,
    api: &BTreeMap<String, serde_json::Value>,
) -> Result<String, edit::EditError> {
    let defined = defined_names(text);
    let mut merged = text.to_string();
    for (name, entry) in api {
        if defined.contains(name) {
            tracing::warn!(function = %name, "a function of the config file has the name of one created through the Lambda API: the file's is served");
            continue;
        }
        merged = edit::upsert_function(&merged, name, entry)?;
    }
    Ok(merged)
}

/// The running config's text and source, and the host it drives.
pub struct Control {
    pub host: Arc<Host>,
    source: ConfigSource,
    state: tokio::sync::Mutex<State>,
    grace: Duration,
}

impl Control {
    /// `text` is the source config the host was started with (merged with
    /// `api`, the Lambda API's functions).
    pub fn new(
        host: Arc<Host>,
        source: ConfigSource,
        text: String,
        api: BTreeMap<String, serde_json::Value>,
        grace: Duration,
    ) -> Self {
        Control {
            host,
            source,
            state: tokio::sync::Mutex::new(State { text, api }),
            grace,
        }
    }

    async fn apply(
        &self,
        text: String,
        origin: &str,
        current: &mut State,
    ) -> Result<ReloadReport, ControlError> {
        let merged = merge(&text, &current.api)?;
        let config = Config::parse(&merged, origin, &self.source.base_dir)?;
        let report = self.host.reload(&config, self.grace).await?;
        current.text = text;
        Ok(report)
    }

    /// Re-reads the config from its source and applies it.
    pub async fn reload(&self) -> Result<ReloadReport, ControlError> {
        let mut current = self.state.lock().await;
        let text = self.source.read()?;
        let origin = self.source.origin();
        self.apply(text, &origin, &mut current).await
    }

    /// Whether the source config (file or admin API) defines `name`: such
    /// functions are read-only through the Lambda API.
    pub async fn source_defines(&self, name: &str) -> bool {
        defined_names(&self.state.lock().await.text)
            .iter()
            .any(|n| n == name)
    }

    /// Sets (`Some`) or removes (`None`) a Lambda-API function, applies the
    /// result, then runs `persist`; if that fails, the previous config is
    /// applied again and the error returned.
    pub async fn change_api_function(
        &self,
        name: &str,
        entry: Option<serde_json::Value>,
        persist: impl FnOnce() -> Result<(), fnhost_control::store::StoreError>,
    ) -> Result<ReloadReport, ControlError> {
        let mut current = self.state.lock().await;
        let previous = current.api.clone();
        match entry {
            Some(e) => current.api.insert(name.to_string(), e),
            None => current.api.remove(name),
        };
        let text = current.text.clone();
        let origin = format!("<Lambda API: function {name}>");
        let report = match self.apply(text.clone(), &origin, &mut current).await {
            Ok(r) => r,
            Err(e) => {
                current.api = previous;
                return Err(e);
            }
        };
        if let Err(e) = persist() {
            current.api = previous;
            if let Err(undo) = self.apply(text, &origin, &mut current).await {
                tracing::error!(function = %name, error = %undo, "cannot restore the previous config after a failed store write");
            }
            return Err(e.into());
        }
        Ok(report)
    }

    /// Creates or replaces one function from a JSON object of config keys.
    /// Kept in memory: the next reload from the source file replaces it.
    pub async fn upsert_function(
        &self,
        name: &str,
        entry: &serde_json::Value,
    ) -> Result<ReloadReport, ControlError> {
        let mut current = self.state.lock().await;
        let text = edit::upsert_function(&current.text, name, entry)?;
        self.apply(text, &format!("<admin API: function {name}>"), &mut current)
            .await
    }

    /// Deletes one function (its in-flight invocations finish first).
    pub async fn delete_function(&self, name: &str) -> Result<ReloadReport, ControlError> {
        let mut current = self.state.lock().await;
        let text = edit::remove_function(&current.text, name)?;
        self.apply(text, &format!("<admin API: delete {name}>"), &mut current)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_functions_are_appended_unless_the_source_defines_them() {
        let text = "[[functions]]\nname = \"hello\"\nruntime = \"python3\"\ncode = \"/c\"\nhandler = \"h.h\"\n";
        assert_eq!(defined_names(text), ["hello"]);
        let mut api = BTreeMap::new();
        api.insert(
            "hello".to_string(),
            serde_json::json!({"runtime": "python3", "code": "/other", "handler": "x.y"}),
        );
        api.insert(
            "api-fn".to_string(),
            serde_json::json!({"runtime": "python3", "code": "/s/code/ab", "handler": "app.handler", "memory_mb": 256}),
        );
        let merged = merge(text, &api).expect("merge");
        assert_eq!(defined_names(&merged), ["hello", "api-fn"]);
        assert!(
            !merged.contains("/other"),
            "the file's hello wins: {merged}"
        );
        assert!(merged.contains("memory_mb = 256"));
    }
}
