//! Adversarial suite: hostile code inside real sandboxes. Each test asserts
//! that the attempt is denied (or contained by a limit) from the inside, and
//! that nothing outside changed: the daemon serves the next invocation, the
//! layers on the host are intact, no process or cgroup is left behind.
//!
//! The probe binary (crates/fnhost-probe) is copied into a temporary code
//! directory next to the hostile handlers (tests/functions/hostile), so it
//! runs inside the sandbox from /var/task.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A code directory holding the hostile handlers and the probe binary.
fn hostile_code() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/functions/hostile");
    std::fs::copy(fixtures.join("handler.py"), dir.path().join("handler.py"))
        .expect("copy handler");
    // Cargo builds every workspace binary into the same directory, but only
    // exports CARGO_BIN_EXE_ for this package's own.
    let probe = Path::new(env!("CARGO_BIN_EXE_fnhost")).with_file_name("fnhost-probe");
    assert!(
        probe.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        probe.display()
    );
    std::fs::copy(&probe, dir.path().join("fnhost-probe")).expect("copy probe");
    dir
}

/// One `[[functions]]` entry on the hostile code.
/// A function of the hostile fixture. One zygote, never scaled out: some
/// tests compare the daemon's process count with a baseline.
fn function(code: &Path, name: &str, handler: &str, extra: &str) -> String {
    python_function(
        name,
        code,
        &format!("handler.{handler}"),
        &format!("max_instances = 1\n{extra}"),
    )
}

/// Every regular file under `dir` with its size and contents hash stand-in
/// (size + modification time), to show a tree did not change.
fn tree_state(dir: &Path) -> BTreeMap<PathBuf, (u64, i64, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            }
            out.insert(
                e.path(),
                (
                    meta.len(),
                    meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
                    meta.mode(),
                ),
            );
        }
    }
    out
}

/// Layer store and runtime state of a daemon, excluding per-run scratch.
fn layers_state(daemon: &Daemon) -> BTreeMap<PathBuf, (u64, i64, u32)> {
    let state = daemon.dir.path().join("state");
    let mut all = tree_state(&state);
    all.retain(|p, _| p.components().any(|c| c.as_os_str() == "layers"));
    all
}

fn ok_json(daemon: &Daemon, function: &str, body: &str) -> Value {
    let r = daemon.invoke(function, body);
    assert_eq!(
        r.status,
        200,
        "{function}: {}\n{}",
        r.text(),
        daemon.stderr()
    );
    r.json()
}

