//! Deployment artifacts (deploy/), checked with the real tools: the
//! Kubernetes manifests against the Kubernetes schemas (kubernetes-validate),
//! the systemd unit with `systemd-analyze verify`, the nginx ingress with
//! `nginx -t` and a live routing run on loopback, and deploy/install.sh by
//! installing into a temporary prefix, starting the installed binary and
//! invoking a function. The tools come from scripts/install-deps.sh; a
//! missing one skips a test locally and fails it under CI=true.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The path of `tool` (absolute, or looked up in PATH and the sbin dirs), or
/// None after printing why the test is skipped; under CI=true a missing tool
/// is a failure (scripts/install-deps.sh installs every one).
fn require_tool(test: &str, tool: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = if tool.starts_with('/') {
        vec![PathBuf::from(tool)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
            .map(|dir| dir.join(tool))
            .collect()
    };
    if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(found);
    }
    // The shared gate: skip with the reason, or fail under CI=true.
    fnhost_testkit::skip(
        test,
        &format!("{tool} not found (run scripts/install-deps.sh)"),
    );
    None
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `fnhost check-config` on `toml`, after replacing the deployment's code
/// directory (/srv/fnhost/functions) with the repository's examples.
fn check_config(toml: &str, dir: &Path) {
    let examples = repo().join("examples/functions");
    let path = dir.join("fnhost.toml");
    std::fs::write(
        &path,
        toml.replace("/srv/fnhost/functions", &examples.display().to_string()),
    )
    .expect("write config");
    let out = run(Command::new(env!("CARGO_BIN_EXE_fnhost"))
        .args(["check-config", "--config"])
        .arg(&path));
    assert!(out.status.success(), "check-config: {}", text(&out));
}

/// The `fnhost.toml` literal block of the ConfigMap.
fn configmap_toml() -> String {
    let yaml = read(&deploy("kubernetes/configmap.yaml"));
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != "fnhost.toml: |")
        .skip(1);
    let mut out = String::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            out.push('\n');
        } else if let Some(rest) = line.strip_prefix("    ") {
            out.push_str(rest);
            out.push('\n');
        } else {
            break;
        }
    }
    assert!(
        out.contains("[server]"),
        "no fnhost.toml block in configmap.yaml"
    );
    out
}

