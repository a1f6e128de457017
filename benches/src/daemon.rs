//! The daemon under test: the benchmark's functions and their config, a
//! no-op Python function (and the import-heavy one) in a temporary
//! directory, and `fnhost serve`
//! started on them through the shared launcher (address, admin address when
//! asked for, `/healthz`), always stopped again, on error paths too.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use anyhow::{bail, Context, Result};
use fnhost_testkit::{toml_string, AdminLine, Launch, Scratch, ServerSection};

pub const NOOP_HANDLER: &str = "def handler(event, context):\n    return {\"ok\": True}\n";

/// Function names in the generated config.
pub const WARM_FN: &str = "noop";
pub const ONDEMAND_FN: &str = "noop-ondemand";
pub const COLD_FN: &str = "noop-cold";

/// A running `fnhost serve`. Dropping it stops the daemon; the temporary
/// directory (config, code, state) is removed after the daemon has exited.
pub struct Daemon {
    /// Stops the daemon when dropped.
    inner: fnhost_testkit::Daemon,
    cgroup_root: String,
    state_dir: PathBuf,
    // Declared last: removed only after `inner` has stopped the daemon.
    _dir: Scratch,
}

/// Throughput, churn and density functions.
pub const TPUT_FN: &str = "noop-tput";
pub const CHURN_FN: &str = ONDEMAND_FN;
pub const DENSITY_FN: &str = "noop-density";

/// The import-heavy function's names: warm, on-demand, cold, throughput
/// (the no-op's pools, with a heap built at import).
pub const HEAVY_FN: &str = "heavy";
pub const HEAVY_ONDEMAND_FN: &str = "heavy-ondemand";
pub const HEAVY_COLD_FN: &str = "heavy-cold";
pub const HEAVY_TPUT_FN: &str = "heavy-tput";

/// One function of a generated config: name, warm zygotes, ready clones.
#[derive(Debug, Clone, Copy)]
pub struct FunctionPool {
    pub name: &'static str,
    pub zygotes: u32,
    pub ready_clones: u32,
    /// A native Rust function (the `rust-hello` example built with
    /// fnhost-sdk) instead of the Python no-op.
    pub native: bool,
    /// Hibernation settings; `None` leaves the daemon's defaults.
    pub hibernate: Option<Hibernate>,
    /// MiB of Python objects its import builds (the import-heavy function,
    /// see `heavy.rs`); 0 for the no-op.
    pub heap_mib: u64,
}

/// A function's `hibernate_*` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hibernate {
    /// `hibernate_after_ms`; 0 = never.
    pub after_ms: u64,
    /// `hibernate_mode`: `"snapshot"` or `"reclaim"`.
    pub mode: &'static str,
    /// `hibernate_prefetch`.
    pub prefetch: bool,
    /// `hibernate_ready_clones`: ready clones kept while hibernated.
    pub ready_asleep: u32,
    /// `hibernate_share_pages`: share identical snapshot pages with copies
    /// of the same code.
    pub share_pages: bool,
}

/// The functions of the latency, churn and throughput suites.
pub const BENCH_FUNCTIONS: &[FunctionPool] = &[
    // Warm: served by pre-forked ready clones.
    FunctionPool {
        name: WARM_FN,
        zygotes: 1,
        ready_clones: 4,
        native: false,
        hibernate: None,
        heap_mib: 0,
    },
    // A warm zygote but no pre-forked clone: clone on request (also the
    // churn function: every request is one create + destroy).
    FunctionPool {
        name: ONDEMAND_FN,
        zygotes: 1,
        ready_clones: 0,
        native: false,
        hibernate: None,
        heap_mib: 0,
    },
    // Scale to zero: every request starts a zygote.
    FunctionPool {
        name: COLD_FN,
        zygotes: 0,
        ready_clones: 0,
        native: false,
        hibernate: None,
        heap_mib: 0,
    },
    // Throughput: enough ready clones for 16 concurrent connections.
    FunctionPool {
        name: TPUT_FN,
        zygotes: 1,
        ready_clones: 16,
        native: false,
        hibernate: None,
        heap_mib: 0,
    },
];

