//! Isolation between invocations, observed from inside the sandbox.

mod common;

use std::time::Duration;

use common::*;

fn config() -> String {
    format!(
        r#"
[[functions]]
name = "probe"
runtime = "python3"
code = "{}"
handler = "handler.isolation"
ready_clones = 2
"#,
        probe_code().display()
    )
}

#[test]
fn writes_do_not_survive_and_each_clone_is_alone() {
    if !require_root("writes_do_not_survive_and_each_clone_is_alone") {
        return;
    }
    let daemon = Daemon::start(&config());
    for round in 0..3 {
        let r = daemon.invoke("probe", "{}");
        assert_eq!(r.status, 200, "{}\n{}", r.text(), daemon.stderr());
        let report = r.json();
        assert_eq!(
            report["tmp_marker_existed"], false,
            "round {round}: /tmp write survived: {report}"
        );
        assert_eq!(
            report["root_marker_existed"], false,
            "round {round}: / write survived: {report}"
        );
        assert_eq!(report["pid"], 1, "{report}");
        assert_eq!(report["procs"], serde_json::json!([1]), "{report}");
        assert_eq!(report["usr_writable"], false, "{report}");
        assert_eq!(report["cap_eff"], "0000000000000000", "{report}");
        // user_namespace = true (the default): a non-root user inside.
        assert_eq!(report["uid"], 1000, "{report}");
    }
    // Nothing leaked onto the host either.
    assert!(!std::path::Path::new("/fnhost-marker").exists());
}

#[test]
fn concurrent_invocations_do_not_see_each_other() {
    if !require_root("concurrent_invocations_do_not_see_each_other") {
        return;
    }
    let daemon = Daemon::start(&config());
    let addr = daemon.addr;
    let slow = std::thread::spawn(move || {
        http(
            addr,
            "POST",
            "/v1/functions/probe/invoke",
            br#"{"sleep": 1.5}"#,
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = daemon.invoke("probe", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["procs"], serde_json::json!([1]), "{}", r.text());
    assert_eq!(r.json()["tmp_marker_existed"], false);
    let slow = slow.join().unwrap();
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert_eq!(slow.json()["procs"], serde_json::json!([1]));
}

#[test]
fn without_a_user_namespace_the_same_isolation_holds_and_nothing_runs_as_root() {
    if !require_root("without_a_user_namespace_the_same_isolation_holds_and_nothing_runs_as_root") {
        return;
    }
    let daemon = Daemon::start_with(&config(), "user_namespace = false");
    for _ in 0..2 {
        let r = daemon.invoke("probe", "{}");
        assert_eq!(r.status, 200, "{}\n{}", r.text(), daemon.stderr());
        let report = r.json();
        // The zygote runs as host id userns_host_base + 1000; each clone
        // maps it to 1000 in a user namespace of its own.
        assert_eq!(report["uid"], 1000, "{report}");
        assert_eq!(report["cap_eff"], "0000000000000000", "{report}");
        assert_eq!(report["tmp_marker_existed"], false, "{report}");
        assert_eq!(report["procs"], serde_json::json!([1]), "{report}");
    }
}
