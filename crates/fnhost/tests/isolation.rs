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

/// How many processes on the host are in the network namespace `net`
/// (as `/proc/<pid>/ns/net` names it: "net:[inode]").
fn processes_in_network_namespace(net: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("listing /proc")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read_link(e.path().join("ns/net"))
                .is_ok_and(|target| target.to_string_lossy() == net)
        })
        .count()
}

/// A clone's network namespace is reused by a later clone of the same
/// zygote once the earlier one is gone (see reused_network), never by two
/// live clones; a reused one carries nothing of the earlier invocation's
/// sockets, and no clone holds a descriptor of the zygote's forkers.
#[test]
fn network_namespaces_are_reused_one_clone_at_a_time() {
    if !require_root("network_namespaces_are_reused_one_clone_at_a_time") {
        return;
    }
    // On-demand clones only: each request is cloned when it arrives, so
    // the forker it goes to is the idle one (no refill races it).
    let daemon = Daemon::start(&python_function(
        "netns",
        &probe_code(),
        "handler.netns",
        "ready_clones = 0",
    ));
    // The first two clones are made the old way (nothing waits for a
    // forker); the zygote starts a forker after answering the second.
    for _ in 0..2 {
        let warm_up = daemon.invoke("netns", "{}");
        assert_eq!(
            warm_up.status,
            200,
            "{}\n{}",
            warm_up.text(),
            daemon.stderr()
        );
    }
    let first = daemon.invoke("netns", "{}");
    assert_eq!(first.status, 200, "{}\n{}", first.text(), daemon.stderr());
    let first = first.json();
    let net = first["net"].as_str().unwrap().to_owned();
    // Only the invocation socket beyond stdio.
    let fds = first["fds"].as_array().unwrap();
    assert!(
        fds.len() == 1 && fds[0].as_str().unwrap().starts_with("socket:"),
        "{first}"
    );
    // Wait (generously: a state, not a duration) until the first clone is
    // gone: only its forker is left in its namespace.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while processes_in_network_namespace(&net) > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first clone never went away"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        processes_in_network_namespace(&net),
        1,
        "its forker keeps the namespace"
    );
    let port = first["listening"].as_u64().unwrap();
    let body = format!(r#"{{"connect": {port}, "listen": {port}}}"#);
    let second = daemon.invoke("netns", &body);
    assert_eq!(second.status, 200, "{}\n{}", second.text(), daemon.stderr());
    let second = second.json();
    assert_eq!(second["net"], first["net"], "reused: {second}");
    // The earlier listener died with its clone: nothing answers, and the
    // port binds again.
    assert_eq!(second["connected"], false, "{second}");
    assert_eq!(second["listening"], port, "{second}");
    let fds = second["fds"].as_array().unwrap();
    assert!(
        fds.len() == 1 && fds[0].as_str().unwrap().starts_with("socket:"),
        "{second}"
    );

    // Two live clones never share one: two concurrent sleepers whose
    // sandboxes were alive at the same time (their handlers' run times
    // overlap, as reported from inside) are in different namespaces.
    let mut overlapped = 0;
    for _ in 0..5 {
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let addr = daemon.addr;
                std::thread::spawn(move || {
                    http(
                        addr,
                        "POST",
                        "/v1/functions/netns/invoke",
                        br#"{"sleep": 1.5}"#,
                    )
                })
            })
            .collect();
        let reports: Vec<serde_json::Value> = sleepers
            .into_iter()
            .map(|t| {
                let r = t.join().unwrap();
                assert_eq!(r.status, 200, "{}", r.text());
                r.json()
            })
            .collect();
        let (a, b) = (&reports[0], &reports[1]);
        let time = |r: &serde_json::Value, key: &str| r[key].as_f64().unwrap();
        if time(a, "started") < time(b, "ended") && time(b, "started") < time(a, "ended") {
            overlapped += 1;
            assert_ne!(a["net"], b["net"], "live at the same time: {a} {b}");
        }
    }
    assert!(overlapped > 0, "no two sleepers ever ran at the same time");
}