/// [`BENCH_FUNCTIONS`], and with `heavy_mib > 0` the same four pools of
/// the import-heavy function building that many MiB at import.
pub fn bench_functions(heavy_mib: u64) -> Vec<FunctionPool> {
    let mut out = BENCH_FUNCTIONS.to_vec();
    if heavy_mib > 0 {
        let names = [HEAVY_FN, HEAVY_ONDEMAND_FN, HEAVY_COLD_FN, HEAVY_TPUT_FN];
        out.extend(
            BENCH_FUNCTIONS
                .iter()
                .zip(names)
                .map(|(noop, name)| FunctionPool {
                    name,
                    heap_mib: heavy_mib,
                    ..*noop
                }),
        );
    }
    out
}

/// The code directory of a Python function: `noop` beside `heavy-<MiB>`.
fn python_code_dir(code_dir: &Path, heap_mib: u64) -> PathBuf {
    if heap_mib == 0 {
        code_dir.to_path_buf()
    } else {
        code_dir.with_file_name(format!("heavy-{heap_mib}"))
    }
}

/// The density suite's one function: a zygote and `clones` idle clones,
/// Python or native.
pub fn density_functions(clones: u32, native: bool) -> [FunctionPool; 1] {
    [FunctionPool {
        name: DENSITY_FN,
        zygotes: 1,
        ready_clones: clones,
        native,
        hibernate: None,
        heap_mib: 0,
    }]
}

/// The native function's binary, built next to the fnhost binary by
/// `cargo build --release --workspace`.
pub fn native_binary(fnhost: &Path) -> PathBuf {
    fnhost.with_file_name("rust-hello")
}

/// The benchmark config for a state directory, code directory and cgroup
/// root, serving `functions` (the no-op handler, or the import-heavy one
/// from `heavy-<MiB>` beside `code_dir`); `admin`
/// turns the admin API on (on a free loopback port).
pub fn config_toml(
    state_dir: &Path,
    code_dir: &Path,
    cgroup_root: &str,
    functions: &[FunctionPool],
    admin: bool,
) -> String {
    let native_code = toml_string(&code_dir.with_file_name("native").display().to_string());
    let functions: String = functions
        .iter()
        .map(|f| {
            let runtime = if f.native {
                format!("runtime = \"rust\"\ncode = {native_code}\ncommand = [\"/var/task/rust-hello\"]")
            } else {
                let code = toml_string(&python_code_dir(code_dir, f.heap_mib).display().to_string());
                let memory = if f.heap_mib > 0 {
                    format!("\nmemory_mb = {}", crate::heavy::memory_mb(f.heap_mib))
                } else {
                    String::new()
                };
                format!("runtime = \"python3\"\ncode = {code}\nhandler = \"handler.handler\"{memory}")
            };
            let hibernate = f.hibernate.map_or(String::new(), |h| {
                format!(
                    "hibernate_after_ms = {}\nhibernate_mode = {}\nhibernate_prefetch = {}\n\
                     hibernate_ready_clones = {}\nhibernate_share_pages = {}\n",
                    h.after_ms,
                    toml_string(h.mode),
                    h.prefetch,
                    h.ready_asleep,
                    h.share_pages
                )
            });
            format!(
                "\n[[functions]]\nname = \"{}\"\n{runtime}\nzygotes = {}\nready_clones = {}\n{hibernate}",
                f.name, f.zygotes, f.ready_clones
            )
        })
        .collect();
    let mut server = ServerSection::new(state_dir, cgroup_root);
    server.admin_listen = Some(if admin { "127.0.0.1:0" } else { "off" }.to_owned());
    format!(
        "# Written by fnhost-bench.\n{}\n[defaults]\nmemory_mb = 128\ntimeout_ms = 10000\nmax_concurrency = 64\n{functions}",
        server.to_toml()
    )
}

impl Daemon {
    /// Writes the config and starts `fnhost serve`; returns once the daemon
    /// has printed its address and answers `/healthz` with 200.
    pub async fn start(fnhost: &Path, functions: &[FunctionPool]) -> Result<Self> {
        Self::start_with(fnhost, functions, false).await
    }

