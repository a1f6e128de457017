//! The baselines: start-to-exit time of `crun run`, `runc run`,
//! `bwrap --unshare-all` and plain host exec of the same work — the Python
//! no-op or a Node function, see [`work`] — over a root filesystem that
//! mirrors fnhost's: the skeleton (merged-/usr symlinks, an /etc subset, the
//! function's code at /var/task) plus a read-only bind of the host's /usr.
//!
//! The harness re-executes itself as a worker in a private mount namespace:
//! the /usr bind and the unmounted `/sys/fs/cgroup/unified` (crun 1.8 refuses
//! hybrid cgroups) exist only there and vanish with the worker. The parent
//! removes the temporary directory and the runtimes' cgroups afterwards.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::stats::{LatencyHistogram, Percentiles};

mod rootfs;
pub mod work;

use rootfs::{bind_readonly, build_rootfs, umount};
pub use work::{Language, Work, PYTHON};

/// The host exec baseline's program: the work's interpreter.
const INTERPRETER: &str = "(interpreter)";

/// The baselines, in report order: name, program, Debian package (the
/// host exec's are the work's).
pub const BASELINES: &[(&str, &str, &str)] = &[
    (CRUN_RUN, "crun", "crun"),
    ("runc run", "runc", "runc"),
    ("bwrap --unshare-all", "bwrap", "bubblewrap"),
    (HOST_EXEC, INTERPRETER, INTERPRETER),
];

/// The name of the `crun run` baseline.
pub const CRUN_RUN: &str = "crun run";

/// The name of the host exec baseline (the interpreter, no sandbox).
pub const HOST_EXEC: &str = "host exec";

/// The environment of every run (and inside every container): the base
/// environment fnhost's zygotes start with (`fnhost_zygote`'s
/// `zygote_spec`), nothing inherited from the harness. An inherited
/// variable can change the work: `NODE_EXTRA_CA_CERTS` alone makes `node`
/// parse a CA bundle at start-up (tens of milliseconds).
const WORK_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("LANG", "C.UTF-8"),
    ("HOME", "/tmp"),
];

/// Untimed runs of each baseline before the timed ones.
const WARMUP_RUNS: u64 = 2;

/// A baseline gives up after this many consecutive failures.
const MAX_CONSECUTIVE_FAILURES: u32 = 3;

/// How a baseline fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    NotInstalled,
    Failed,
}

/// What the worker measured for one baseline (start-to-exit, microseconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawBaseline {
    pub name: String,
    pub status: Status,
    pub samples_us: Vec<u64>,
    /// The first failure, or how to install a missing program.
    pub detail: Option<String>,
}

/// One baseline in the report.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineSummary {
    pub name: String,
    pub status: Status,
    #[serde(flatten)]
    pub latency: Option<Percentiles>,
    pub detail: Option<String>,
    /// Latency at quantiles 0.00, 0.01, ..., 1.00 (for the CDF chart).
    #[serde(skip)]
    pub cdf_ms: Vec<f64>,
}

