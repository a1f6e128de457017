//! Launching fnhost for a run: a scratch workspace (tiny Python handler,
//! state directory, a cgroup root of its own so that several load testers
//! and daemons on one machine never touch each other's cgroups), a config
//! generated per pool configuration, and the daemon process (through the
//! shared launcher), which is always stopped: SIGTERM, a grace period, then
//! SIGKILL — on success, on error, on drop, and (through PR_SET_PDEATHSIG)
//! if the load tester dies.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fnhost_testkit::{toml_string, Daemon, Launch, LogTo, Scratch, ServerSection};

use crate::runner::{get_text, HttpClient};

const HANDLER: &str = r#""""fnhost-loadtest's function: answers at once (measures the host, not the code)."""


def handler(event, context):
    return {"ok": True, "function": context.function_name}
"#;

/// Pool (and limit) settings of one configuration under test, written to
/// `[defaults]` so they apply to every generated function.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub label: String,
    pub settings: Vec<(String, String)>,
}

const INTEGER_KEYS: [&str; 8] = [
    "zygotes",
    "ready_clones",
    "max_concurrency",
    "queue_timeout_ms",
    "memory_mb",
    "timeout_ms",
    "pids",
    "writable_layer_mb",
];

impl PoolConfig {
    /// `"zygotes=0,ready_clones=0;zygotes=1,ready_clones=2"`: configurations
    /// separated by `;`, settings by `,`.
    pub fn parse_list(text: &str) -> anyhow::Result<Vec<PoolConfig>> {
        let configs = text
            .split(';')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(PoolConfig::parse)
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!configs.is_empty(), "--pool-configs is empty");
        Ok(configs)
    }

    pub fn parse(text: &str) -> anyhow::Result<PoolConfig> {
        let mut settings: Vec<(String, String)> = Vec::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                bail!("pool config '{text}': '{pair}' is not key=value");
            };
            let (key, value) = (key.trim(), value.trim());
            if INTEGER_KEYS.contains(&key) {
                value.parse::<u64>().with_context(|| {
                    format!(
                        "pool config '{text}': {key} must be a non-negative integer, got '{value}'"
                    )
                })?;
            } else if key == "cpu" {
                let cpu: f64 = value.parse().with_context(|| {
                    format!("pool config '{text}': cpu must be a number, got '{value}'")
                })?;
                anyhow::ensure!(
                    cpu.is_finite() && cpu > 0.0,
                    "pool config '{text}': cpu must be positive"
                );
            } else {
                bail!(
                    "pool config '{text}': unknown key '{key}'; use {} or cpu",
                    INTEGER_KEYS.join(", ")
                );
            }
            if settings.iter().any(|(k, _)| k == key) {
                bail!("pool config '{text}': {key} is set twice");
            }
            settings.push((key.to_string(), value.to_string()));
        }
        let label = settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let label = if label.is_empty() {
            "defaults".to_string()
        } else {
            label
        };
        Ok(PoolConfig { label, settings })
    }

    pub fn get(&self, key: &str) -> Option<u64> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
    }

    /// Zygotes and ready clones each function should hold when warm
    /// (fnhost's defaults where unset: 1 and 2).
    pub fn expected_warm(&self) -> (u64, u64) {
        let zygotes = self.get("zygotes").unwrap_or(1);
        let ready = if zygotes == 0 {
            0
        } else {
            self.get("ready_clones").unwrap_or(2)
        };
        (zygotes, ready)
    }
}

/// Names of `n` generated functions: f00, f01, … (f000 … past 100).
pub fn function_names(n: usize) -> Vec<String> {
    let width = n.saturating_sub(1).to_string().len().max(2);
    (0..n).map(|i| format!("f{i:0width$}")).collect()
}

/// A scratch directory for one load-tester process: the handler, the state
/// directory, and a cgroup root of its own.
pub struct Workspace {
    pub code: PathBuf,
    pub state: PathBuf,
    pub cgroup_root: String,
    scratch: Scratch,
}

impl Workspace {
    pub fn create(keep: bool) -> anyhow::Result<Workspace> {
        let scratch = Scratch::create("fnhost-loadtest-")
            .context("cannot create the load tester's scratch directory")?
            .keep(keep);
        let code = scratch.subdir("code")?;
        let state = scratch.subdir("state")?;
        scratch
            .write("code/handler.py", HANDLER)
            .context("cannot write the handler")?;
        Ok(Workspace {
            code,
            state,
            cgroup_root: format!("fnhost-loadtest-{}", std::process::id()),
            scratch,
        })
    }

    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// A config for `functions` with `pool` applied to every one.
    pub fn config(&self, functions: &[String], pool: &PoolConfig) -> String {
        config_toml(&self.state, &self.code, &self.cgroup_root, functions, pool)
    }
}

/// The config of one run: `pool` in `[defaults]`, one Python function per name.
fn config_toml(
    state: &Path,
    code: &Path,
    cgroup_root: &str,
    functions: &[String],
    pool: &PoolConfig,
) -> String {
    let mut server = ServerSection::new(state, cgroup_root);
    server.shutdown_grace_ms = Some(2000);
    // The load tester never uses the admin API; its default fixed port
    // would collide with any other daemon on the machine.
    server.admin_listen = Some("off".to_owned());
    let mut out = format!(
        "# Generated by fnhost-loadtest for pool configuration {}\n{}\n[defaults]\n",
        pool.label,
        server.to_toml()
    );
    for (k, v) in &pool.settings {
        let _ = writeln!(out, "{k} = {v}");
    }
    let code = toml_string(&code.display().to_string());
    for f in functions {
        let _ = write!(
            out,
            "\n[[functions]]\nname = \"{f}\"\nruntime = \"python3\"\ncode = {code}\nhandler = \"handler.handler\"\n"
        );
    }
    out
}

