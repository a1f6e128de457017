//! Reloading a host's config: diffing the new functions against the
//! running pools (added, removed, replaced, resized, unchanged), swapping
//! in the new pools and retiring the old ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fnhost_config::{Config, FunctionSpec, ServerConfig};

use super::startup::{budget_bytes, HostError};
use super::{prewarm, Host};
use crate::pool::FunctionPool;
use crate::telemetry::Labels;

/// What a reload changed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Functions whose code, runtime or limits changed: new pools replaced
    /// the old ones, which drain their in-flight invocations.
    pub replaced: Vec<String>,
    /// Functions whose pool settings changed in place.
    pub resized: Vec<String>,
    pub unchanged: Vec<String>,
    /// `[server]` keys that only take effect after a restart.
    pub needs_restart: Vec<String>,
}

impl Host {
    /// Applies a new, already validated config. Everything is built before
    /// anything is swapped, so a failure leaves the running config intact.
    /// In-flight invocations finish in the pools they started in.
    pub async fn reload(
        &self,
        config: &Config,
        grace: Duration,
    ) -> Result<ReloadReport, HostError> {
        let _one_at_a_time = self.reloading.lock().await;
        let current = self.pools.read().expect("pools lock").clone();
        let mut report = ReloadReport::default();
        let mut next = BTreeMap::new();
        let mut built = Vec::new();
        for spec in &config.functions {
            // Code or image content changes show up as different layers.
            let zspec = match self.prepare(spec) {
                Ok(z) => z,
                Err(e) => {
                    for pool in built {
                        self.retire(pool, Duration::ZERO);
                    }
                    return Err(e);
                }
            };
            let same_root = |pool: &FunctionPool| *pool.zygote_spec() == zspec;
            match current.get(&spec.name) {
                Some(pool) if pool.spec == *spec && same_root(pool) => {
                    report.unchanged.push(spec.name.clone());
                    next.insert(spec.name.clone(), pool.clone());
                }
                Some(pool) if same_except_pool(&pool.spec, spec) && same_root(pool) => {
                    report.resized.push(spec.name.clone());
                    next.insert(spec.name.clone(), pool.clone());
                }
                old => {
                    let pool = match self.build_pool_with(spec, zspec) {
                        Ok(pool) => pool,
                        Err(e) => {
                            for pool in built {
                                self.retire(pool, Duration::ZERO);
                            }
                            return Err(e);
                        }
                    };
                    if old.is_some() {
                        report.replaced.push(spec.name.clone());
                    } else {
                        report.added.push(spec.name.clone());
                    }
                    built.push(pool.clone());
                    next.insert(spec.name.clone(), pool);
                }
            }
        }
        for spec in &config.functions {
            if report.resized.contains(&spec.name) {
                next[&spec.name].update_settings(spec.pool);
            }
        }
        let retired: Vec<Arc<FunctionPool>> = current
            .iter()
            .filter(|(name, pool)| next.get(*name).is_none_or(|p| !Arc::ptr_eq(p, pool)))
            .map(|(_, pool)| pool.clone())
            .collect();
        report.removed = current
            .keys()
            .filter(|name| !next.contains_key(*name))
            .cloned()
            .collect();
        *self.pools.write().expect("pools lock") = next;
        for pool in retired {
            self.retire(pool, grace);
        }
        self.budget.set_limit(budget_bytes(&config.server));
        report.needs_restart = restart_only_changes(&self.server, &config.server);
        let labels = Labels::for_host(config.functions.len(), config.server.function_metrics_max);
        if labels != self.labels {
            tracing::warn!(
                functions = config.functions.len(),
                function_metrics_max = config.server.function_metrics_max,
                "metrics keep their labelling ({:?}) until a restart",
                self.labels
            );
            report
                .needs_restart
                .push("server.function_metrics_max".to_string());
        }
        prewarm(built.into_iter()).await;
        tracing::info!(?report, "config reloaded");
        Ok(report)
    }
}

/// True when two specs differ at most in their pool settings.
fn same_except_pool(a: &FunctionSpec, b: &FunctionSpec) -> bool {
    let mut b = b.clone();
    b.pool = a.pool;
    *a == b
}

/// `[server]` keys that changed but need a restart.
fn restart_only_changes(old: &ServerConfig, new: &ServerConfig) -> Vec<String> {
    let mut keys = Vec::new();
    let checks: [(&str, bool); 8] = [
        ("server.listen", old.listen != new.listen),
        ("server.state_dir", old.state_dir != new.state_dir),
        ("server.cgroup_root", old.cgroup_root != new.cgroup_root),
        (
            "server.max_payload_bytes",
            old.max_payload_bytes != new.max_payload_bytes,
        ),
        (
            "server.max_response_bytes",
            old.max_response_bytes != new.max_response_bytes,
        ),
        ("server.admin_listen", old.admin_listen != new.admin_listen),
        ("server.admin_token", old.admin_token != new.admin_token),
        (
            "server.cgroup_favordynmods",
            old.cgroup_favordynmods != new.cgroup_favordynmods,
        ),
    ];
    for (key, changed) in checks {
        if changed {
            tracing::warn!(
                key,
                "changed in the reloaded config; takes effect after a restart"
            );
            keys.push(key.to_string());
        }
    }
    keys
}

impl Host {
    /// Drains a pool that left the config, then removes its cgroups, in the
    /// background; shutdown waits for it (see [`Host::shutdown`]).
    fn retire(&self, pool: Arc<FunctionPool>, grace: Duration) {
        // Replaced, not removed: its successor shares the zygote cgroup.
        let successor = self
            .pools
            .read()
            .expect("pools lock")
            .get(pool.name())
            .is_some_and(|p| !Arc::ptr_eq(p, &pool));
        let task = tokio::spawn(async move {
            pool.close(grace).await;
            pool.remove_cgroups(successor);
            tracing::info!(function = pool.name(), "pool retired");
        });
        let mut retiring = self.retiring.lock().expect("retiring lock");
        retiring.retain(|t| !t.is_finished());
        retiring.push(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config of one exec function `f` whose code is in `dir`.
    fn config(dir: &tempfile::TempDir, server: &str, memory_mb: u64, max_clones: u32) -> Config {
        let text = format!(
            "[server]\n{server}\n[[functions]]\nname = \"f\"\nruntime = \"exec\"\ncode = \"{}\"\ncommand = [\"/var/task/fn\"]\nmemory_mb = {memory_mb}\nready_clones = {max_clones}\n",
            dir.path().display()
        );
        Config::parse(&text, "test", dir.path()).unwrap()
    }

    #[test]
    fn pool_settings_alone_are_a_resize() {
        let dir = tempfile::tempdir().unwrap();
        let a = config(&dir, "", 128, 2);
        let resized = config(&dir, "", 128, 4);
        let replaced = config(&dir, "", 256, 2);
        assert!(same_except_pool(&a.functions[0], &resized.functions[0]));
        assert!(!same_except_pool(&a.functions[0], &replaced.functions[0]));
    }

    #[test]
    fn restart_only_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let old = config(&dir, "listen = \"127.0.0.1:1\"", 128, 2);
        let new = config(
            &dir,
            "listen = \"127.0.0.1:2\"\nmax_response_bytes = 1024",
            128,
            2,
        );
        assert_eq!(
            restart_only_changes(&old.server, &new.server),
            ["server.listen", "server.max_response_bytes"]
        );
        assert!(restart_only_changes(&old.server, &old.server).is_empty());
    }
}