/// Runs every baseline of `work` `runs` times (interleaved) in a
/// re-executed worker; `exe` is this program.
pub fn run(exe: &Path, runs: u64, work: &Work) -> Result<Vec<BaselineSummary>> {
    let dir = tempfile::Builder::new()
        .prefix("fnhost-bench-baseline-")
        .tempdir()
        .context("creating the baseline directory")?;
    eprintln!(
        "fnhost-bench: baselines ({}): {runs} runs each of {}",
        work.describe(),
        BASELINES.iter().map(|b| b.0).collect::<Vec<_>>().join(", ")
    );
    let mut cmd = Command::new(exe);
    cmd.arg("--baseline-worker")
        .arg(dir.path())
        .arg("--baseline-runs")
        .arg(runs.to_string())
        .args(work.cli_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: runs in the forked child before exec: two raw syscalls with
    // constant arguments and an errno read; no allocation, no locks.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            let rc = libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = cmd
        .output()
        .context("running the baseline worker in a private mount namespace (needs root)");
    let cgroup_leftovers = remove_cgroups(&cgroup_parent());
    let output = output?;
    if !output.status.success() {
        bail!("the baseline worker failed ({})", output.status);
    }
    if let Err(err) = cgroup_leftovers {
        eprintln!("fnhost-bench: baselines: removing runtime cgroups: {err:#}");
    }
    let raw: Vec<RawBaseline> =
        serde_json::from_slice(&output.stdout).context("parsing the baseline worker's output")?;
    Ok(raw.iter().map(summarize).collect())
}

fn summarize(raw: &RawBaseline) -> BaselineSummary {
    let mut hist = LatencyHistogram::default();
    for us in &raw.samples_us {
        hist.record(std::time::Duration::from_micros(*us));
    }
    let has_samples = !raw.samples_us.is_empty();
    BaselineSummary {
        name: raw.name.clone(),
        status: raw.status,
        latency: has_samples.then(|| hist.summary()),
        detail: raw.detail.clone(),
        cdf_ms: if has_samples {
            hist.cdf_ms()
        } else {
            Vec::new()
        },
    }
}

/// The runtimes' cgroup (`cgroupsPath` of the bundle), relative to each
/// hierarchy: one per harness run, reused by its sequential containers.
fn cgroup_parent() -> String {
    format!("fnhost-bench-baseline-{}", parent_pid())
}

/// The harness's pid: the worker's parent, or this process in the parent.
fn parent_pid() -> u32 {
    if std::env::args_os().any(|a| a == "--baseline-worker") {
        std::os::unix::process::parent_id()
    } else {
        std::process::id()
    }
}

/// Removes `/sys/fs/cgroup/*/<name>` and everything under it (runtimes
/// remove their container cgroups on delete; this catches what is left).
fn remove_cgroups(name: &str) -> Result<()> {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return Ok(());
    };
    for hierarchy in hierarchies.flatten() {
        let top = hierarchy.path().join(name);
        if top.is_dir() {
            rmdir_tree(&top).with_context(|| format!("removing cgroup {}", top.display()))?;
        }
    }
    Ok(())
}

/// cgroupfs directories are removed with rmdir, children first.
fn rmdir_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)?.flatten() {
        if entry.file_type()?.is_dir() {
            rmdir_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// The worker: builds the root and bundle of `work` under `dir`, measures,
/// prints the results as JSON on stdout. Runs in its own mount namespace.
pub fn worker_main(dir: &Path, runs: u64, work: &Work) -> Result<()> {
    let rootfs = dir.join("rootfs");
    let binds = build_rootfs(&rootfs, work)?;
    for (source, target) in &binds {
        bind_readonly(source, target)?;
    }
    // crun 1.8 refuses hybrid cgroups; without the cgroup2 mount it sees v1.
    let _ = umount(Path::new("/sys/fs/cgroup/unified"));
    let bundle = dir.join("bundle");
    fs::create_dir_all(&bundle).with_context(|| format!("creating {}", bundle.display()))?;
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&oci_config(&rootfs, &cgroup_parent(), work))?,
    )
    .context("writing the OCI bundle's config.json")?;

    let mut runners: Vec<Runner> = BASELINES
        .iter()
        .map(|(name, program, package)| Runner::new(name, program, package, dir, &rootfs, work))
        .collect();
    for _ in 0..WARMUP_RUNS {
        for runner in &mut runners {
            runner.run_once(false);
        }
    }
    for _ in 0..runs {
        for runner in &mut runners {
            runner.run_once(true);
        }
    }
    let results: Vec<RawBaseline> = runners.into_iter().map(Runner::finish).collect();
    for (_, target) in binds.iter().rev() {
        let _ = umount(target);
    }
    let _ = remove_cgroups(&cgroup_parent());
    println!("{}", serde_json::to_string(&results)?);
    Ok(())
}

/// A minimal OCI runtime config: the work as uid 0 in new
/// pid/mount/ipc/uts/network namespaces (no user namespace) on a read-only
/// root, with /proc, a /dev tmpfs and a /tmp tmpfs.
fn oci_config(rootfs: &Path, cgroup: &str, work: &Work) -> serde_json::Value {
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_KILL",
    ];
    let mut args = vec![work.interpreter().to_owned()];
    args.extend(work.args("/var/task"));
    let env: Vec<String> = WORK_ENV.iter().map(|(k, v)| format!("{k}={v}")).collect();
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": "/var/task",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": "fnhost-bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "size=65536k"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "mount"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "network"}
            ],
            "cgroupsPath": format!("/{cgroup}/ct")
        }
    })
}

