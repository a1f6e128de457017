//! Launching fnhost for a run: a scratch workspace (tiny Python handler,
//! state directory, a cgroup root of its own so that several load testers
//! and daemons on one machine never touch each other's cgroups), a config
//! generated per pool configuration, and the daemon process, which is
//! always stopped: SIGTERM, a grace period, then SIGKILL — on success, on
//! error, on drop, and (through PR_SET_PDEATHSIG) if the load tester dies.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

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

/// A scratch directory for one load-tester process.
pub struct Workspace {
    pub dir: PathBuf,
    pub code: PathBuf,
    pub state: PathBuf,
    pub cgroup_root: String,
    pub keep: bool,
}

impl Workspace {
    pub fn create(keep: bool) -> anyhow::Result<Workspace> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("fnhost-loadtest-{pid}-{nanos:x}"));
        let code = dir.join("code");
        let state = dir.join("state");
        std::fs::create_dir_all(&code)
            .with_context(|| format!("cannot create {}", code.display()))?;
        std::fs::create_dir_all(&state)
            .with_context(|| format!("cannot create {}", state.display()))?;
        std::fs::write(code.join("handler.py"), HANDLER).context("cannot write the handler")?;
        Ok(Workspace {
            dir,
            code,
            state,
            cgroup_root: format!("fnhost-loadtest-{pid}"),
            keep,
        })
    }

    /// A config for `functions` with `pool` applied to every one.
    pub fn config(&self, functions: &[String], pool: &PoolConfig) -> String {
        let q = |p: &Path| toml_string(&p.display().to_string());
        let mut out = format!(
            "# Generated by fnhost-loadtest for pool configuration {}\n\
             [server]\nlisten = \"127.0.0.1:0\"\nstate_dir = {}\ncgroup_root = {}\nshutdown_grace_ms = 2000\n\n[defaults]\n",
            pool.label,
            q(&self.state),
            toml_string(&self.cgroup_root),
        );
        for (k, v) in &pool.settings {
            let _ = writeln!(out, "{k} = {v}");
        }
        for f in functions {
            let _ = write!(
                out,
                "\n[[functions]]\nname = \"{f}\"\nruntime = \"python3\"\ncode = {}\nhandler = \"handler.handler\"\n",
                q(&self.code)
            );
        }
        out
    }
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// Whether anything is mounted at or below `dir` (then it must not be
/// deleted recursively).
fn has_mounts_below(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| Path::new(mount_point).starts_with(dir))
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("fnhost-loadtest: kept {}", self.dir.display());
        } else if has_mounts_below(&self.dir) {
            eprintln!(
                "fnhost-loadtest: not removing {}: something is still mounted below it",
                self.dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("fnhost-loadtest: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// A running `fnhost serve`.
pub struct Daemon {
    child: Option<Child>,
    pub pid: u32,
    pub url: String,
    log: PathBuf,
}

impl Daemon {
    /// Starts `fnhost serve --config CONFIG`, logging to `log`, and waits
    /// for its "listening on" line.
    pub async fn start(
        fnhost: &Path,
        config: &Path,
        log: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Daemon> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(fnhost);
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes the prctl system call (async-signal-safe, no allocation).
        // PR_SET_PDEATHSIG fires when the spawning *thread* exits; callers
        // spawn from the thread that runs the whole session.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot run {}", fnhost.display()))?;
        let pid = child.id();
        eprintln!(
            "fnhost-loadtest: launched fnhost pid {pid} (log {})",
            log.display()
        );
        let stdout = child.stdout.take().context("fnhost stdout is piped")?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            // First line to the session, the rest drained so fnhost never
            // blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut daemon = Daemon {
            child: Some(child),
            pid,
            url: String::new(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(line)) =
                tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
            {
                if let Some(url) = line.strip_prefix("fnhost: listening on ") {
                    daemon.url = url.trim().to_string();
                    return Ok(daemon);
                }
            }
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                daemon.child = None;
                bail!(
                    "fnhost exited ({status}) before listening; last log lines:\n{}",
                    daemon.log_tail(20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "fnhost did not listen within {timeout:?}; last log lines:\n{}",
                    daemon.log_tail(20)
                );
            }
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until every function holds its warm zygotes and ready clones
    /// (per /metrics); false if that did not happen within `timeout`.
    pub async fn wait_warm(
        &self,
        client: &HttpClient,
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
            if let Ok(text) = get_text(client, &format!("{}/metrics", self.url)).await {
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

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "fnhost-loadtest: fnhost pid {} ignored SIGTERM for {grace:?}; killing it",
            self.pid
        );
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
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
        let ws = Workspace {
            dir: "/tmp/x".into(),
            code: "/tmp/x/code".into(),
            state: "/tmp/x/state".into(),
            cgroup_root: "fnhost-loadtest-1".into(),
            keep: true,
        };
        let pool = PoolConfig::parse("zygotes=1,ready_clones=3").unwrap();
        let text = ws.config(&function_names(3), &pool);
        assert!(
            text.contains("[defaults]\nzygotes = 1\nready_clones = 3\n"),
            "{text}"
        );
        assert!(text.contains("cgroup_root = \"fnhost-loadtest-1\""));
        assert!(text.contains("state_dir = \"/tmp/x/state\""));
        assert_eq!(text.matches("[[functions]]").count(), 3);
        assert!(text.contains("name = \"f02\"") && text.contains("code = \"/tmp/x/code\""));
        std::mem::forget(ws);
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
