//! Limits: the timeout and the memory limit kill the sandbox and name the
//! limit; the daemon and the pool carry on.

mod common;

use common::*;

fn config() -> String {
    format!(
        r#"
[[functions]]
name = "sleep"
runtime = "python3"
code = "{probe}"
handler = "handler.sleep"
timeout_ms = 300

[[functions]]
name = "allocate"
runtime = "python3"
code = "{probe}"
handler = "handler.allocate"
memory_mb = 64
"#,
        probe = probe_code().display()
    )
}

#[test]
fn timeout_kills_the_sandbox_and_names_the_limit() {
    if !require_root("timeout_kills_the_sandbox_and_names_the_limit") {
        return;
    }
    let daemon = Daemon::start(&config());
    let r = daemon.invoke("sleep", r#"{"seconds": 30}"#);
    assert_eq!(r.status, 504, "{}", r.text());
    let body = r.json();
    assert_eq!(body["errorType"], "Timeout");
    assert!(body["errorMessage"].as_str().unwrap().contains("300 ms (timeout_ms)"), "{body}");
    let r = daemon.invoke("sleep", r#"{"seconds": 0}"#);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn memory_limit_kills_the_sandbox_and_names_the_limit() {
    if !require_root("memory_limit_kills_the_sandbox_and_names_the_limit") {
        return;
    }
    let daemon = Daemon::start(&config());
    let r = daemon.invoke("allocate", r#"{"mb": 256}"#);
    assert_eq!(r.status, 502, "{}\n{}", r.text(), daemon.stderr());
    let body = r.json();
    assert_eq!(body["errorType"], "MemoryLimitExceeded", "{body}");
    assert!(body["errorMessage"].as_str().unwrap().contains("64 MiB (memory_mb)"), "{body}");
    // Within the limit it works, and the daemon lives on.
    let r = daemon.invoke("allocate", r#"{"mb": 8}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["allocated_mb"], 8);
    assert_eq!(http(daemon.addr, "GET", "/healthz", b"").status, 200);
}
