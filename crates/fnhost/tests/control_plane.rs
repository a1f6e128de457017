//! The Lambda control plane (issue 13) driven by boto3 and the aws CLI
//! (installed into .venv/ by scripts/install-deps.sh) against a real
//! daemon: lifecycle with waiters, update under load, bad inputs, SigV4,
//! restart and kill -9 persistence. The client is control_plane/client.py.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FNHOST_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/control_plane/client.py")
}

/// The Lambda name of the host's python (what functions run on).
fn host_runtime() -> String {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys; print('python%d.%d' % sys.version_info[:2])",
        ])
        .output()
        .expect("run /usr/bin/python3");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

fn run(phase: &str, daemon: &Daemon, work: &Path) -> serde_json::Value {
    let out = Command::new(python())
        .arg(client_script())
        .args([phase, &format!("http://{}", daemon.addr), &host_runtime()])
        .arg(work)
        .output()
        .expect("run the client");
    assert!(
        out.status.success(),
        "client phase {phase} failed: {}\n--- daemon ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.stderr()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "phase {phase}: bad report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn code(report: &serde_json::Value, key: &str) -> String {
    report[key]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{key}: no error code in {report}"))
        .to_string()
}

const SERVER: &str = "invoke_auth = \"sigv4\"\nmax_code_zip_bytes = 2097152\nmax_code_unzipped_bytes = 3145728\n\
[[server.aws_credentials]]\naccess_key_id = \"AKIDFNHOSTTEST\"\nsecret_access_key = \"fnhost-test-secret\"\n";

#[test]
fn lambda_control_plane_with_boto3_and_the_aws_cli() {
    if !require_root("lambda_control_plane_with_boto3_and_the_aws_cli") {
        return;
    }
    assert!(
        python().exists(),
        "{} missing: run scripts/install-deps.sh",
        python().display()
    );
    let base = tempfile::tempdir().expect("tempdir");
    let root = unique_cgroup_root();
    let file_fn = python_function("hello", &hello_code(), "handler.handler", "");
    let config = write_config(base.path(), &root, SERVER, &file_fn);
    let start = || {
        Daemon::start_config(
            tempfile::tempdir().expect("tempdir"),
            config.clone(),
            root.clone(),
        )
    };
    let mut first = start();

    // Lifecycle, waiters, pagination, concurrency, update under load.
    let d = run("deploy", &first, base.path());
    assert_eq!(d["create"]["State"], "Active", "{d}");
    assert_eq!(d["create"]["CodeSha256"], d["v1_sha"], "{d}");
    assert_eq!(d["create"]["Version"], "$LATEST");
    assert_eq!(
        d["invoke_v1"]["payload"],
        serde_json::json!({"version": 1, "greeting": "hi"}),
        "{d}"
    );
    assert_eq!(d["get"]["description"], "made by boto3");
    assert_eq!(d["get_file_fn"], "hello");
    assert_eq!(
        d["list"]["names"],
        serde_json::json!(["api-b", "api-c", "api-d", "api-fn", "hello"]),
        "{d}"
    );
    assert_eq!(d["list"]["pages"], 3, "{d}");
    assert_eq!(d["update_config"]["memory"], 256);
    assert_eq!(d["invoke_config"]["payload"]["greeting"], "hi2", "{d}");
    assert_eq!(d["concurrency"], 5);
    assert_eq!(d["provisioned"], 1);
    assert_eq!(d["provisioned_get"], "READY");
    assert_eq!(d["update_code_sha"], d["v2_sha"]);
    assert_eq!(d["after_update"]["payload"]["version"], 2, "{d}");
    let in_flight = d["in_flight"].as_array().expect("results");
    assert_eq!(in_flight.len(), 46, "{d}");
    for r in in_flight {
        assert!(
            r["error"].is_null() && r.get("exception").is_none(),
            "an invocation failed during the update: {r}"
        );
        let v = &r["payload"]["version"];
        assert!(v == 1 || v == 2, "{r}");
        assert_eq!(r["payload"]["greeting"], "hi2", "{r}");
    }
    assert_eq!(
        d["slow"][0]["payload"]["version"], 1,
        "the invocation in flight finishes on the old code: {d}"
    );
    assert_eq!(d["delete_d"], 204);
    assert_eq!(d["deleted_get"]["code"], "ResourceNotFoundException");

    // Bad inputs: each an AWS-style error; nothing half-created.
    let b = run("bad", &first, base.path());
    for (key, expected) in [
        ("not_a_zip", "InvalidParameterValueException"),
        ("dotdot", "InvalidParameterValueException"),
        ("absolute", "InvalidParameterValueException"),
        ("symlink", "InvalidParameterValueException"),
        ("bomb", "InvalidParameterValueException"),
        ("too_large", "RequestEntityTooLargeException"),
        ("too_large_unzipped", "InvalidParameterValueException"),
        ("missing_module", "InvalidParameterValueException"),
        ("runtime_other_python", "InvalidParameterValueException"),
        ("runtime_node", "InvalidParameterValueException"),
        ("duplicate", "ResourceConflictException"),
        ("file_name", "ResourceConflictException"),
        ("bad_name", "ValidationException"),
        ("upper_name", "InvalidParameterValueException"),
        ("memory_low", "ValidationException"),
        ("memory_high", "ValidationException"),
        ("timeout_high", "ValidationException"),
        ("layers", "InvalidParameterValueException"),
        ("s3", "InvalidParameterValueException"),
        ("publish_version", "UnsupportedOperationException"),
        ("aliases", "UnsupportedOperationException"),
        ("update_file_fn", "ResourceConflictException"),
        ("delete_file_fn", "ResourceConflictException"),
        ("missing", "ResourceNotFoundException"),
        ("update_bad_zip", "InvalidParameterValueException"),
        ("concurrency_zero", "InvalidParameterValueException"),
    ] {
        assert_eq!(code(&b, key), expected, "{key}: {}", b[key]);
    }
    assert!(
        b["bomb"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("bomb"),
        "{}",
        b["bomb"]
    );
    assert!(
        b["too_large_unzipped"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("max_code_unzipped_bytes"),
        "{b}"
    );
    assert!(
        b["missing_module"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Runtime.ImportModuleError"),
        "{b}"
    );
    assert!(
        b["runtime_other_python"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&host_runtime()),
        "{b}"
    );
    assert!(
        b["update_file_fn"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("read-only"),
        "{b}"
    );
    assert_eq!(b["before_bad"], b["after_bad"], "{b}");
    // Only the two zips in use (v1, v2) are stored: refused ones left nothing.
    let stored = std::fs::read_dir(base.path().join("state/functions/code"))
        .expect("code dir")
        .count();
    assert_eq!(stored, 2, "code directories after the bad inputs");
    assert_eq!(b["still_v2"]["version"], 2);

    // Node.js through the same API: the host's node version, an ES module
    // in a subdirectory, a fresh sandbox per invocation, code updates.
    let n = run("node", &first, base.path());
    assert_eq!(n["created_runtime"], n["runtime"], "{n}");
    assert_eq!(n["state"], "Active", "{n}");
    for (key, echo) in [("first", "a"), ("second", "b")] {
        let payload = &n[key]["payload"];
        assert!(n[key]["error"].is_null(), "{key}: {n}");
        assert_eq!(payload["version"], 1, "{key}: {n}");
        assert_eq!(payload["count"], 1, "{key}: module state carried over: {n}");
        assert_eq!(payload["name"], "node-fn", "{n}");
        assert_eq!(payload["greeting"], "hej", "{n}");
        assert_eq!(payload["echo"], echo, "{n}");
    }
    assert_eq!(n["updated"]["payload"]["version"], 2, "{n}");
    assert_eq!(code(&n, "missing"), "InvalidParameterValueException");
    assert!(
        n["missing"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Cannot find module 'index'"),
        "{n}"
    );
    // Switching node code to a python runtime: its handler module is missing.
    assert_eq!(
        code(&n, "python_for_node_code"),
        "InvalidParameterValueException",
        "{n}"
    );
    assert_eq!(n["names"], b["after_bad"], "{n}");

    // SigV4: accepted and refused as AWS does.
    let a = run("auth", &first, base.path());
    assert_eq!(code(&a, "wrong_secret"), "InvalidSignatureException", "{a}");
    assert_eq!(
        code(&a, "unknown_key"),
        "UnrecognizedClientException",
        "{a}"
    );
    assert_eq!(a["raw_ok"]["status"], 200, "{a}");
    assert_eq!(
        a["raw_tampered"]["type"], "InvalidSignatureException",
        "{a}"
    );
    assert_eq!(a["raw_expired"]["type"], "InvalidSignatureException", "{a}");
    assert!(
        a["raw_expired"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Signature expired"),
        "{a}"
    );
    assert_eq!(
        a["raw_unsigned"]["type"], "MissingAuthenticationTokenException",
        "{a}"
    );
    assert_eq!(a["raw_invoke_unsigned"]["status"], 403, "{a}");
    assert_eq!(a["raw_invoke_signed"]["status"], 200, "{a}");

    // The aws CLI.
    let c = run("awscli", &first, base.path());
    for step in ["create", "wait", "invoke", "list", "concurrency", "delete"] {
        assert_eq!(c[step]["rc"], 0, "aws lambda {step}: {}", c[step]);
    }
    assert_eq!(c["invoke_payload"]["version"], 7, "{c}");
    assert!(c["list"]["out"]
        .as_str()
        .unwrap_or_default()
        .contains("cli-fn"));
    assert!(
        c["get_deleted"]["err"]
            .as_str()
            .unwrap_or_default()
            .contains("ResourceNotFoundException"),
        "{c}"
    );

    // Restart: API functions come back from the store.
    first.stop();
    let mut second = start();
    let r = run("after-restart", &second, base.path());
    assert_eq!(
        r["invoke"]["payload"],
        serde_json::json!({"version": 2, "greeting": "hi2"}),
        "{r}"
    );
    assert_eq!(r["memory"], 256);
    assert_eq!(r["sha"], d["v2_sha"]);
    assert_eq!(r["concurrency"], 5);
    assert_eq!(
        r["names"],
        serde_json::json!(["api-b", "api-c", "api-fn", "hello"]),
        "{r}"
    );

    // A reload keeps API functions; a file function of the same name
    // shadows one and is read-only.
    let reload = |d: &Daemon| {
        let r = d.admin("POST", "/admin/reload", "", None);
        assert_eq!(
            r.status,
            200,
            "reload: {}",
            String::from_utf8_lossy(&r.body)
        );
    };
    reload(&second);
    let r = run("after-restart", &second, base.path());
    assert_eq!(r["invoke"]["payload"]["version"], 2, "{r}");
    assert_eq!(
        r["names"],
        serde_json::json!(["api-b", "api-c", "api-fn", "hello"]),
        "{r}"
    );
    let original = std::fs::read_to_string(&config).expect("config");
    let shadowing = python_function("api-b", &hello_code(), "handler.handler", "");
    std::fs::write(&config, format!("{original}\n{shadowing}")).expect("write config");
    reload(&second);
    let s = run("shadow", &second, base.path());
    assert!(
        s["description"]
            .as_str()
            .unwrap_or_default()
            .contains("config file"),
        "{s}"
    );
    assert_eq!(code(&s, "update"), "ResourceConflictException", "{s}");
    assert_eq!(
        s["invoke"]["payload"]["message"], "hello, world",
        "the file's api-b serves: {s}"
    );
    std::fs::write(&config, original).expect("restore config");
    reload(&second);

    // kill -9 during an update: after the restart the function is wholly
    // the old version or wholly the new one.
    let mut updater = Command::new(python())
        .arg(client_script())
        .args([
            "update-v3",
            &format!("http://{}", second.addr),
            &host_runtime(),
        ])
        .arg(base.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the updater");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(updater.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("updater output");
    let v3: serde_json::Value = serde_json::from_str(&line).expect("v3 sha");
    // Kill as soon as the daemon is working on the update (new code being
    // extracted or in place), or after 10 s whatever it is doing.
    let store = base.path().join("state/functions");
    let count = |d: &str| {
        std::fs::read_dir(store.join(d))
            .map(|e| e.count())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count("tmp") == 0 && count("code") <= 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (scratch, code_dirs) = (count("tmp"), count("code"));
    second.crash();
    let _ = updater.wait();
    let third = start();
    let r = run("after-restart", &third, base.path());
    let version = r["invoke"]["payload"]["version"]
        .as_i64()
        .expect("a version");
    eprintln!("kill -9 landed with {scratch} scratch and {code_dirs} code directories; after the restart: version {version}");
    match version {
        2 => assert_eq!(r["sha"], d["v2_sha"], "{r}"),
        3 => assert_eq!(r["sha"], v3["v3_sha"], "{r}"),
        other => panic!("version {other} after kill -9: {r}"),
    }
    assert_eq!(r["memory"], 256, "{r}");
    // Stop the later runs first: the first's drop checks the shared cgroup root.
    drop(third);
    drop(second);
    drop(first);
}
