//! Operators: config reload (SIGHUP and admin API), the admin API itself,
//! the memory budget, restart cleanup and zygote loss under traffic.

mod common;

use std::time::Duration;

use common::*;

fn function(name: &str, handler: &str, extra: &str) -> String {
    let code = if handler.starts_with("handler.handler") {
        hello_code()
    } else {
        probe_code()
    };
    python_function(name, &code, handler, extra)
}

fn rewrite_functions(daemon: &Daemon, server_extra: &str, functions: &str) {
    write_config(
        daemon.dir.path(),
        &daemon.cgroup_root,
        server_extra,
        functions,
    );
}

#[test]
fn reload_resizes_pools_and_refuses_bad_configs() {
    if !require_root("reload_resizes_pools_and_refuses_bad_configs") {
        return;
    }
    let daemon = Daemon::start(
        &(function("hello", "handler.handler", "zygotes = 1\nready_clones = 1")
            + &function("slow", "handler.sleep", "timeout_ms = 10000")),
    );
    let zygotes = |d: &Daemon| {
        d.admin("GET", "/admin/functions/hello", "", None).json()["status"]["zygotes"].as_u64()
    };
    assert_eq!(zygotes(&daemon), Some(1));

    // An invocation in flight while its pool is replaced (memory_mb changed).
    let addr = daemon.addr;
    let slow = std::thread::spawn(move || {
        http(
            addr,
            "POST",
            "/v1/functions/slow/invoke",
            br#"{"seconds": 1.5}"#,
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    rewrite_functions(
        &daemon,
        "",
        &(function("hello", "handler.handler", "zygotes = 3\nready_clones = 1")
            + &function(
                "slow",
                "handler.sleep",
                "timeout_ms = 10000\nmemory_mb = 96",
            )),
    );
    daemon.sighup();
    assert!(
        eventually(Duration::from_secs(20), || zygotes(&daemon) == Some(3)),
        "{}",
        daemon.stderr()
    );
    let slow = slow.join().unwrap();
    assert_eq!(
        slow.status,
        200,
        "in-flight invocation across a reload: {}",
        slow.text()
    );

    // A bad config is refused, with file, line and key; the old one serves.
    rewrite_functions(
        &daemon,
        "",
        &function("hello", "handler.handler", "zygotes = 1\nmemory_mb = 0"),
    );
    let r = daemon.admin("POST", "/admin/reload", "", None);
    assert_eq!(r.status, 400, "{}", r.text());
    let message = r.json()["errorMessage"].as_str().unwrap().to_string();
    assert!(
        message.contains("fnhost.toml:") && message.contains("functions[0].memory_mb"),
        "{message}"
    );
    daemon.sighup();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(daemon.invoke("hello", "{}").status, 200);
    assert_eq!(
        zygotes(&daemon),
        Some(3),
        "the refused config must not have been applied"
    );
    assert_eq!(daemon.invoke("slow", r#"{"seconds": 0}"#).status, 200);
}

#[test]
fn admin_api_creates_updates_deletes_and_checks_tokens() {
    if !require_root("admin_api_creates_updates_deletes_and_checks_tokens") {
        return;
    }
    let token = "test-token-0123456789abcdef";
    let daemon = Daemon::start_with(
        &function("hello", "handler.handler", ""),
        &format!("admin_listen = \"127.0.0.1:0\"\nadmin_token = \"{token}\""),
    );
    assert_eq!(
        daemon.admin("GET", "/admin/functions", "", None).status,
        401
    );
    assert_eq!(
        daemon
            .admin(
                "GET",
                "/admin/functions",
                "",
                Some("wrong-token-0123456789")
            )
            .status,
        401
    );
    let list = daemon.admin("GET", "/admin/functions", "", Some(token));
    assert_eq!(list.status, 200);
    assert_eq!(list.json()[0]["name"], "hello");

    let entry = serde_json::json!({
        "runtime": "python3", "code": hello_code(), "handler": "handler.handler",
        "memory_mb": 96, "ready_clones": 1,
    });
    let r = daemon.admin(
        "PUT",
        "/admin/functions/added",
        &entry.to_string(),
        Some(token),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["added"], serde_json::json!(["added"]));
    let r = daemon.invoke("added", r#"{"name":"api"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["memory_limit_mb"], 96);

    let bad = serde_json::json!({"runtime": "python3", "code": hello_code(), "handler": "handler.handler", "memory_mb": 1});
    let r = daemon.admin(
        "PUT",
        "/admin/functions/added",
        &bad.to_string(),
        Some(token),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["errorMessage"]
            .as_str()
            .unwrap()
            .contains("memory_mb"),
        "{}",
        r.text()
    );
    assert_eq!(
        daemon.invoke("added", "{}").json()["memory_limit_mb"],
        96,
        "refused update must not apply"
    );

    // The CLI verbs are clients of the same API.
    let admin_url = format!("http://{}", daemon.admin.unwrap());
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fnhost"))
            .args(args)
            .args(["--admin-url", &admin_url])
            .output()
            .unwrap()
    };
    let out = cli(&["functions", "list", "--token", token]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"added\""));
    let out = cli(&["status"]);
    assert!(!out.status.success(), "no token must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let status = daemon.admin("GET", "/admin/status", "", Some(token));
    assert_eq!(status.status, 200);
    assert!(status.json()["pools"]["added"]["zygotes"]
        .as_u64()
        .is_some());

    let r = daemon.admin("DELETE", "/admin/functions/added", "", Some(token));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(daemon.invoke("added", "{}").status, 404);
    assert_eq!(
        daemon
            .admin("DELETE", "/admin/functions/added", "", Some(token))
            .status,
        404
    );
}

#[test]
fn memory_budget_evicts_idle_zygotes_then_refuses() {
    if !require_root("memory_budget_evicts_idle_zygotes_then_refuses") {
        return;
    }
    let warm_once = "zygotes = 0\nready_clones = 0\nidle_ttl_ms = 600000";
    let functions = function("a", "handler.handler", warm_once)
        + &function("b", "handler.handler", warm_once)
        + &function("c", "handler.handler", warm_once);
    let daemon = Daemon::start_with(&functions, "memory_budget_mb = 4096");
    assert_eq!(daemon.invoke("a", "{}").status, 200);
    let status = daemon.admin("GET", "/admin/status", "", None).json();
    assert_eq!(status["pools"]["a"]["zygotes"], 1, "{status}");
    let one_zygote = status["memory"]["used_bytes"].as_u64().unwrap();
    assert!(one_zygote > 0, "{status}");

    // Room for about one zygote: starting b must evict idle a first.
    let budget_mb = ((one_zygote * 3 / 2) >> 20).max(1);
    rewrite_functions(
        &daemon,
        &format!("memory_budget_mb = {budget_mb}"),
        &functions,
    );
    assert_eq!(daemon.admin("POST", "/admin/reload", "", None).status, 200);
    let r = daemon.invoke("b", "{}");
    assert_eq!(r.status, 200, "{}\n{}", r.text(), daemon.stderr());
    let status = daemon.admin("GET", "/admin/status", "", None).json();
    assert_eq!(status["pools"]["a"]["evictions"], 1, "{status}");
    assert_eq!(status["pools"]["a"]["zygotes"], 0, "{status}");
    assert_eq!(status["pools"]["b"]["zygotes"], 1, "{status}");

    // Less than one zygote: after evicting b there is still no room for c.
    let tiny = ((one_zygote / 2) >> 20).max(1);
    rewrite_functions(&daemon, &format!("memory_budget_mb = {tiny}"), &functions);
    assert_eq!(daemon.admin("POST", "/admin/reload", "", None).status, 200);
    let r = daemon.invoke("c", "{}");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["errorType"], "MemoryBudgetExceeded");
    assert!(r.json()["errorMessage"]
        .as_str()
        .unwrap()
        .contains("server.memory_budget_mb"));
    assert!(r.header("retry-after").is_some());
    assert_eq!(http(daemon.addr, "GET", "/healthz", b"").status, 200);
}

#[test]
fn restart_after_a_crash_cleans_up_the_previous_run() {
    if !require_root("restart_after_a_crash_cleans_up_the_previous_run") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = unique_cgroup_root();
    let config = write_config(
        dir.path(),
        &root,
        "",
        &function("hello", "handler.handler", "ready_clones = 2"),
    );
    let mut first =
        Daemon::start_config(tempfile::tempdir().unwrap(), config.clone(), root.clone());
    assert_eq!(first.invoke("hello", "{}").status, 200);
    // Identify processes by pid and start time (pids get reused quickly);
    // a zombie waiting for PID 1 to reap it is dead, not a survivor.
    let start_time = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?;
        if state == "Z" || state == "X" {
            return None;
        }
        fields.nth(18).map(str::to_string)
    };
    let orphans: Vec<(u32, String)> = descendants(first.pid())
        .into_iter()
        .filter_map(|p| start_time(p).map(|t| (p, t)))
        .collect();
    assert!(!orphans.is_empty());
    // Crash: SIGKILL leaves zygotes, clones and cgroups behind.
    first.crash().expect("killed");
    assert!(!cgroup_dirs(&root).is_empty());
    let second = Daemon::start_config(dir, config, root.clone());
    let alive: Vec<u32> = orphans
        .iter()
        .filter(|(p, t)| start_time(*p).as_ref() == Some(t))
        .map(|(p, _)| *p)
        .collect();
    assert!(
        alive.is_empty(),
        "processes of the crashed run survived the restart: {alive:?}"
    );
    assert_eq!(second.invoke("hello", "{}").status, 200);
    // Stop the second run first: the first's drop checks the shared cgroup root.
    drop(second);
    drop(first);
}

#[test]
fn killing_a_zygote_under_traffic_loses_no_request_silently() {
    if !require_root("killing_a_zygote_under_traffic_loses_no_request_silently") {
        return;
    }
    let daemon = Daemon::start(
        &(function("hello", "handler.handler", "ready_clones = 2")
            + &function("other", "handler.handler", "ready_clones = 1")),
    );
    let addr = daemon.addr;
    let clients: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let name = if i == 2 { "other" } else { "hello" };
                (0..80)
                    .map(|_| http(addr, "POST", &format!("/v1/functions/{name}/invoke"), b"{}"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let daemon_pid = daemon.pid();
    for pid in descendants(daemon_pid) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent_is_daemon = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1).map(str::to_string))
            .is_some_and(|ppid| ppid == daemon_pid.to_string());
        if parent_is_daemon {
            // SAFETY: kill(2) of a zygote init this test's daemon started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            break;
        }
    }
    let mut ok = 0;
    for client in clients {
        for r in client.join().unwrap() {
            if r.status == 200 {
                ok += 1;
            } else {
                let body = r.json();
                assert!(
                    body["errorType"].is_string() && body["errorMessage"].is_string(),
                    "unclear failure: {body}"
                );
            }
        }
    }
    assert!(ok > 0);
    assert!(eventually(Duration::from_secs(15), || daemon
        .invoke("hello", "{}")
        .status
        == 200));
}

#[test]
fn sigterm_drains_in_flight_work_then_exits() {
    if !require_root("sigterm_drains_in_flight_work_then_exits") {
        return;
    }
    let mut daemon = Daemon::start(&function("slow", "handler.sleep", "timeout_ms = 10000"));
    let addr = daemon.addr;
    let slow = std::thread::spawn(move || {
        http(
            addr,
            "POST",
            "/v1/functions/slow/invoke",
            br#"{"seconds": 1.0}"#,
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = daemon.stop().expect("daemon was running");
    let slow = slow.join().unwrap();
    assert_eq!(
        slow.status,
        200,
        "in-flight invocation must finish during the drain: {}",
        slow.text()
    );
    assert!(status.success(), "{status:?}\n{}", daemon.stderr());
    assert!(
        daemon.cgroup_dirs().is_empty(),
        "cgroups left after a drained shutdown"
    );
}

#[test]
fn reload_picks_up_changed_code_in_the_same_directory() {
    if !require_root("reload_picks_up_changed_code_in_the_same_directory") {
        return;
    }
    let code = tempfile::tempdir().unwrap();
    let handler = code.path().join("handler.py");
    std::fs::write(
        &handler,
        "def handler(event, context):\n    return {'version': 1}\n",
    )
    .unwrap();
    let functions = format!(
        "[[functions]]\nname = \"app\"\nruntime = \"python3\"\ncode = \"{}\"\nhandler = \"handler.handler\"\n",
        code.path().display()
    );
    let daemon = Daemon::start(&functions);
    assert_eq!(daemon.invoke("app", "{}").json()["version"], 1);
    std::fs::write(
        &handler,
        "def handler(event, context):\n    return {'version': 2}\n",
    )
    .unwrap();
    let r = daemon.admin("POST", "/admin/reload", "", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["replaced"],
        serde_json::json!(["app"]),
        "{}",
        r.text()
    );
    assert!(eventually(Duration::from_secs(10), || daemon
        .invoke("app", "{}")
        .json()["version"]
        == 2));
}