#[test]
fn kubernetes_manifests_validate_against_the_kubernetes_schemas() {
    let test = "kubernetes_manifests_validate_against_the_kubernetes_schemas";
    let venv = repo().join(".venv/bin/kubernetes-validate");
    let validator = if venv.is_file() {
        Some(venv)
    } else {
        require_tool(test, "kubernetes-validate")
    };
    let Some(validator) = validator else { return };

    // Every resource listed in kustomization.yaml exists, and all of them
    // (each YAML document) validate, strictly (unknown fields are errors),
    // against the newest bundled schemas and an older supported release.
    let dir = deploy("kubernetes");
    let kustomization = read(&dir.join("kustomization.yaml"));
    let resources: Vec<PathBuf> = kustomization
        .lines()
        .skip_while(|l| !l.starts_with("resources:"))
        .skip(1)
        .take_while(|l| l.starts_with("  - "))
        .map(|l| dir.join(l.trim_start_matches("  - ").trim()))
        .collect();
    assert!(
        resources.len() >= 4,
        "kustomization.yaml lists {resources:?}"
    );
    for version in [None, Some("1.29.0")] {
        let mut cmd = Command::new(&validator);
        cmd.arg("--strict");
        if let Some(v) = version {
            cmd.args(["--kubernetes-version", v]);
        }
        let out = run(cmd.args(&resources));
        let report = text(&out);
        assert!(
            out.status.success(),
            "kubernetes-validate {version:?}: {report}"
        );
        assert!(
            !report.contains("ERROR") && !report.contains("WARN"),
            "{report}"
        );
        for kind in [
            "daemonset/fnhost",
            "configmap/fnhost-config",
            "service/fnhost",
            "namespace/fnhost",
        ] {
            assert!(
                report.contains(&format!("passed for resource {kind}")),
                "{kind} not validated: {report}"
            );
        }
    }

    // The validator does reject a broken manifest (so the pass above means
    // something): a misspelled field under --strict.
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        read(&dir.join("daemonset.yaml")).replace("hostPort:", "hostPortt:"),
    )
    .expect("write");
    let out = run(Command::new(&validator).arg("--strict").arg(&bad));
    assert!(
        !out.status.success(),
        "a misspelled field must fail: {}",
        text(&out)
    );

    // kustomize's rendering (namespace, image override) validates too, when
    // kubectl is on this machine (it is not a Debian package: optional).
    if let Some(kubectl) = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    {
        let out = run(Command::new(kubectl).arg("kustomize").arg(&dir));
        assert!(out.status.success(), "kubectl kustomize: {}", text(&out));
        let rendered = tmp.path().join("rendered.yaml");
        std::fs::write(&rendered, &out.stdout).expect("write");
        let rendered_text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            rendered_text.contains("namespace: fnhost"),
            "{rendered_text}"
        );
        let out = run(Command::new(&validator).arg("--strict").arg(&rendered));
        assert!(
            out.status.success(),
            "rendered kustomization: {}",
            text(&out)
        );
    } else {
        eprintln!("{test}: kubectl absent, kustomize rendering not checked");
    }

    // The ConfigMap's fnhost.toml is the container image's, and fnhost
    // accepts it.
    let toml = configmap_toml();
    let image_toml = read(&deploy("container/fnhost.toml"));
    assert!(
        image_toml.ends_with(&toml),
        "deploy/container/fnhost.toml must end with the ConfigMap's fnhost.toml"
    );
    check_config(&toml, tmp.path());
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let test = "systemd_unit_passes_systemd_analyze_verify";
    let Some(analyze) = require_tool(test, "systemd-analyze") else {
        return;
    };
    let version: u32 =
        String::from_utf8_lossy(&run(Command::new(&analyze).arg("--version")).stdout)
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("systemd version");

    // verify checks that ExecStart's binary exists: point it at the freshly
    // built one (the installed path would be /usr/local/bin/fnhost).
    let tmp = tempfile::tempdir().expect("tempdir");
    let unit = tmp.path().join("fnhost.service");
    let original = read(&deploy("systemd/fnhost.service"));
    assert!(
        original.contains("ExecStart=/usr/local/bin/fnhost serve --config /etc/fnhost/fnhost.toml")
    );
    std::fs::write(
        &unit,
        original.replace("/usr/local/bin/fnhost", env!("CARGO_BIN_EXE_fnhost")),
    )
    .expect("write unit");
    // Works without systemd as PID 1 (containers, this VM): verify only
    // loads and checks the unit.
    let out = run(Command::new(&analyze)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .env("SYSTEMD_LOG_COLOR", "0"));
    let report = text(&out);
    assert!(out.status.success(), "systemd-analyze verify: {report}");
    // No warning at all, except DelegateSubgroup= on systemd < 254, which
    // ignores it (documented in the unit and docs/operations.md).
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let known =
            version < 254 && line.contains("Unknown key") && line.contains("DelegateSubgroup");
        assert!(
            known,
            "systemd-analyze verify (systemd {version}) warned: {line}\n{report}"
        );
    }
    for key in [
        "Delegate=yes",
        "KillMode=mixed",
        "OOMPolicy=continue",
        "TasksMax=infinity",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(original.lines().any(|l| l == key), "unit lacks {key}");
    }
    for key in [
        "RestrictNamespaces=",
        "SystemCallFilter=",
        "ProtectControlGroups=",
        "PrivateDevices=",
    ] {
        assert!(
            !original.lines().any(|l| l.starts_with(key)),
            "unit must not set {key} (breaks sandboxes)"
        );
    }

    // The /etc example config validates.
    check_config(&read(&deploy("systemd/fnhost.toml")), tmp.path());
}