/// Finds `program` on PATH (plus the sbin directories root has).
fn which(program: &str) -> Option<PathBuf> {
    if program.starts_with('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file());
    found
}

/// The arguments of one run of `program` (after the program itself), and
/// the OCI runtime's state directory when it is one. Anything but an OCI
/// runtime or bwrap is the work's interpreter, run on the host.
fn command_args(
    program: &str,
    dir: &Path,
    rootfs: &Path,
    work: &Work,
) -> (Vec<String>, Option<PathBuf>) {
    match program {
        "crun" | "runc" => {
            let root = dir.join(format!("state-{program}"));
            let args = vec![
                "--root".to_owned(),
                root.display().to_string(),
                "run".to_owned(),
                "--bundle".to_owned(),
                dir.join("bundle").display().to_string(),
            ];
            (args, Some(root))
        }
        "bwrap" => {
            let mut args: Vec<String> = [
                "--unshare-all",
                "--ro-bind",
                &rootfs.display().to_string(),
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--chdir",
                "/var/task",
                work.interpreter(),
            ]
            .map(str::to_owned)
            .to_vec();
            args.extend(work.args("/var/task"));
            (args, None)
        }
        _ => (work.args(&format!("{}/var/task", rootfs.display())), None),
    }
}

/// Runs one baseline repeatedly and collects its timings.
struct Runner {
    raw: RawBaseline,
    /// The program and the arguments of one run (`None`: not installed).
    command: Option<(PathBuf, Vec<String>)>,
    /// The OCI runtime's state directory, for `delete -f`.
    runtime_root: Option<PathBuf>,
    runs: u64,
    consecutive_failures: u32,
}

impl Runner {
    fn new(
        name: &str,
        program: &str,
        package: &str,
        dir: &Path,
        rootfs: &Path,
        work: &Work,
    ) -> Self {
        let (program, package) = if program == INTERPRETER {
            (work.interpreter(), work.package())
        } else {
            (program, package)
        };
        let binary = which(program);
        let mut raw = RawBaseline {
            name: name.to_owned(),
            status: Status::Ok,
            samples_us: Vec::new(),
            detail: None,
        };
        let Some(binary) = binary else {
            raw.status = Status::NotInstalled;
            raw.detail = Some(format!(
                "{program} not installed: run FNHOST_BENCH_DEPS=1 scripts/install-deps.sh \
                 (apt-get install {package})"
            ));
            return Self {
                raw,
                command: None,
                runtime_root: None,
                runs: 0,
                consecutive_failures: 0,
            };
        };
        let (args, runtime_root) = command_args(program, dir, rootfs, work);
        Self {
            raw,
            command: Some((binary, args)),
            runtime_root,
            runs: 0,
            consecutive_failures: 0,
        }
    }

    fn run_once(&mut self, timed: bool) {
        let Some((binary, args)) = &self.command else {
            return;
        };
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
            return;
        }
        self.runs += 1;
        let id = format!("fnhost-bench-{}-{}", parent_pid(), self.runs);
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .env_clear()
            .envs(WORK_ENV.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.runtime_root.is_some() {
            cmd.arg(&id);
        }
        let started = Instant::now();
        let result = cmd.output();
        let elapsed = started.elapsed();
        if let Some(root) = &self.runtime_root {
            // Untimed: `run` already removed an exited container; this
            // catches one that failed half-way.
            let _ = Command::new(binary)
                .arg("--root")
                .arg(root)
                .args(["delete", "-f", &id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        match result {
            Ok(out) if out.status.success() => {
                self.consecutive_failures = 0;
                if timed {
                    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                    self.raw.samples_us.push(us);
                }
            }
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                self.fail(format!("{}: {}", out.status, stderr.trim()));
            }
            Err(err) => self.fail(format!("cannot start {}: {err}", binary.display())),
        }
    }

    fn fail(&mut self, detail: String) {
        self.consecutive_failures += 1;
        if self.raw.detail.is_none() {
            eprintln!("fnhost-bench: baseline {} failed: {detail}", self.raw.name);
            self.raw.detail = Some(detail);
        }
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
            self.raw.status = Status::Failed;
        }
    }

    fn finish(self) -> RawBaseline {
        self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node work running `code` (also the rootfs module's tests').
    pub(super) fn node_work(code: &Path) -> Work {
        Work::Node {
            code: code.to_owned(),
        }
    }

    #[test]
    fn oci_config_is_minimal_and_readonly() {
        let cfg = oci_config(
            Path::new("/tmp/r"),
            "fnhost-bench-baseline-1",
            &Work::Python,
        );
        assert_eq!(cfg["root"]["readonly"], true);
        assert_eq!(cfg["root"]["path"], "/tmp/r");
        let ns: Vec<&str> = cfg["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .map(|n| n["type"].as_str().expect("type"))
            .collect();
        assert_eq!(ns, ["pid", "mount", "ipc", "uts", "network"]);
        assert_eq!(cfg["process"]["args"][0], PYTHON);
        assert_eq!(cfg["process"]["args"][1], "-B");
        assert_eq!(cfg["linux"]["cgroupsPath"], "/fnhost-bench-baseline-1/ct");
    }

    #[test]
    fn oci_config_runs_node_on_the_task_dir() {
        let work = node_work(Path::new("/tmp/fn"));
        let cfg = oci_config(Path::new("/tmp/r"), "fnhost-bench-baseline-1", &work);
        let args: Vec<&str> = cfg["process"]["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string"))
            .collect();
        assert_eq!(
            args,
            [work::NODE, "-e", work::node_script("/var/task").as_str()]
        );
        assert_eq!(cfg["process"]["cwd"], "/var/task");
        // The environment fnhost's zygotes start with, and nothing else.
        assert_eq!(
            cfg["process"]["env"],
            serde_json::json!([
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "LANG=C.UTF-8",
                "HOME=/tmp"
            ])
        );
        assert_eq!(cfg["root"]["readonly"], true);
    }

    #[test]
    fn runners_run_the_work_in_the_root_or_on_the_host() {
        let (dir, rootfs) = (Path::new("/tmp/d"), Path::new("/tmp/d/rootfs"));
        let work = node_work(Path::new("/tmp/fn"));
        let (crun, state) = command_args("crun", dir, rootfs, &work);
        assert_eq!(
            crun,
            [
                "--root",
                "/tmp/d/state-crun",
                "run",
                "--bundle",
                "/tmp/d/bundle"
            ]
        );
        assert_eq!(state, Some(PathBuf::from("/tmp/d/state-crun")));
        let (bwrap, state) = command_args("bwrap", dir, rootfs, &work);
        assert_eq!(state, None);
        assert_eq!(
            bwrap[..4],
            ["--unshare-all", "--ro-bind", "/tmp/d/rootfs", "/"]
        );
        assert_eq!(
            bwrap[10..],
            [
                work::NODE.to_owned(),
                "-e".to_owned(),
                work::node_script("/var/task")
            ]
        );
        // On the host the interpreter loads the root's copy of the code.
        let (host, _) = command_args(work::NODE, dir, rootfs, &work);
        assert_eq!(
            host,
            ["-e".to_owned(), work::node_script("/tmp/d/rootfs/var/task")]
        );
        let (host, _) = command_args(PYTHON, dir, rootfs, &Work::Python);
        assert_eq!(host[..2], ["-B", "-c"]);
        assert!(host[2].contains("\"/tmp/d/rootfs/var/task\""), "{host:?}");
    }

    #[test]
    fn missing_program_is_reported_with_install_hint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut runner = Runner::new(
            "nope",
            "no-such-runtime-x",
            "pkg",
            dir.path(),
            dir.path(),
            &Work::Python,
        );
        runner.run_once(true);
        let raw = runner.finish();
        assert_eq!(raw.status, Status::NotInstalled);
        assert!(raw
            .detail
            .expect("detail")
            .contains("scripts/install-deps.sh"));
    }
}
