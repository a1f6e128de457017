//! End-to-end: the daemon serves HTTP invocations from fresh clones of warm
//! zygotes, reports how each was served, and maps errors to statuses.

mod common;

use common::*;

fn functions() -> String {
    format!(
        r#"
[[functions]]
name = "hello"
runtime = "python3"
code = "{hello}"
handler = "handler.handler"
ready_clones = 2

[[functions]]
name = "ondemand"
runtime = "python3"
code = "{hello}"
handler = "handler.handler"
ready_clones = 0

[[functions]]
name = "cold"
runtime = "python3"
code = "{hello}"
handler = "handler.handler"
zygotes = 0
ready_clones = 0

[[functions]]
name = "fail"
runtime = "python3"
code = "{probe}"
handler = "handler.fail"

[[functions]]
name = "broken"
runtime = "python3"
code = "{probe}"
handler = "no_such_module.handler"
zygotes = 0
ready_clones = 0
"#,
        hello = hello_code().display(),
        probe = probe_code().display()
    )
}

#[test]
fn invoke_over_http_in_fresh_clones() {
    if !require_root("invoke_over_http_in_fresh_clones") {
        return;
    }
    let daemon = Daemon::start_with(&functions(), "max_payload_bytes = 4096");

    let health = http(daemon.addr, "GET", "/healthz", b"");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "ok");

    let mut sandboxes = Vec::new();
    for i in 0..3 {
        let r = daemon.invoke("hello", r#"{"name":"x"}"#);
        assert_eq!(r.status, 200, "{}\n{}", r.text(), daemon.stderr());
        let body = r.json();
        assert_eq!(body["message"], "hello, x");
        assert_eq!(body["function"], "hello");
        assert_eq!(body["memory_limit_mb"], 128);
        // After prewarm a ready clone waits; back-to-back requests may
        // outrun the background refill and wait for the clone it is making
        // (or, if it has none in progress, get an on-demand clone).
        let start = r.header("x-fnhost-start").expect("x-fnhost-start");
        if i == 0 {
            assert_eq!(start, "ready-clone");
        } else {
            assert!(
                ["ready-clone", "refill-clone", "on-demand-clone"].contains(&start),
                "{start}"
            );
        }
        let timing = r.header("server-timing").expect("server-timing");
        for phase in ["queue;dur=", "handler;dur=", "total;dur="] {
            assert!(timing.contains(phase), "{timing}");
        }
        sandboxes.push(
            r.header("x-fnhost-sandbox")
                .expect("sandbox id")
                .to_string(),
        );
    }
    sandboxes.dedup();
    assert_eq!(sandboxes.len(), 3, "every invocation gets its own sandbox");

    let r = daemon.invoke("ondemand", r#"{"name":"y"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-fnhost-start"), Some("on-demand-clone"));
    assert!(r.header("server-timing").unwrap().contains("clone;dur="));

    let r = daemon.invoke("cold", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["message"], "hello, world");
    assert_eq!(r.header("x-fnhost-start"), Some("cold-start"));
    assert!(r.header("server-timing").unwrap().contains("zygote;dur="));

    // Empty body: the event is {}.
    let r = daemon.invoke("hello", "");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn errors_are_json_with_the_right_status() {
    if !require_root("errors_are_json_with_the_right_status") {
        return;
    }
    let daemon = Daemon::start_with(&functions(), "max_payload_bytes = 4096");

    let r = daemon.invoke("nope", "{}");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["errorType"], "FunctionNotFound");
    assert!(r.json()["errorMessage"]
        .as_str()
        .unwrap()
        .contains("'nope'"));

    let r = daemon.invoke("hello", "{not json");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorType"], "InvalidRequestContent");

    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000));
    let r = daemon.invoke("hello", &big);
    assert_eq!(r.status, 413);
    assert!(r.json()["errorMessage"]
        .as_str()
        .unwrap()
        .contains("max_payload_bytes = 4096"));

    let r = daemon.invoke("fail", r#"{"why":"testing"}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    let body = r.json();
    assert_eq!(body["errorType"], "ValueError");
    assert_eq!(body["errorMessage"], "probe failure: testing");
    let trace = body["stackTrace"].as_array().expect("stackTrace list");
    assert!(
        trace
            .iter()
            .any(|l| l.as_str().unwrap().contains("handler.py")),
        "{trace:?}"
    );

    // The pool is unaffected by a failing handler.
    let r = daemon.invoke("hello", "{}");
    assert_eq!(r.status, 200);

    let r = daemon.invoke("broken", "{}");
    assert_eq!(r.status, 502, "{}", r.text());
    let body = r.json();
    assert_eq!(body["errorType"], "Runtime.InitError.ModuleNotFoundError");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("no_such_module"),
        "{body}"
    );

    let r = http(daemon.addr, "GET", "/v1/functions/hello/invoke", b"");
    assert_eq!(r.status, 405);
    let r = http(daemon.addr, "GET", "/nowhere", b"");
    assert_eq!(r.status, 404);

    let metrics = http(daemon.addr, "GET", "/metrics", b"").text();
    assert!(metrics.contains("fnhost_invocations_total"), "{metrics}");
    assert!(metrics.contains("fnhost_phase_seconds_bucket"), "{metrics}");
}