/// A loopback HTTP server answering every request with `name`: a stand-in
/// fnhost node for the routing test. Serves until the process exits.
fn fake_node(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        if header.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = header.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                        name.len()
                    );
                    if stream.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child (nginx's master; it stops its workers).
        unsafe { libc::kill(self.0.id() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn nginx_ingress_config_tests_and_hashes_function_names_onto_nodes() {
    let test = "nginx_ingress_config_tests_and_hashes_function_names_onto_nodes";
    let Some(nginx) = require_tool(test, "nginx") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let prefix = tmp.path();
    std::fs::create_dir_all(prefix.join("logs")).expect("logs dir");
    let original = read(&deploy("routing/nginx.conf"));
    assert!(original.contains("hash $fnhost_function consistent;"));
    // Only the pid and log paths change: nothing outside the temp dir.
    let relocate = |conf: &str| {
        conf.replace(
            "/run/nginx-fnhost.pid",
            &prefix.join("nginx.pid").display().to_string(),
        )
        .replace(
            "/var/log/nginx/",
            &format!("{}/", prefix.join("logs").display()),
        )
    };
    let conf = prefix.join("nginx.conf");
    std::fs::write(&conf, relocate(&original)).expect("write conf");
    let out = run(Command::new(&nginx)
        .arg("-t")
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&conf));
    assert!(out.status.success(), "nginx -t: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("test is successful"),
        "{}",
        text(&out)
    );

    // The same config, live on loopback: three stand-in nodes replace the
    // documentation addresses, the ingress listens on a free port.
    let nodes = [
        fake_node("node-a"),
        fake_node("node-b"),
        fake_node("node-c"),
    ];
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut live =
        relocate(&original).replace("listen 8000;", &format!("listen 127.0.0.1:{port};"));
    for (doc, node) in ["192.0.2.11:8080", "192.0.2.12:8080", "192.0.2.13:8080"]
        .iter()
        .zip(nodes)
    {
        live = live.replace(doc, &node.to_string());
    }
    std::fs::write(&conf, live).expect("write conf");
    let child = Command::new(&nginx)
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(prefix.join("logs/stderr.log")).expect("stderr log"))
        .spawn()
        .expect("start nginx");
    let _nginx = KillOnDrop(child);
    let ingress: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(
            ingress
        )
        .is_ok()),
        "nginx did not listen; stderr and error log:\n{}\n{}",
        std::fs::read_to_string(prefix.join("logs/stderr.log")).unwrap_or_default(),
        std::fs::read_to_string(prefix.join("logs/fnhost-error.log")).unwrap_or_default()
    );

    let served = |path: &str| {
        let r = http(ingress, "POST", path, b"{}");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(
            r.header("X-Fnhost-Upstream").is_some(),
            "{path}: no X-Fnhost-Upstream"
        );
        r.text()
    };
    let mut used = std::collections::BTreeSet::new();
    for i in 0..24 {
        let name = format!("fn-{i}");
        let native = served(&format!("/v1/functions/{name}/invoke"));
        // Same node every time, and for the Lambda API of the same function.
        assert_eq!(
            served(&format!("/v1/functions/{name}/invoke")),
            native,
            "{name} moved between requests"
        );
        assert_eq!(
            served(&format!("/2015-03-31/functions/{name}/invocations")),
            native,
            "{name}: Lambda API hashed differently from the native one"
        );
        used.insert(native);
    }
    assert_eq!(
        used.len(),
        3,
        "24 functions should spread over all 3 nodes: {used:?}"
    );
    assert_eq!(http(ingress, "GET", "/healthz", b"").status, 200);
}

#[test]
fn envoy_example_parses_and_hashes_both_apis_on_the_function_name() {
    // No Envoy binary is installable from Debian/PyPI/npm, so `envoy --mode
    // validate` cannot run here: check what can be checked without it.
    let yaml = read(&deploy("routing/envoy.yaml"));
    for needle in [
        "lb_policy: RING_HASH",
        "header_name: \":path\"",
        "substitution: \"\\\\1\\\\2\"",
        "path: /healthz",
    ] {
        assert!(yaml.contains(needle), "envoy.yaml lacks {needle}");
    }
    assert!(!yaml.contains('\t'), "YAML must not contain tabs");
}