/// The daemon and a fresh invocation still work.
fn still_serving(daemon: &Daemon, function: &str) {
    assert_eq!(http(daemon.addr, "GET", "/healthz", b"").status, 200);
    let r = daemon.invoke(function, r#"{"sleep": 0}"#);
    assert_eq!(
        r.status,
        200,
        "after the attack, {function} failed: {}\n{}",
        r.text(),
        daemon.stderr()
    );
}

/// Attacks whose success inside the sandbox is by design (the write lands in
/// the clone's private writable layer); the test checks the outside instead.
const CONTAINED: &[&str] = &["write_code_layer"];

#[test]
fn probe_every_attack_is_denied() {
    if !require_root("probe_every_attack_is_denied") {
        return;
    }
    let code = hostile_code();
    let functions = format!(
        "{}{}",
        function(code.path(), "probe", "probe", "timeout_ms = 60000"),
        function(code.path(), "victim", "tmp", "timeout_ms = 60000")
    );
    let daemon = Daemon::start(&functions);
    let layers_before = layers_state(&daemon);
    // Another invocation running at the same time: its clone is a target too.
    let addr = daemon.addr;
    let victim = std::thread::spawn(move || {
        http(
            addr,
            "POST",
            "/v1/functions/victim/invoke",
            br#"{"sleep": 3}"#,
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    // Host pids: the daemon, its zygotes and clones (including the victim's).
    let mut pids = vec![daemon.pid()];
    pids.extend(descendants(daemon.pid()));
    let event = serde_json::json!({ "pids": pids, "port": daemon.addr.port() }).to_string();
    let report = ok_json(&daemon, "probe", &event);
    let report = report.as_object().expect("the probe reports an object");
    eprintln!("probe report:");
    for (attack, outcome) in report {
        eprintln!(
            "  {attack:32} denied={} {}",
            outcome["denied"],
            outcome["detail"].as_str().unwrap_or("")
        );
    }
    let not_denied: Vec<String> = report
        .iter()
        .filter(|(attack, o)| o["denied"] != true && !CONTAINED.contains(&attack.as_str()))
        .map(|(attack, o)| format!("{attack}: {}", o["detail"]))
        .collect();
    assert!(
        not_denied.is_empty(),
        "attacks that were not denied:\n{}",
        not_denied.join("\n")
    );
    for expected in [
        "mount_tmpfs",
        "umount_proc",
        "unshare_user",
        "unshare_mnt",
        "setns",
        "pivot_root",
        "chroot",
        "chroot_escape",
        "ptrace_attach_parent",
        "kill_host_processes",
        "ptrace_host_processes",
        "keyctl_join_session_keyring",
        "add_key",
        "bpf_map_create",
        "perf_event_open",
        "reboot",
        "socket_packet_raw",
        "socket_inet_raw",
        "socket_netlink_route",
        "connect_host_loopback",
        "read_etc_shadow",
        "read_proc_kcore",
        "read_sys",
        "cgroupfs_access",
        "write_usr",
        "mknod_char_device",
        "open_by_handle_at",
        "userfaultfd",
        "io_uring_setup",
        "regain_capabilities",
        "write_proc_sysrq_trigger",
        "write_proc_sys_kernel",
        "see_other_processes",
        "clone3_newuser",
        "clone_newuser",
    ] {
        assert!(
            report.contains_key(expected),
            "the probe did not try {expected}"
        );
    }
    // Refused by the seccomp filter itself, not only by missing capabilities.
    for attack in [
        "mount_tmpfs",
        "unshare_user",
        "keyctl_join_session_keyring",
        "bpf_map_create",
        "socket_netlink_route",
    ] {
        assert_eq!(
            report[attack]["detail"], "EPERM",
            "{attack}: {}",
            report[attack]
        );
    }
    assert_eq!(
        report["clone3_newuser"]["detail"], "ENOSYS",
        "clone3 must answer ENOSYS"
    );

    let victim = victim.join().expect("victim thread");
    assert_eq!(
        victim.status,
        200,
        "the concurrent invocation was disturbed: {}",
        victim.text()
    );
    // The private write to /var/task never reached the code layer.
    assert!(!code.path().join("fnhost-probe-x").exists());
    assert_eq!(
        layers_state(&daemon),
        layers_before,
        "the layer store changed"
    );
    still_serving(&daemon, "victim");
}

#[test]
fn python_works_under_the_filter() {
    if !require_root("python_works_under_the_filter") {
        return;
    }
    let code = hostile_code();
    let daemon = Daemon::start(&function(code.path(), "sanity", "sanity", ""));
    let out = ok_json(&daemon, "sanity", "{}");
    for check in [
        "json",
        "threads",
        "subprocess",
        "subprocess_shell",
        "time",
        "random",
        "socket_loopback",
        "socket_inet6_udp",
        "socketpair",
        "mkfifo",
        "tmp_write",
    ] {
        assert_eq!(out[check], true, "{check} failed under seccomp: {out}");
    }
    assert!(out["cpu_count"].as_u64().is_some_and(|n| n >= 1), "{out}");
    assert_eq!(out["clone3_errno"], "ENOSYS", "{out}");
    assert_eq!(
        out["seccomp_mode"], "2",
        "the sandbox must run in seccomp filter mode: {out}"
    );
    let metrics = http(daemon.addr, "GET", "/metrics", b"").text();
    assert!(
        metrics.contains("phase=\"seccomp\""),
        "no seccomp phase in /metrics"
    );
}

#[test]
fn fork_bomb_is_contained_by_the_pids_limit() {
    if !require_root("fork_bomb_is_contained_by_the_pids_limit") {
        return;
    }
    let code = hostile_code();
    let functions = format!(
        "{}{}",
        function(
            code.path(),
            "forkbomb",
            "forkbomb",
            "pids = 32\ntimeout_ms = 20000"
        ),
        function(code.path(), "victim", "tmp", "")
    );
    let daemon = Daemon::start(&functions);
    // Sandbox processes only: a zygote may start a forker meanwhile.
    let baseline = sandbox_processes(daemon.pid()).len();
    let addr = daemon.addr;
    let bomb = std::thread::spawn(move || {
        http(
            addr,
            "POST",
            "/v1/functions/forkbomb/invoke",
            br#"{"seconds": 3}"#,
        )
    });
    // A concurrent invocation of another function is not starved of pids.
    std::thread::sleep(Duration::from_millis(500));
    still_serving(&daemon, "victim");
    let bomb = bomb.join().expect("bomb thread");
    // Either the handler saw fork fail (EAGAIN) and returned, or its sandbox
    // was killed; never a hang and never more than the limit.
    if bomb.status == 200 {
        let out = bomb.json();
        assert_eq!(out["error"], "EAGAIN", "{out}");
        assert!(out["forked"].as_u64().unwrap_or(99) < 32, "{out}");
    } else {
        assert!(bomb.status >= 500, "{}", bomb.text());
    }
    // Every bomb process is gone with its sandbox.
    assert!(
        eventually(Duration::from_secs(10), || sandbox_processes(daemon.pid())
            .len()
            <= baseline),
        "processes left after the fork bomb: {} > {baseline}",
        sandbox_processes(daemon.pid()).len()
    );
    still_serving(&daemon, "victim");
    let r = daemon.invoke("forkbomb", r#"{"seconds": 0}"#);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn memory_bomb_names_the_memory_limit() {
    if !require_root("memory_bomb_names_the_memory_limit") {
        return;
    }
    let code = hostile_code();
    let daemon = Daemon::start(&function(
        code.path(),
        "membomb",
        "allocate",
        "memory_mb = 64",
    ));
    let r = daemon.invoke("membomb", r#"{"mb": 1024}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["errorType"], "MemoryLimitExceeded", "{}", r.text());
    let r = daemon.invoke("membomb", r#"{"mb": 4}"#);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn disk_fill_hits_enospc_inside_and_leaves_the_host_alone() {
    if !require_root("disk_fill_hits_enospc_inside_and_leaves_the_host_alone") {
        return;
    }
    let code = hostile_code();
    let daemon = Daemon::start(&function(
        code.path(),
        "diskfill",
        "diskfill",
        "writable_layer_mb = 8",
    ));
    let state_before = tree_state(&daemon.dir.path().join("state"));
    for path in ["/tmp/fill", "/fill"] {
        let event = serde_json::json!({ "mb": 100, "path": path }).to_string();
        let out = ok_json(&daemon, "diskfill", &event);
        assert_eq!(out["error"], "ENOSPC", "{path}: {out}");
        assert!(
            out["written_mb"].as_u64().unwrap_or(100) <= 8,
            "{path}: {out}"
        );
    }
    // The code directory belongs to the sandbox's root, not to the
    // (non-root) user the function runs as.
    let out = ok_json(
        &daemon,
        "diskfill",
        r#"{"mb": 1, "path": "/var/task/fill"}"#,
    );
    assert_eq!(out["error"], "EACCES", "/var/task/fill: {out}");
    // The writable layer is a tmpfs in the clone's mount namespace: nothing
    // of the 100 MB reached the daemon's state directory.
    let grown: Vec<_> = tree_state(&daemon.dir.path().join("state"))
        .into_iter()
        .filter(|(p, (len, _, _))| {
            state_before
                .get(p)
                .map_or(*len > 0, |(before, _, _)| len > before)
        })
        .collect();
    assert!(
        grown.iter().all(|(_, (len, _, _))| *len < 1 << 20),
        "files grew on the host: {grown:?}"
    );
    let out = ok_json(&daemon, "diskfill", r#"{"mb": 1}"#);
    assert_eq!(
        out["error"],
        Value::Null,
        "a fresh clone has its full layer again: {out}"
    );
}

#[test]
fn infinite_loop_times_out() {
    if !require_root("infinite_loop_times_out") {
        return;
    }
    let code = hostile_code();
    let functions = format!(
        "{}{}",
        function(code.path(), "spin", "spin", "timeout_ms = 500"),
        function(code.path(), "victim", "tmp", "")
    );
    let daemon = Daemon::start(&functions);
    // Sandbox processes only: a zygote may start a forker meanwhile.
    let baseline = sandbox_processes(daemon.pid()).len();
    let r = daemon.invoke("spin", "{}");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["errorType"], "Timeout", "{}", r.text());
    assert!(
        eventually(Duration::from_secs(10), || sandbox_processes(daemon.pid())
            .len()
            <= baseline),
        "the spinning sandbox survived its timeout"
    );
    still_serving(&daemon, "victim");
}

#[test]
fn tmp_environ_cgroups_and_base_layers() {
    if !require_root("tmp_environ_cgroups_and_base_layers") {
        return;
    }
    let code = hostile_code();
    let functions = format!(
        "{}{}{}{}",
        function(code.path(), "tmp", "tmp", ""),
        function(code.path(), "environ", "environ", ""),
        function(code.path(), "cgroup", "cgroup", ""),
        function(code.path(), "writebase", "write_base", "")
    );
    let daemon = Daemon::start(&functions);
    let layers_before = layers_state(&daemon);
    let code_before = tree_state(code.path());

    // Another invocation's /tmp: neither a finished nor a running one shows.
    let first = ok_json(&daemon, "tmp", r#"{"secret": "first"}"#);
    let addr = daemon.addr;
    let running = std::thread::spawn(move || {
        http(
            addr,
            "POST",
            "/v1/functions/tmp/invoke",
            br#"{"sleep": 1.5}"#,
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let second = ok_json(&daemon, "tmp", "{}");
    let seen = second["seen"].as_array().expect("seen");
    assert!(
        seen.iter()
            .all(|f| !f.as_str().unwrap_or("").starts_with("secret-")),
        "{first} then {second}"
    );
    assert_eq!(running.join().expect("thread").status, 200);

    // /proc/1/environ is the sandbox itself: the zygote's spec and the
    // daemon's own environment are not there.
    let env = ok_json(&daemon, "environ", "{}");
    let state = daemon.dir.path().display().to_string();
    for key in ["/proc/1/environ", "/proc/self/environ"] {
        let vars = env[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} unreadable: {env}"));
        for var in vars {
            let var = var.as_str().unwrap_or("");
            assert!(
                !var.starts_with("FNHOST_ZYGOTE_SPEC="),
                "{key} leaks the zygote spec"
            );
            assert!(
                !var.starts_with("FNHOST_LOG="),
                "{key} leaks the daemon's environment: {var}"
            );
            assert!(!var.contains(&state), "{key} leaks a host path: {var}");
        }
    }
    let visible: Vec<&str> = env["os_environ"]
        .as_array()
        .expect("os_environ")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        visible.iter().all(|k| !k.starts_with("FNHOST_")),
        "fnhost variables left in os.environ: {visible:?}"
    );

    // No cgroup filesystem anywhere in the sandbox.
    let cg = ok_json(&daemon, "cgroup", "{}");
    assert_eq!(
        cg["sys_entries"],
        serde_json::json!([]),
        "/sys must be absent or an empty mount point: {cg}"
    );
    assert_eq!(cg["sys_fs_cgroup_exists"], false, "{cg}");
    assert_eq!(cg["cgroup_mounts"], serde_json::json!([]), "{cg}");

    // Base layers: read-only binds refuse; overlay paths take the write in
    // the private layer; the host copies never change.
    let out = ok_json(&daemon, "writebase", "{}");
    assert_eq!(out["/usr/lib/fnhost-x"], "EROFS", "{out}");
    // The running interpreter answers ETXTBSY before the read-only check;
    // as the sandbox's non-root user, permission (EACCES) is checked first.
    assert!(
        ["EROFS", "ETXTBSY", "EACCES"].contains(&out["/usr/bin/python3"].as_str().unwrap_or("")),
        "{out}"
    );
    assert_eq!(out["/dev/null-x"], "EROFS", "{out}");
    let again = ok_json(&daemon, "writebase", "{}");
    assert_eq!(
        out, again,
        "a write of one invocation was visible to the next"
    );
    assert_eq!(
        tree_state(code.path()),
        code_before,
        "the function's code directory changed"
    );
    assert_eq!(
        layers_state(&daemon),
        layers_before,
        "the layer store changed"
    );
}

#[test]
fn seccomp_is_a_per_function_setting() {
    if !require_root("seccomp_is_a_per_function_setting") {
        return;
    }
    let code = hostile_code();
    let functions = format!(
        "{}{}",
        function(code.path(), "confined", "probe", "timeout_ms = 60000"),
        function(
            code.path(),
            "unconfined",
            "probe",
            "timeout_ms = 60000\nseccomp = \"unconfined\""
        )
    );
    let daemon = Daemon::start(&functions);
    let confined = ok_json(&daemon, "confined", "{}");
    let unconfined = ok_json(&daemon, "unconfined", "{}");
    // keyctl is refused only by the filter: namespaces and dropped
    // capabilities do not stop it.
    assert_eq!(
        confined["keyctl_join_session_keyring"]["denied"], true,
        "{confined}"
    );
    assert_eq!(
        unconfined["keyctl_join_session_keyring"]["denied"], false,
        "{unconfined}"
    );
    // Unconfined, a clone may make a user namespace and chroot in it (a
    // confined clone's filter refuses both), but climbing out of its root
    // never reaches the zygote's root left beneath it: `..` onto it lands
    // on the clone's root mounted over it. ENOENT means the climb itself
    // worked and found nothing of the zygote's.
    assert_eq!(unconfined["unshare_user"]["denied"], false, "{unconfined}");
    assert_eq!(
        unconfined["chroot_escape"],
        serde_json::json!({"denied": true, "detail": "ENOENT"}),
        "{unconfined}"
    );
    assert_eq!(
        confined["chroot_escape"],
        serde_json::json!({"denied": true, "detail": "EPERM"}),
        "{confined}"
    );
}
