//! What a misbehaving client or function can do to the daemon (issue 16):
//! a zygote that stops answering, a client that leaves mid-request, an
//! oversized upload, a flood of output without a newline, and who may use
//! the admin API. Needs root; waits are upper bounds on what must happen.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{comm, eventually, python_function, require_root, Daemon};

fn code() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/functions/untrusted")
}

/// A raw HTTP/1.1 exchange (custom headers, or a connection the test drops).
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn pool_status(daemon: &Daemon, function: &str) -> serde_json::Value {
    daemon
        .admin("GET", &format!("/admin/functions/{function}"), "", None)
        .json()["status"]
        .clone()
}

/// The runtime process of `function`'s zygote (not init, not one of the
/// runtime's forkers, whose parent is the runtime).
fn zygote_runtime_pid(daemon: &Daemon, function: &str) -> Option<i32> {
    let parent = |pid: i32| -> Option<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))?
            .trim()
            .parse()
            .ok()
    };
    daemon.zygote_pids(function).into_iter().find(|&pid| {
        comm(pid as u32).starts_with("python")
            && parent(pid).is_some_and(|p| !comm(p).starts_with("python"))
    })
}

#[test]
fn a_zygote_that_stops_answering_is_killed_and_hangs_nothing() {
    if !require_root("a_zygote_that_stops_answering_is_killed_and_hangs_nothing") {
        return;
    }
    let functions = python_function(
        "stuck",
        &code(),
        "handler.ok",
        "ready_clones = 0\nqueue_timeout_ms = 60000",
    ) + &python_function("fine", &code(), "handler.ok", "");
    let mut daemon = Daemon::start(&functions);
    assert_eq!(daemon.invoke("stuck", "{}").status, 200);
    let pid = zygote_runtime_pid(&daemon, "stuck").expect("stuck's zygote runtime");
    // The zygote goes silent: it still holds its control socket, answers nothing.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGSTOP)
        .expect("SIGSTOP");
    let addr = daemon.addr;
    let stuck =
        std::thread::spawn(move || common::http(addr, "POST", "/v1/functions/stuck/invoke", b"{}"));
    // Other functions keep serving while a request waits on the silent one.
    for _ in 0..5 {
        assert_eq!(daemon.invoke("fine", "{}").status, 200);
    }
    let answer = stuck.join().expect("stuck request thread");
    // The silent zygote was killed and replaced: the request is served, by
    // a new zygote.
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "the silent zygote was killed"
    );
    assert!(daemon.stderr().contains("did not answer a clone request"));
    // A reload and a shutdown finish.
    assert_eq!(daemon.admin("POST", "/admin/reload", "", None).status, 200);
    let status = daemon.stop().expect("the daemon stopped");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_client_that_leaves_mid_request_leaves_no_sandbox_running() {
    if !require_root("a_client_that_leaves_mid_request_leaves_no_sandbox_running") {
        return;
    }
    let functions = python_function(
        "sleepy",
        &code(),
        "handler.sleep",
        "timeout_ms = 120000\nready_clones = 1",
    );
    let daemon = Daemon::start(&functions);
    let body = r#"{"s": 100}"#;
    let request = format!(
        "POST /v1/functions/sleepy/invoke HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = TcpStream::connect(daemon.addr).expect("connect");
    client.write_all(request.as_bytes()).expect("send");
    assert!(
        eventually(Duration::from_secs(30), || pool_status(&daemon, "sleepy")
            ["in_flight"]
            == 1),
        "the invocation started"
    );
    drop(client);
    // The handler would sleep 100 s: in_flight comes back only because the
    // sandbox was killed when the client left.
    assert!(
        eventually(Duration::from_secs(30), || pool_status(&daemon, "sleepy")
            ["in_flight"]
            == 0),
        "in_flight came back down: {}",
        pool_status(&daemon, "sleepy")
    );
    // Disconnects at every point around the clone hand-off leave the zygote usable.
    for i in 0..20u64 {
        let mut client = TcpStream::connect(daemon.addr).expect("connect");
        let quick = r#"{"s": 0}"#;
        let request = format!(
            "POST /v1/functions/sleepy/invoke HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n{quick}",
            quick.len()
        );
        client.write_all(request.as_bytes()).expect("send");
        std::thread::sleep(Duration::from_micros(i * 500));
        drop(client);
    }
    for _ in 0..5 {
        let r = daemon.invoke("sleepy", r#"{"s": 0}"#);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(eventually(Duration::from_secs(30), || {
        let s = pool_status(&daemon, "sleepy");
        s["in_flight"] == 0 && s["queued"] == 0
    }));
}