/// A daemon started from the installed binary (not CARGO_BIN_EXE_fnhost);
/// cgroups it leaves are removed on drop (the test asserts on them itself).
struct Installed {
    inner: fnhost_testkit::Daemon,
    addr: SocketAddr,
}

impl Installed {
    fn start(binary: &Path, config: &Path, cgroup_root: &str, stderr: PathBuf) -> Installed {
        let inner = fnhost_testkit::Launch::new(binary, config)
            .name("fnhost-test")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("FNHOST_LOG", "info")
            .env_remove("FNHOST_SHIM_LIB")
            .log(fnhost_testkit::LogTo::File(stderr))
            .startup_timeout(Duration::from_secs(120))
            .stop_grace(Duration::from_secs(20))
            .remove_leftover_cgroups(cgroup_root)
            .start()
            .unwrap_or_else(|e| panic!("installed fnhost did not start: {e:#}"));
        Installed {
            addr: inner.addr(),
            inner,
        }
    }

    fn log(&self) -> String {
        self.inner.log_text()
    }

    fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// SIGTERM, then wait (SIGKILL after 20 s).
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.inner.stop()
    }
}

#[test]
fn install_script_installs_a_host_that_serves_and_stops_clean() {
    let test = "install_script_installs_a_host_that_serves_and_stops_clean";
    if !require_root(test) {
        return;
    }
    let built = Path::new(env!("CARGO_BIN_EXE_fnhost"))
        .parent()
        .expect("target dir")
        .to_path_buf();
    for artifact in ["libfnhost_shim.so", "fnhost-reaper"] {
        assert!(
            built.join(artifact).is_file(),
            "{} has no {artifact}: build the workspace first (cargo build --workspace)",
            built.display()
        );
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    // Sandboxes run as unprivileged ids (user namespace): every directory
    // above server.state_dir must be traversable, as /var/lib is.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    // install.sh into `root`, from the freshly built binaries.
    let install_sh = |extra: &[&str]| {
        run(Command::new("bash")
            .arg(deploy("install.sh"))
            .args(extra)
            .arg("--prefix")
            .arg(root.join("usr"))
            .arg("--config-dir")
            .arg(root.join("etc/fnhost"))
            .arg("--state-dir")
            .arg(root.join("var/lib/fnhost"))
            .arg("--functions-dir")
            .arg(root.join("srv/functions"))
            .arg("--no-systemd")
            .arg("--from")
            .arg(&built))
    };
    let install = || {
        let out = install_sh(&[]);
        assert!(out.status.success(), "install.sh: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // --dry-run changes nothing.
    let out = install_sh(&["--dry-run"]);
    assert!(out.status.success(), "install.sh --dry-run: {}", text(&out));
    assert!(
        !root.join("usr").exists() && !root.join("etc").exists(),
        "--dry-run wrote files"
    );

    let first = install();
    let bin = root.join("usr/bin/fnhost");
    let lib = root.join("usr/lib/fnhost");
    assert_eq!(
        std::fs::read_link(&bin).expect("symlink"),
        lib.join("fnhost")
    );
    assert!(lib.join("libfnhost_shim.so").is_file(), "{first}");
    assert!(lib.join("fnhost-reaper").is_file(), "{first}");
    let config = root.join("etc/fnhost/fnhost.toml");
    let state = root.join("var/lib/fnhost");
    assert_eq!(
        std::fs::metadata(&config)
            .expect("config")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&state)
            .expect("state dir")
            .permissions()
            .mode()
            & 0o777,
        0o711
    );
    let installed_config = read(&config);
    assert!(
        installed_config.contains(&format!("state_dir = \"{}\"", state.display())),
        "{installed_config}"
    );

    // Idempotent: a second run changes nothing and keeps the config, even
    // an edited one.
    std::fs::write(
        &config,
        installed_config.replace("ready_clones = 2", "ready_clones = 1"),
    )
    .expect("edit config");
    let second = install();
    assert!(
        second.contains("up to date:") && second.contains("kept existing"),
        "{second}"
    );
    assert!(
        !second.contains("installed /"),
        "second run reinstalled something: {second}"
    );
    assert!(
        read(&config).contains("ready_clones = 1"),
        "install.sh overwrote an edited config"
    );

    // Run the installed host (through the symlink: the shim is found next to
    // the resolved binary) on the installed config; only what would collide
    // with other daemons on this machine changes.
    let cgroup_root = unique_cgroup_root();
    let edited = read(&config)
        .replace(
            "cgroup_root = \"fnhost\"",
            &format!("cgroup_root = \"{cgroup_root}\""),
        )
        .replace(
            "admin_listen = \"unix:/run/fnhost/admin.sock\"",
            "admin_listen = \"off\"",
        )
        .replace("shutdown_grace_ms = 10000", "shutdown_grace_ms = 2000");
    assert!(
        edited.contains(&cgroup_root) && edited.contains("admin_listen = \"off\""),
        "{edited}"
    );
    std::fs::write(&config, edited).expect("write config");
    let mut daemon = Installed::start(&bin, &config, &cgroup_root, root.join("stderr.log"));

    let r = http(
        daemon.addr,
        "POST",
        "/v1/functions/hello/invoke",
        br#"{"name":"deploy"}"#,
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), daemon.log());
    assert_eq!(r.json()["message"], "hello, deploy", "{}", r.text());
    let r = http(
        daemon.addr,
        "POST",
        "/2015-03-31/functions/hello/invocations",
        br#"{"name":"lambda"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"], "hello, lambda", "{}", r.text());
    assert_eq!(http(daemon.addr, "GET", "/healthz", b"").status, 200);
    let metrics = http(daemon.addr, "GET", "/metrics", b"").text();
    assert!(metrics.contains("fnhost_invocations_total"), "{metrics}");
    assert!(
        !cgroup_dirs(&cgroup_root).is_empty(),
        "the daemon made no cgroups under {cgroup_root}"
    );
    assert!(
        state.read_dir().expect("state dir").next().is_some(),
        "nothing in the installed state dir"
    );

    // SIGTERM: drains, stops every sandbox, removes its cgroups.
    let pid = daemon.pid();
    let children = descendants(pid);
    let status = daemon.stop().expect("exit status");
    assert!(
        status.success(),
        "fnhost exited with {status}; log:\n{}",
        daemon.log()
    );
    let left = cgroup_dirs(&cgroup_root);
    assert!(left.is_empty(), "cgroups left after SIGTERM: {left:?}");
    let alive: Vec<u32> = children
        .into_iter()
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(alive.is_empty(), "processes left after SIGTERM: {alive:?}");
}

#[test]
fn dockerfile_copies_what_the_repository_has() {
    // No Docker engine here: the image cannot be built in CI. Check what a
    // build would trip over first: every COPY source from the build context
    // exists and is not excluded by .dockerignore, and the stages are right.
    let dockerfile = read(&deploy("container/Dockerfile"));
    let ignore = read(&repo().join(".dockerignore"));
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "multi-stage: {froms:?}");
    assert!(
        froms[1].starts_with("FROM debian:bookworm-slim"),
        "{froms:?}"
    );
    assert!(dockerfile.contains("cargo build --release --locked --workspace"));
    let mut sources = 0;
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        for src in &words[..words.len() - 1] {
            if *src == "." {
                continue;
            }
            assert!(repo().join(src).exists(), "COPY source {src} missing");
            let top = src.split('/').next().expect("component");
            assert!(
                !ignore.lines().any(|l| l.trim_end_matches('/') == top),
                ".dockerignore excludes {src}"
            );
            sources += 1;
        }
    }
    assert!(sources >= 3, "COPY lines not found");
    for ignored in ["target/", ".git/", ".venv/"] {
        assert!(
            ignore.lines().any(|l| l == ignored),
            ".dockerignore lacks {ignored}"
        );
    }
    let entrypoint = deploy("container/entrypoint.sh");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&entrypoint)
        .expect("entrypoint")
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "entrypoint.sh must be executable");
    let out = run(Command::new("sh").arg("-n").arg(&entrypoint));
    assert!(out.status.success(), "sh -n entrypoint.sh: {}", text(&out));
}
