//! The control plane: where the running config came from, and the three
//! ways it changes — reload from its source (SIGHUP, `POST /admin/reload`),
//! create-or-update of one function and delete of one function (admin API).
//! Every change is a whole new config text that is parsed and validated
//! like a file and then applied by the host; a refused change leaves the
//! running config serving.

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
}

/// The running config's text and source, and the host it drives.
pub struct Control {
    pub host: Arc<Host>,
    source: ConfigSource,
    text: tokio::sync::Mutex<String>,
    grace: Duration,
}

impl Control {
    /// `text` is the config the host was started with.
    pub fn new(host: Arc<Host>, source: ConfigSource, text: String, grace: Duration) -> Self {
        Control {
            host,
            source,
            text: tokio::sync::Mutex::new(text),
            grace,
        }
    }

    async fn apply(
        &self,
        text: String,
        origin: &str,
        current: &mut String,
    ) -> Result<ReloadReport, ControlError> {
        let config = Config::parse(&text, origin, &self.source.base_dir)?;
        let report = self.host.reload(&config, self.grace).await?;
        *current = text;
        Ok(report)
    }

    /// Re-reads the config from its source and applies it.
    pub async fn reload(&self) -> Result<ReloadReport, ControlError> {
        let mut current = self.text.lock().await;
        let text = self.source.read()?;
        let origin = self.source.origin();
        self.apply(text, &origin, &mut current).await
    }

    /// Creates or replaces one function from a JSON object of config keys.
    /// Kept in memory: the next reload from the source file replaces it.
    pub async fn upsert_function(
        &self,
        name: &str,
        entry: &serde_json::Value,
    ) -> Result<ReloadReport, ControlError> {
        let mut current = self.text.lock().await;
        let text = edit::upsert_function(&current, name, entry)?;
        self.apply(text, &format!("<admin API: function {name}>"), &mut current)
            .await
    }

    /// Deletes one function (its in-flight invocations finish first).
    pub async fn delete_function(&self, name: &str) -> Result<ReloadReport, ControlError> {
        let mut current = self.text.lock().await;
        let text = edit::remove_function(&current, name)?;
        self.apply(text, &format!("<admin API: delete {name}>"), &mut current)
            .await
    }
}