#[test]
fn an_oversized_upload_gets_a_readable_413_and_floods_of_output_stay_small() {
    if !require_root("an_oversized_upload_gets_a_readable_413_and_floods_of_output_stay_small") {
        return;
    }
    let functions = python_function("flood", &code(), "handler.flood", "timeout_ms = 60000");
    let daemon = Daemon::start(&functions);
    // A real client library, as users have: urllib sends the whole 7 MiB.
    let script = format!(
        "import urllib.request, urllib.error\n\
         req = urllib.request.Request('http://{}/v1/functions/flood/invoke', data=b'x' * (7 << 20), method='POST')\n\
         try:\n    urllib.request.urlopen(req)\n    print('no error')\n\
         except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())\n",
        daemon.addr
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("413") && stdout.contains("RequestTooLarge"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 2 GiB of output without a newline: the daemon keeps a line's first
    // bytes, not the line.
    let rss = || -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    };
    let before_kib = rss();
    let started = Instant::now();
    let r = daemon.invoke("flood", r#"{"mib": 2048}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let grown_mib = rss().saturating_sub(before_kib) / 1024;
    assert!(
        grown_mib < 256,
        "the daemon grew by {grown_mib} MiB while a function wrote 2 GiB without a newline (in {:?})",
        started.elapsed()
    );
}

#[test]
fn the_admin_api_is_never_open() {
    if !require_root("the_admin_api_is_never_open") {
        return;
    }
    let daemon = Daemon::start(&python_function("hello", &code(), "handler.ok", ""));
    let admin = daemon.admin.expect("admin on TCP");
    let put = |token: Option<&str>, host: &str| {
        let body =
            r#"{"runtime": "python3", "code": "/", "handler": "x.y", "seccomp": "unconfined"}"#;
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        raw(
            admin,
            format!(
                "PUT /admin/functions/evil HTTP/1.1\r\nhost: {host}\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    // No token configured: writes without the generated one are refused.
    let anonymous = put(None, "127.0.0.1");
    assert!(anonymous.starts_with("HTTP/1.1 401"), "{anonymous}");
    assert!(
        anonymous.contains("admin.token"),
        "says where the token is: {anonymous}"
    );
    let token_file = std::fs::read_dir(daemon.dir.path().join("state"))
        .expect("state dir")
        .flatten()
        .find(|e| e.file_name() == "admin.token")
        .expect("a generated token file")
        .path();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).expect("token");
    let token = token.trim();
    // A page that rebound its DNS name to loopback is refused, token or not.
    let rebound = put(Some(token), "evil.example:8081");
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    let status = daemon.admin("GET", "/admin/status", "", Some(token));
    assert_eq!(status.status, 200);
    assert_eq!(
        daemon
            .admin("GET", "/admin/functions/evil", "", Some(token))
            .status,
        404,
        "nothing was created"
    );
}

/// Reaches what a concurrent invocation of the same function listens on.
fn reach_a_concurrent_listener(daemon: &Daemon, function: &str, port: u16) -> serde_json::Value {
    let name = format!("fnhost-net-{function}-{}", std::process::id());
    let listen = format!(r#"{{"op": "listen", "port": {port}, "name": "{name}", "s": 6}}"#);
    let addr = daemon.addr;
    let path = format!("/v1/functions/{function}/invoke");
    let listener = std::thread::spawn(move || common::http(addr, "POST", &path, listen.as_bytes()));
    assert!(
        eventually(Duration::from_secs(30), || daemon
            .stderr()
            .contains(&format!("listening {name}"))),
        "the first invocation is listening"
    );
    let reach = format!(r#"{{"op": "reach", "port": {port}, "name": "{name}"}}"#);
    let answer = daemon.invoke(function, &reach);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(listener.join().expect("listener").status, 200);
    answer.json()
}

#[test]
fn concurrent_invocations_do_not_share_a_network() {
    if !require_root("concurrent_invocations_do_not_share_a_network") {
        return;
    }
    let extra = "ready_clones = 2\nmax_concurrency = 4\ntimeout_ms = 20000";
    let functions = python_function("own", &code(), "handler.net", extra)
        + &python_function(
            "shared",
            &code(),
            "handler.net",
            &format!("{extra}\nnetwork = \"shared-loopback\""),
        );
    let daemon = Daemon::start(&functions);
    let own = reach_a_concurrent_listener(&daemon, "own", 18080);
    assert_eq!(own["tcp"], "ConnectionRefusedError", "{own}");
    assert_ne!(own["unix"], "connected", "{own}");
    // The documented opt-out really shares (so the test above can fail).
    let shared = reach_a_concurrent_listener(&daemon, "shared", 18081);
    assert_eq!(shared["tcp"], "connected", "{shared}");
    assert_eq!(shared["unix"], "connected", "{shared}");
}