    /// [`Daemon::start`], with the admin API on when `admin` is set (its
    /// address is then [`Daemon::admin_url`]).
    pub async fn start_with(
        fnhost: &Path,
        functions: &[FunctionPool],
        admin: bool,
    ) -> Result<Self> {
        let dir = Scratch::create("fnhost-bench-")
            .context("creating a temporary directory for the benchmark config")?;
        let code_dir = dir.subdir("noop")?;
        let state_dir = dir.subdir("state")?;
        if functions.iter().any(|f| f.native) {
            let source = native_binary(fnhost);
            let native_dir = dir.subdir("native")?;
            fs::copy(&source, native_dir.join("rust-hello")).with_context(|| {
                format!("copying the native example {} (build it with cargo build --release --workspace)", source.display())
            })?;
        }
        fs::write(code_dir.join("handler.py"), NOOP_HANDLER)
            .with_context(|| format!("writing {}", code_dir.join("handler.py").display()))?;
        let mut heaps: Vec<u64> = functions
            .iter()
            .map(|f| f.heap_mib)
            .filter(|&m| m > 0)
            .collect();
        heaps.sort_unstable();
        heaps.dedup();
        for mib in heaps {
            let heavy_dir = dir.subdir(&format!("heavy-{mib}"))?;
            fs::write(
                heavy_dir.join("handler.py"),
                crate::heavy::handler_source(mib),
            )
            .with_context(|| format!("writing {}", heavy_dir.join("handler.py").display()))?;
        }
        let cgroup_root = format!("fnhost-bench-{}", std::process::id());
        let config = dir.write(
            "fnhost.toml",
            &config_toml(&state_dir, &code_dir, &cgroup_root, functions, admin),
        )?;
        let launch = Launch::new(fnhost, &config)
            .name("fnhost-bench")
            .admin(if admin {
                AdminLine::Required
            } else {
                AdminLine::Ignore
            })
            .wait_healthy();
        // The launcher blocks (spawn, read stdout, poll /healthz).
        let inner = tokio::task::spawn_blocking(move || launch.start())
            .await
            .context("the daemon launcher panicked")??;
        eprintln!(
            "fnhost-bench: started {} serve (pid {})",
            fnhost.display(),
            inner.pid()
        );
        Ok(Self {
            inner,
            cgroup_root,
            state_dir,
            _dir: dir,
        })
    }

    pub fn url(&self) -> &str {
        self.inner.url()
    }

    /// The admin API's URL, when started with it.
    pub fn admin_url(&self) -> Option<&str> {
        self.inner.admin_url()
    }

    /// The admin API's bearer token the daemon generated.
    pub fn admin_token(&self) -> Option<&str> {
        self.inner.admin_token()
    }

    /// The daemon's `server.state_dir` (snapshots live under it).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The `server.cgroup_root` of the config: the daemon's cgroups are
    /// `<cgroup_root>/<function>.zygote` and `<cgroup_root>/<function>.s<n>`.
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// The daemon's pid (its zygotes and clones are its descendants).
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// The last WARN and ERROR lines of the daemon's log (up to 20),
    /// without terminal colours.
    pub fn stderr_warnings(&self) -> Vec<String> {
        self.inner.warnings()
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL. Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.inner.stop()
    }
}

/// The `fnhost` binary next to this executable (both land in
/// `target/<profile>/`).
pub fn default_fnhost_path() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the fnhost-bench executable")?;
    let dir = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    Ok(dir.join("fnhost"))
}