/// Starts `fnhost serve --config CONFIG`, logging to `log`, and waits for
/// its "listening on" line. Call it from the thread that runs the session:
/// the daemon gets SIGTERM if that thread dies (PR_SET_PDEATHSIG). It is
/// stopped (SIGTERM, 10 s, SIGKILL) by `stop` or on drop.
pub fn launch(
    fnhost: &Path,
    config: &Path,
    log: &Path,
    timeout: Duration,
) -> anyhow::Result<Daemon> {
    let daemon = Launch::new(fnhost, config)
        .name("fnhost-loadtest")
        .log(LogTo::File(log.to_path_buf()))
        .parent_death_signal()
        .startup_timeout(timeout)
        .stop_grace(Duration::from_secs(10))
        .start()?;
    eprintln!(
        "fnhost-loadtest: launched fnhost pid {} (log {})",
        daemon.pid(),
        log.display()
    );
    Ok(daemon)
}

/// Waits until every function holds its warm zygotes and ready clones
/// (per /metrics); false if that did not happen within `timeout`.
pub async fn wait_warm(
    client: &HttpClient,
    url: &str,
    functions: usize,
    per_function: (u64, u64),
    timeout: Duration,
) -> bool {
    let want = (
        per_function.0 * functions as u64,
        per_function.1 * functions as u64,
    );
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = get_text(client, &format!("{url}/metrics")).await {
            let have = (
                gauge_sum(&text, "fnhost_pool_zygotes"),
                gauge_sum(&text, "fnhost_pool_ready_clones"),
            );
            if have.0 >= want.0 && have.1 >= want.1 {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sum of a gauge over all its label sets in Prometheus text.
pub fn gauge_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v.max(0.0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pool_config_lists() {
        let list =
            PoolConfig::parse_list("zygotes=0,ready_clones=0; zygotes=1 ,ready_clones=2;").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].label, "zygotes=0,ready_clones=0");
        assert_eq!(
            list[1].settings,
            vec![
                ("zygotes".into(), "1".into()),
                ("ready_clones".into(), "2".into())
            ]
        );
        assert_eq!(list[0].expected_warm(), (0, 0));
        assert_eq!(list[1].expected_warm(), (1, 2));
        assert_eq!(
            PoolConfig::parse("max_concurrency=4")
                .unwrap()
                .expected_warm(),
            (1, 2)
        );
        assert_eq!(PoolConfig::parse("cpu=0.5").unwrap().label, "cpu=0.5");
        assert_eq!(PoolConfig::parse("").unwrap().label, "defaults");
        for bad in [
            "zygotes",
            "zygotes=-1",
            "warm=1",
            "zygotes=1,zygotes=2",
            "cpu=0",
        ] {
            assert!(PoolConfig::parse(bad).is_err(), "{bad}");
        }
        assert!(PoolConfig::parse_list(" ; ").is_err());
    }

    #[test]
    fn generated_config_lists_every_function() {
        let pool = PoolConfig::parse("zygotes=1,ready_clones=3").unwrap();
        let text = config_toml(
            Path::new("/tmp/x/state"),
            Path::new("/tmp/x/code"),
            "fnhost-loadtest-1",
            &function_names(3),
            &pool,
        );
        assert!(
            text.contains("[defaults]\nzygotes = 1\nready_clones = 3\n"),
            "{text}"
        );
        assert!(text.contains("cgroup_root = \"fnhost-loadtest-1\""));
        assert!(text.contains("state_dir = \"/tmp/x/state\""));
        assert_eq!(text.matches("[[functions]]").count(), 3);
        assert!(text.contains("name = \"f02\"") && text.contains("code = \"/tmp/x/code\""));
        assert!(text.contains("admin_listen = \"off\""), "{text}");
        assert!(
            text.contains("shutdown_grace_ms = 2000\n\n[defaults]\n"),
            "{text}"
        );
    }

    #[test]
    fn function_names_are_valid_and_sorted() {
        assert_eq!(function_names(3), vec!["f00", "f01", "f02"]);
        let many = function_names(101);
        assert_eq!(many[100], "f100");
        assert_eq!(many[7], "f007");
    }

    #[test]
    fn sums_gauges_across_labels() {
        let text = "# TYPE fnhost_pool_zygotes gauge\n\
                    fnhost_pool_zygotes{function=\"f00\"} 1\n\
                    fnhost_pool_zygotes{function=\"f01\"} 1\n\
                    fnhost_pool_zygotes_other 5\n\
                    fnhost_pool_ready_clones{function=\"f00\"} 2\n";
        assert_eq!(gauge_sum(text, "fnhost_pool_zygotes"), 2);
        assert_eq!(gauge_sum(text, "fnhost_pool_ready_clones"), 2);
        assert_eq!(gauge_sum(text, "missing"), 0);
    }
}