/// Above `server.function_metrics_max` pool metrics are summed, except for
/// a function with `detailed_metrics = true`, which keeps its own series.
#[test]
fn a_detailed_function_keeps_its_metrics_on_a_summed_host() {
    if !require_root("a_detailed_function_keeps_its_metrics_on_a_summed_host") {
        return;
    }
    let functions = python_function(
        "watched",
        &hello_code(),
        "handler.handler",
        "ready_clones = 1\ndetailed_metrics = true",
    ) + &python_function(
        "other",
        &hello_code(),
        "handler.handler",
        "ready_clones = 1",
    );
    let daemon = Daemon::start_with(&functions, "function_metrics_max = 1");
    for name in ["watched", "other"] {
        let r = daemon.invoke(name, "{}");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let metrics = http(daemon.addr, "GET", "/metrics", b"").text();
    let has = |needle: &str| metrics.lines().any(|l| l.contains(needle));
    assert!(
        has("fnhost_phase_seconds_count{function=\"watched\",phase=\"handler\"}"),
        "{metrics}"
    );
    assert!(
        has("fnhost_pool_zygotes{function=\"watched\"}"),
        "{metrics}"
    );
    // The other function's pool metrics are summed (no label of its own);
    // its invocations keep theirs, as for every function.
    assert!(
        !metrics
            .lines()
            .any(|l| l.contains("function=\"other\"") && !l.starts_with("fnhost_invocations_total")),
        "{metrics}"
    );
    assert!(
        has("fnhost_phase_seconds_count{phase=\"handler\"}"),
        "{metrics}"
    );
    assert!(
        has("fnhost_invocations_total{function=\"other\""),
        "{metrics}"
    );
}

/// A clone rehearses the invocation path before its request arrives
/// (taking its copy-on-write faults early) without calling the handler,
/// and reports its page faults, which /metrics shows per stage.
#[test]
fn the_rehearsal_never_calls_the_handler_and_page_faults_are_counted() {
    if !require_root("the_rehearsal_never_calls_the_handler_and_page_faults_are_counted") {
        return;
    }
    let daemon = Daemon::start(&python_function(
        "calls",
        &probe_code(),
        "handler.calls",
        "ready_clones = 2",
    ));
    for _ in 0..5 {
        let r = daemon.invoke("calls", "{}");
        assert_eq!(r.status, 200, "{}\n{}", r.text(), daemon.stderr());
        assert_eq!(r.json()["calls"], 1, "{}", r.text());
    }
    let metrics = http(daemon.addr, "GET", "/metrics", b"").text();
    for stage in ["ready", "invocation"] {
        let count =
            format!("fnhost_clone_page_faults_count{{function=\"calls\",stage=\"{stage}\"}} 5");
        assert!(metrics.contains(&count), "no {count} in:\n{metrics}");
    }
    // A clone is a fresh process: its setup alone faults in pages.
    assert!(
        !metrics.contains(
            "fnhost_clone_page_faults_bucket{function=\"calls\",stage=\"ready\",le=\"10\"} 5"
        ),
        "every clone reported under 10 faults before its request:\n{metrics}"
    );
}