/// Checks that `path` exists before trying to run it.
pub fn check_fnhost_binary(path: &Path) -> Result<()> {
    if !path.is_file() {
        bail!(
            "fnhost binary not found at {}: build it with cargo build --release --workspace \
             (or pass --fnhost PATH, or --url URL to use a running daemon)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_three_functions_and_escapes_paths() {
        let toml = config_toml(
            Path::new("/tmp/x \"y\"/state"),
            Path::new("/tmp/x/noop"),
            "fnhost-bench-42",
            BENCH_FUNCTIONS,
            false,
        );
        assert!(
            toml.contains("state_dir = \"/tmp/x \\\"y\\\"/state\""),
            "{toml}"
        );
        assert!(toml.contains("listen = \"127.0.0.1:0\""));
        assert!(toml.contains("cgroup_root = \"fnhost-bench-42\""));
        assert_eq!(toml.matches("[[functions]]").count(), 4);
        assert!(toml.contains("name = \"noop\"\nruntime = \"python3\"\ncode = \"/tmp/x/noop\""));
        assert!(toml.contains("name = \"noop-cold\"\nruntime = \"python3\"\ncode = \"/tmp/x/noop\"\nhandler = \"handler.handler\"\nzygotes = 0\nready_clones = 0"));
    }

    #[test]
    fn config_turns_on_admin_and_hibernation_keys() {
        let functions = [FunctionPool {
            name: "hib",
            zygotes: 1,
            ready_clones: 1,
            native: false,
            hibernate: Some(Hibernate {
                after_ms: 300,
                mode: "reclaim",
                prefetch: false,
                ready_asleep: 0,
                share_pages: false,
            }),
            heap_mib: 0,
        }];
        let toml = config_toml(Path::new("/s"), Path::new("/c"), "r", &functions, true);
        assert!(toml.contains("admin_listen = \"127.0.0.1:0\""), "{toml}");
        assert!(
            toml.ends_with(
                "ready_clones = 1\nhibernate_after_ms = 300\nhibernate_mode = \"reclaim\"\n\
                 hibernate_prefetch = false\nhibernate_ready_clones = 0\n\
                 hibernate_share_pages = false\n"
            ),
            "{toml}"
        );
        let plain = config_toml(
            Path::new("/s"),
            Path::new("/c"),
            "r",
            BENCH_FUNCTIONS,
            false,
        );
        assert!(plain.contains("admin_listen = \"off\""));
        assert!(!plain.contains("hibernate"));
    }

    #[test]
    fn heavy_functions_get_their_own_code_and_memory() {
        assert_eq!(bench_functions(0).len(), 4);
        let functions = bench_functions(50);
        let toml = config_toml(
            Path::new("/s"),
            Path::new("/t/noop"),
            "r",
            &functions,
            false,
        );
        assert_eq!(toml.matches("[[functions]]").count(), 8);
        assert!(
            toml.contains(
                "name = \"heavy-cold\"\nruntime = \"python3\"\ncode = \"/t/heavy-50\"\n\
             handler = \"handler.handler\"\nmemory_mb = 228\nzygotes = 0\nready_clones = 0"
            ),
            "{toml}"
        );
        assert!(toml.contains("name = \"heavy-tput\""), "{toml}");
        assert_eq!(toml.matches("memory_mb = 228").count(), 4);
    }

    #[test]
    fn missing_binary_error_says_how_to_build() {
        let err = check_fnhost_binary(Path::new("/nonexistent/fnhost")).expect_err("missing");
        assert!(err
            .to_string()
            .contains("cargo build --release --workspace"));
    }

    #[tokio::test]
    async fn starts_on_the_bench_config_and_stops_with_sigterm() {
        let addr = fnhost_testkit::fake::healthy_server().expect("stand-in server");
        let dir = tempfile::tempdir().expect("tempdir");
        // Checks the generated config and the handler, prints the address
        // and admin lines, then idles until SIGTERM ends it.
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = serve ] && [ \"$2\" = --config ] && [ -f \"$3\" ] || exit 9\n\
             grep -q 'name = \"noop-cold\"' \"$3\" || exit 8\n\
             [ -f \"$(dirname \"$3\")/noop/handler.py\" ] || exit 7\n\
             echo 'fnhost: listening on http://{addr}'\necho 'fnhost: admin API on http://127.0.0.1:9'\n\
             exec sleep 60\n"
        );
        let fake = fnhost_testkit::fake::script(dir.path(), &script).expect("stand-in script");
        let mut daemon = Daemon::start_with(&fake, BENCH_FUNCTIONS, true)
            .await
            .expect("fake daemon starts");
        assert_eq!(daemon.url(), format!("http://{addr}"));
        assert_eq!(daemon.admin_url(), Some("http://127.0.0.1:9"));
        assert!(daemon.cgroup_root().starts_with("fnhost-bench-"));
        let status = daemon.stop().expect("stopped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGTERM)
        );
    }
}
