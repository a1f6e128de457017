//! Hostile import-time code (issue 16): a function's module top level runs
//! in its zygote before any clone exists. It must run unprivileged (non-root,
//! no capabilities, `no_new_privs`, seccomp), with no descriptor it could
//! misuse, unable to write the shared layers, to get a kernel-fault-capable
//! userfaultfd, or to leave a helper process behind; and the rest of the
//! host must not notice. Needs root; waits are upper bounds.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, python_function, require_root, Daemon};
use fnhost_sandbox::cgroup::names;

fn code() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/functions/hostile_import")
}

/// An attempt the fixture recorded: "ok" or the errno it failed with.
fn denied(record: &serde_json::Value, key: &str, allowed: &[&str]) {
    let got = record[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} not recorded: {record}"));
    assert!(
        allowed.contains(&got),
        "{key}: got {got}, expected one of {allowed:?}"
    );
}

#[test]
fn import_time_code_runs_unprivileged_and_every_takeover_attempt_is_denied() {
    if !require_root("import_time_code_runs_unprivileged_and_every_takeover_attempt_is_denied") {
        return;
    }
    let functions = python_function("hostile", &code(), "record.handler", "")
        + &python_function("bystander", &common::hello_code(), "handler.handler", "");
    let daemon = Daemon::start(&functions);
    let r = daemon.invoke("hostile", "{}");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), daemon.stderr());
    let record = r.json();

    // Who the import ran as: uid 1000 of the zygote's namespace, nothing more.
    let status = &record["status"];
    assert_eq!(
        status["Uid"],
        serde_json::json!(["1000", "1000", "1000", "1000"]),
        "{record}"
    );
    assert_eq!(
        status["Gid"],
        serde_json::json!(["1000", "1000", "1000", "1000"]),
        "{record}"
    );
    for caps in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(
            status[caps],
            serde_json::json!(["0000000000000000"]),
            "{caps}: {record}"
        );
    }
    assert_eq!(status["NoNewPrivs"], serde_json::json!(["1"]), "{record}");
    assert_eq!(status["Seccomp"], serde_json::json!(["2"]), "{record}");

    // Descriptors: stdio and the control socket, no directory among them.
    let fds = record["fds"].as_object().expect("fds");
    let numbers: Vec<&str> = fds.keys().map(String::as_str).collect();
    assert_eq!(numbers, ["0", "1", "2", "3"], "{record}");
    assert!(fds.values().all(|fd| fd["dir"] == false), "{record}");
    assert!(
        fds["3"]["target"].as_str().unwrap().starts_with("socket:"),
        "{record}"
    );
    assert_eq!(record["dir_fd_escapes"], serde_json::json!([]), "{record}");
    // Nothing is on the control socket while the import runs.
    denied(&record, "control_read", &["EAGAIN"]);

    // The layers: their host paths do not exist in the zygote, and every
    // path to them in the root is read-only.
    let writes = record["layer_writes"].as_object().expect("layer_writes");
    assert!(writes.len() >= 5, "{record}");
    for (path, outcome) in writes {
        assert!(
            ["EROFS", "ENOENT", "EACCES", "EPERM"].contains(&outcome.as_str().unwrap()),
            "write {path}: {outcome}"
        );
    }
    let lower = record["lower_layers"].as_array().expect("lower_layers");
    assert!(!lower.is_empty(), "{record}");
    for layer in lower {
        let layer = Path::new(layer.as_str().unwrap());
        assert!(
            !layer.join("etc/ld.so.preload").exists(),
            "{} was written",
            layer.display()
        );
        assert!(!layer.join("var/task/fnhost-was-here").exists());
    }
    denied(&record, "remount_root_rw", &["EPERM"]);
    denied(&record, "open_dev_userfaultfd", &["ENOENT"]);
    denied(&record, "userfaultfd_kernel_faults", &["EPERM"]);
    denied(&record, "setuid_0", &["EPERM"]);
    denied(&record, "kill_init", &["EPERM"]);
    denied(&record, "unshare_mount_ns", &["EPERM"]);
    denied(&record, "open_cgroupfs", &["ENOENT"]);

    // Another function, and this one again, are unaffected.
    let r = daemon.invoke("bystander", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(daemon.invoke("hostile", "{}").status, 200);
}

#[test]
fn a_helper_process_left_by_the_import_fails_the_zygote_and_dies_with_it() {
    if !require_root("a_helper_process_left_by_the_import_fails_the_zygote_and_dies_with_it") {
        return;
    }
    let functions = python_function("forks", &code(), "helper.handler", "prewarm = false")
        + &python_function("bystander", &common::hello_code(), "handler.handler", "");
    let daemon = Daemon::start(&functions);
    let r = daemon.invoke("forks", "{}");
    assert_ne!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("ZygoteNotAlone"), "{}", r.text());
    assert!(
        r.text().contains("child process") || r.text().contains("process(es)"),
        "{}",
        r.text()
    );
    // The zygote was killed with its pid namespace: its helper is gone too.
    let zygote_cgroups: Vec<PathBuf> = daemon
        .cgroup_dirs()
        .into_iter()
        .filter(|d| d.ends_with(names::zygote("forks")))
        .collect();
    assert!(!zygote_cgroups.is_empty());
    assert!(
        eventually(Duration::from_secs(10), || zygote_cgroups.iter().all(|d| {
            std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty())
        })),
        "a process of the failed zygote is still alive"
    );
    assert_eq!(daemon.invoke("bystander", "{}").status, 200);
}

#[test]
fn a_thread_left_by_the_import_fails_the_zygote() {
    if !require_root("a_thread_left_by_the_import_fails_the_zygote") {
        return;
    }
    let functions = python_function("threads", &code(), "thread.handler", "prewarm = false");
    let daemon = Daemon::start(&functions);
    let r = daemon.invoke("threads", "{}");
    assert_ne!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("ZygoteNotSingleThreaded") || r.text().contains("ZygoteNotAlone"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("thread"), "{}", r.text());
}
