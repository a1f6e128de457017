//! End-to-end: every runtime serves invocations from fresh clones — exec
//! functions (request on stdin, response on stdout, non-zero exit = error),
//! native Rust functions built with fnhost-sdk, and Python side by side.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn wordcount_code() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/functions/exec-wordcount")
}

/// The example Rust function's binary, built by `cargo build --workspace`
/// next to the fnhost binary.
fn rust_hello_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_fnhost")).with_file_name("rust-hello");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace builds the example Rust function)",
        path.display()
    );
    path
}

/// A code directory holding the example Rust function's binary.
fn rust_code() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(rust_hello_binary(), dir.path().join("rust-hello")).expect("copy rust-hello");
    dir
}

/// A code directory of small exec functions written for these tests.
fn exec_probe_code() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let scripts = [
        (
            "procs.sh",
            r#"#!/bin/sh
pids=$(cd /proc && ls -d [0-9]* | sort -n | tr '\n' ',' | sed 's/,$//')
leaks=$(env | grep -c -e '^FNHOST_MAX_RESPONSE' -e '^FNHOST_ZYGOTE' -e '^FNHOST_SECCOMP')
printf '{"self": %s, "pids": [%s], "leaked_env": %s, "request_id": "%s", "cwd": "%s", "args": "%s"}' \
    "$$" "$pids" "$leaks" "$FNHOST_REQUEST_ID" "$(pwd)" "$*"
"#,
        ),
        (
            "big.sh",
            "#!/bin/sh\nyes aaaaaaaaaaaaaaa | head -c 2000000\n",
        ),
        (
            "killed.sh",
            "#!/bin/sh\necho 'about to die' >&2\nkill -9 $$\n",
        ),
    ];
    for (name, text) in scripts {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

fn exec_function(name: &str, code: &Path, command: &str, extra: &str) -> String {
    format!("\n[[functions]]\nname = \"{name}\"\nruntime = \"exec\"\ncode = \"{}\"\ncommand = {command}\n{extra}\n", code.display())
}

fn rust_function(name: &str, code: &Path) -> String {
    format!("\n[[functions]]\nname = \"{name}\"\nruntime = \"rust\"\ncode = \"{}\"\ncommand = [\"/var/task/rust-hello\"]\n", code.display())
}

fn python_function(name: &str) -> String {
    format!(
        "\n[[functions]]\nname = \"{name}\"\nruntime = \"python3\"\ncode = \"{}\"\nhandler = \"handler.handler\"\n",
        hello_code().display()
    )
}

#[test]
fn exec_functions_read_stdin_and_answer_on_stdout() {
    if !require_root("exec_functions_read_stdin_and_answer_on_stdout") {
        return;
    }
    let probes = exec_probe_code();
    let mut functions = exec_function(
        "wordcount",
        &wordcount_code(),
        "[\"/var/task/wordcount\"]",
        "",
    );
    functions += &exec_function(
        "procs",
        probes.path(),
        "[\"/var/task/procs.sh\", \"one\", \"two\"]",
        "",
    );
    functions += &exec_function(
        "big",
        probes.path(),
        "[\"/var/task/big.sh\"]",
        "ready_clones = 0",
    );
    functions += &exec_function(
        "killed",
        probes.path(),
        "[\"/var/task/killed.sh\"]",
        "ready_clones = 0",
    );
    functions += &exec_function(
        "missing",
        probes.path(),
        "[\"/var/task/nope\"]",
        "zygotes = 0\nready_clones = 0",
    );
    let daemon = Daemon::start_with(&functions, "max_response_bytes = 1048576");

    // The payload arrives on stdin (larger than a pipe buffer), stdout is the response.
    let words = vec!["word"; 50_000].join(" ");
    let payload = format!(r#"{{"text": "{words}"}}"#);
    let r = daemon.invoke("wordcount", &payload);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["words"], 50_001, "{body}");
    assert_eq!(body["bytes"], payload.len(), "{body}");
    assert!(
        !body["request_id"].as_str().unwrap_or_default().is_empty(),
        "{body}"
    );

    // Non-zero exit: a function error naming the code, quoting stderr.
    let r = daemon.invoke("wordcount", r#"{"fail": true}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    let error = r.json();
    assert_eq!(error["errorType"], "Function.ExitError", "{error}");
    let message = error["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("exited with code 3"), "{message}");
    assert!(message.contains("wordcount: asked to fail"), "{message}");
    // The sandbox was discarded; the pool keeps serving.
    let r = daemon.invoke("wordcount", r#"{"text": "a b c"}"#);
    assert_eq!(
        (r.status, r.json()["words"].as_u64()),
        (200, Some(4)),
        "{}",
        r.text()
    );

    // The command is the clone's only child: it sees its own pid namespace
    // and nothing of the host, gets its arguments, cwd and per-request env,
    // and no fnhost-internal variables.
    let r = daemon.invoke("procs", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["self"], 2, "{seen}");
    let pids: Vec<u64> = seen["pids"]
        .as_array()
        .expect("pids")
        .iter()
        .filter_map(|p| p.as_u64())
        .collect();
    assert!(
        pids.contains(&1) && pids.iter().all(|&p| p < 10),
        "the command sees host processes: {pids:?}"
    );
    assert_eq!(seen["leaked_env"], 0, "{seen}");
    assert_eq!(seen["cwd"], "/var/task", "{seen}");
    assert_eq!(seen["args"], "one two", "{seen}");
    assert!(
        !seen["request_id"].as_str().unwrap_or_default().is_empty(),
        "{seen}"
    );

    // Stdout past max_response_bytes: the command is killed, the error names the limit.
    let r = daemon.invoke("big", "{}");
    assert_eq!(r.status, 502, "{}", r.text());
    let error = r.json();
    assert_eq!(error["errorType"], "Function.ResponseTooLarge", "{error}");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("max_response_bytes"),
        "{error}"
    );

    // Killed by a signal: named as such.
    let r = daemon.invoke("killed", "{}");
    assert_eq!(r.status, 502, "{}", r.text());
    let message = r.json()["errorMessage"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("killed by signal 9") && message.contains("about to die"),
        "{message}"
    );

    // A command that is not in the root: an init error naming the path.
    let r = daemon.invoke("missing", "{}");
    assert_eq!(r.status, 502, "{}", r.text());
    let error = r.json();
    assert_eq!(
        error["errorType"], "Runtime.InitError.CommandNotFound",
        "{error}"
    );
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("/var/task/nope"),
        "{error}"
    );
}

#[test]
fn rust_functions_serve_from_their_own_zygote() {
    if !require_root("rust_functions_serve_from_their_own_zygote") {
        return;
    }
    let code = rust_code();
    let daemon = Daemon::start(&rust_function("rust", code.path()));

    let r = daemon.invoke("rust", r#"{"name": "ferris"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["message"], "hello, ferris", "{body}");
    assert_eq!(body["function"], "rust", "{body}");
    assert_eq!(body["memory_limit_mb"], 128, "{body}");
    // The handler runs in the clone itself: PID 1 of its own namespace.
    assert_eq!(body["pid"], 1, "{body}");
    let first_id = body["request_id"].as_str().unwrap_or_default().to_string();
    assert!(!first_id.is_empty(), "{body}");
    let again = daemon.invoke("rust", "{}");
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["message"], "hello, world");
    assert_ne!(again.json()["request_id"].as_str(), Some(first_id.as_str()));

    // A handler error: its type and message.
    let r = daemon.invoke("rust", r#"{"fail": "no name given"}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    let error = r.json();
    assert_eq!(error["errorType"], "HelloError", "{error}");
    assert_eq!(error["errorMessage"], "no name given", "{error}");

    // A panic is a function error too; the pool is unaffected.
    let r = daemon.invoke("rust", r#"{"panic": true}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["errorType"], "Panic", "{}", r.text());
    assert_eq!(daemon.invoke("rust", "{}").status, 200);
}

#[test]
fn concurrent_invocations_across_runtimes() {
    if !require_root("concurrent_invocations_across_runtimes") {
        return;
    }
    let code = rust_code();
    let functions = python_function("py")
        + &exec_function("wc", &wordcount_code(), "[\"/var/task/wordcount\"]", "")
        + &rust_function("rs", code.path());
    let daemon = Daemon::start(&functions);

    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|worker| {
                let daemon = &daemon;
                scope.spawn(move || {
                    for i in 0..20 {
                        let name = format!("w{worker}r{i}");
                        let (function, payload) = match (worker + i) % 3 {
                            0 => ("py", format!(r#"{{"name": "{name}"}}"#)),
                            1 => ("wc", format!(r#"{{"text": "{name} two three"}}"#)),
                            _ => ("rs", format!(r#"{{"name": "{name}"}}"#)),
                        };
                        let r = daemon.invoke(function, &payload);
                        assert_eq!(r.status, 200, "{function} {payload}: {}", r.text());
                        let body = r.json();
                        match function {
                            "wc" => assert_eq!(body["words"], 4, "{body}"),
                            _ => assert_eq!(body["message"], format!("hello, {name}"), "{body}"),
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("worker");
        }
    });
}

/// `/proc/<pid>/status` fields of every process in `function`'s zygote
/// cgroups, from the host.
fn zygote_processes(daemon: &Daemon, function: &str) -> Vec<Status> {
    daemon
        .zygote_pids(function)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .map(|status| {
            status
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect()
        })
        .collect()
}

type Status = std::collections::BTreeMap<String, String>;

/// A zygote's processes by role, among those of its cgroups: init (pid 1
/// of the zygote's pid namespace), the runtimes (init's children) and the
/// forkers (the runtimes' children, see reused_network). Clones, whose
/// pids span three pid namespaces, are none of these.
fn zygote_roles(processes: &[Status]) -> (Option<&Status>, Vec<&Status>, Vec<&Status>) {
    let in_zygote: Vec<&Status> = processes
        .iter()
        .filter(|p| p["NSpid"].split_whitespace().count() == 2)
        .collect();
    let init = in_zygote
        .iter()
        .copied()
        .find(|p| p["NSpid"].split_whitespace().nth(1) == Some("1"));
    let children_of = |parents: &[&Status]| -> Vec<&Status> {
        in_zygote
            .iter()
            .copied()
            .filter(|p| parents.iter().any(|parent| p["PPid"] == parent["Pid"]))
            .collect()
    };
    let runtimes = children_of(init.as_slice());
    let forkers = children_of(&runtimes);
    (init, runtimes, forkers)
}

#[test]
fn every_runtime_serves_from_an_unprivileged_zygote() {
    if !require_root("every_runtime_serves_from_an_unprivileged_zygote") {
        return;
    }
    let rust = rust_code();
    let exec = exec_probe_code();
    let functions = rust_function("rust", rust.path())
        + &exec_function("exec", exec.path(), "[\"/var/task/procs.sh\"]", "")
        + &python_function("python")
        + &format!(
            "\n[[functions]]\nname = \"node\"\nruntime = \"nodejs\"\ncode = \"{}\"\nhandler = \"index.handler\"\n",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples/functions/greet-node")
                .display()
        );
    let daemon = Daemon::start(&functions);
    let mut uids = Vec::new();
    for function in ["rust", "exec", "python", "node"] {
        let r = daemon.invoke(function, "{}");
        assert_eq!(r.status, 200, "{function}: {}", r.text());
        // Init (pid 1 of the zygote's namespace, root there, never running
        // function code) and the runtime, which must hold nothing. A clone
        // being set up may sit in the zygote's cgroup for a moment (its pids
        // span three pid namespaces): it is not the zygote. Nor are the
        // runtime's forkers (its children, see reused_network).
        // The pool's first two clones are made the old way; the zygote
        // starts a forker after the second (the refill after this
        // invocation makes one at the latest): wait for that state.
        let mut processes = zygote_processes(&daemon, function);
        eventually(Duration::from_secs(30), || {
            processes = zygote_processes(&daemon, function);
            !zygote_roles(&processes).2.is_empty()
        });
        let (init, runtimes, forkers) = zygote_roles(&processes);
        assert!(init.is_some(), "{function}: no init in {processes:?}");
        assert_eq!(runtimes.len(), 1, "{function}: {processes:?}");
        let runtime = runtimes[0];
        // A forker holds capabilities only in a user namespace of its own,
        // under the runtime's no_new_privs and seccomp filter.
        let user_namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
        assert!(!forkers.is_empty(), "{function}: no forker: {processes:?}");
        for forker in forkers {
            assert_eq!(forker["NoNewPrivs"], "1", "{function}: {forker:?}");
            assert_eq!(forker["Seccomp"], "2", "{function}: {forker:?}");
            assert_ne!(
                user_namespace(&forker["Pid"]),
                user_namespace(&runtime["Pid"]),
                "{function}: a forker in the runtime's user namespace: {forker:?}"
            );
        }
        // uid 1000 of the function's own range of 1024 host ids.
        let uid: u32 = runtime["Uid"]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            runtime["Uid"],
            format!("{uid}\t{uid}\t{uid}\t{uid}"),
            "{function}: {runtime:?}"
        );
        assert!(
            uid >= 2_000_000_000 && (uid - 2_000_000_000) % 1024 == 1000,
            "{function}: uid {uid}"
        );
        uids.push(uid);
        for caps in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
            assert_eq!(
                runtime[caps], "0000000000000000",
                "{function} {caps}: {runtime:?}"
            );
        }
        assert_eq!(runtime["NoNewPrivs"], "1", "{function}: {runtime:?}");
        assert_eq!(runtime["Seccomp"], "2", "{function}: {runtime:?}");
    }
    // No two functions share a host uid.
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), 4, "{uids:?}");
}
