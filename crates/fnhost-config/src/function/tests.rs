//! Tests of `[defaults]` and `[[functions]]` validation.

use crate::validate::test_support::{assert_invalid, base, parse, FUNCTION};
use crate::{ConfigError, NetworkMode};
use std::path::Path;

#[test]
fn nodejs_handlers_use_lambdas_file_dot_function_spelling() {
    let dir = base();
    let node = |handler: &str| {
        format!("[[functions]]\nname = \"n\"\nruntime = \"nodejs\"\ncode = \"fn\"\nhandler = \"{handler}\"\n")
    };
    for good in [
        "index.handler",
        "src/app.handler",
        "lib/v1.2/api.routes.get",
        "a-b.$h",
    ] {
        let config = parse(&node(good), dir.path()).expect(good);
        assert_eq!(config.functions[0].runtime, crate::Runtime::Nodejs);
        assert_eq!(config.functions[0].handler, good);
    }
    for bad in [
        "index",
        "src/index",
        "/abs/index.handler",
        "../up.handler",
        "a//b.h",
        "index.",
        "index.a-b",
    ] {
        assert_invalid(
            &node(bad),
            5,
            "functions[0].handler",
            "is not a nodejs handler",
        );
    }
    assert_invalid(
        "[[functions]]\nname = \"n\"\nruntime = \"nodejs\"\ncode = \"fn\"\n",
        1,
        "functions[0].handler",
        "a nodejs function needs handler = \"file.function\"",
    );
}

#[test]
fn the_node_interpreter_is_configurable_like_pythons() {
    let dir = base();
    let text = "[defaults]\nnode = \"/usr/local/bin/node\"\n\
                [[functions]]\nname = \"n\"\nruntime = \"nodejs\"\ncode = \"fn\"\nhandler = \"index.handler\"\n\
                [[functions]]\nname = \"m\"\nruntime = \"nodejs\"\ncode = \"fn\"\nhandler = \"index.handler\"\nnode = \"/opt/node/bin/node\"\n";
    let config = parse(text, dir.path()).expect("valid config");
    assert_eq!(
        config.function("n").expect("n").node,
        Path::new("/usr/local/bin/node")
    );
    assert_eq!(
        config.function("m").expect("m").node,
        Path::new("/opt/node/bin/node")
    );
    let plain = parse(
        "[[functions]]\nname = \"n\"\nruntime = \"nodejs\"\ncode = \"fn\"\nhandler = \"index.handler\"\n",
        dir.path(),
    )
    .expect("valid config");
    assert_eq!(
        plain.function("n").expect("n").node,
        Path::new(crate::DEFAULT_NODE)
    );
    assert_invalid(
        "[defaults]\nnode = \"node\"\n",
        2,
        "defaults.node",
        "is not an absolute path; give the interpreter's path inside the sandbox root, e.g. \"/usr/bin/node\"",
    );
}

#[test]
fn defaults_apply_and_functions_override_them() {
    let dir = base();
    let text = format!(
        "[defaults]\nmemory_mb = 256\ncpu = 2\nzygotes = 0\npython = \"/opt/py/bin/python3\"\n\
         env = {{ A = \"1\", B = \"2\" }}\n\
         {FUNCTION}memory_mb = 512\nready_clones = 0\nenv = {{ B = \"3\" }}\n\
         [[functions]]\nname = \"g\"\nruntime = \"python3\"\ncode = \"fn\"\nhandler = \"pkg.mod.fn\"\n"
    );
    let config = parse(&text, dir.path()).expect("valid config");
    let f = config.function("f").expect("f");
    let g = config.function("g").expect("g");
    assert_eq!((f.limits.memory_mb, g.limits.memory_mb), (512, 256));
    assert_eq!((f.limits.cpu, g.limits.cpu), (2.0, 2.0));
    assert_eq!(
        (f.pool.zygotes, f.pool.ready_clones, g.pool.ready_clones),
        (0, 0, 2)
    );
    assert_eq!(f.limits.timeout_ms, 3000);
    assert_eq!(f.python, Path::new("/opt/py/bin/python3"));
    assert_eq!(f.network, NetworkMode::None);
    let env = |spec: &crate::FunctionSpec| {
        spec.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(env(f), "A=1,B=3");
    assert_eq!(env(g), "A=1,B=2");
    let code = dir.path().join("fn").canonicalize().expect("canonical");
    assert_eq!(f.code, code);
}

#[test]
fn hibernation_keys_default_override_and_validate() {
    let dir = base();
    let text = format!(
        "[defaults]\nhibernate_after_ms = 60000\n\
         {FUNCTION}hibernate_mode = \"reclaim\"\nhibernate_prefetch = true\n\
         [[functions]]\nname = \"g\"\nruntime = \"python3\"\ncode = \"fn\"\nhandler = \"m.h\"\n"
    );
    let config = parse(&text, dir.path()).expect("valid config");
    let (f, g) = (
        config.function("f").expect("f"),
        config.function("g").expect("g"),
    );
    assert_eq!(
        (f.pool.hibernate_after_ms, g.pool.hibernate_after_ms),
        (60000, 60000)
    );
    assert_eq!(f.pool.hibernate_mode, crate::HibernateMode::Reclaim);
    assert_eq!(g.pool.hibernate_mode, crate::HibernateMode::Snapshot);
    assert_eq!(
        (f.pool.hibernate_prefetch, g.pool.hibernate_prefetch),
        (true, false)
    );
    // Reclaim keeps no ready clone asleep; snapshot keeps the default one.
    assert_eq!(
        (f.pool.ready_clones_asleep(), g.pool.ready_clones_asleep()),
        (0, 1)
    );
    let plain = parse(FUNCTION, dir.path()).expect("valid config");
    assert_eq!(plain.function("f").expect("f").pool.hibernate_after_ms, 0);
    let none = parse(
        &format!("{FUNCTION}hibernate_ready_clones = 0\n"),
        dir.path(),
    )
    .expect("valid config");
    assert_eq!(none.function("f").expect("f").pool.ready_clones_asleep(), 0);
    let capped = parse(
        &format!("{FUNCTION}ready_clones = 1\nhibernate_ready_clones = 3\n"),
        dir.path(),
    )
    .expect("valid config");
    assert_eq!(
        capped.function("f").expect("f").pool.ready_clones_asleep(),
        1
    );
    assert_invalid(
        &format!("{FUNCTION}hibernate_ready_clones = 2000\n"),
        6,
        "functions[0].hibernate_ready_clones",
        "between 0 and 1024",
    );
    // Sharing snapshot pages: off by default, per function or in
    // [defaults], snapshot mode only.
    assert!(!plain.function("f").expect("f").pool.shares_snapshot_pages());
    let shared = parse(
        &format!(
            "[defaults]\nhibernate_share_pages = true\n{FUNCTION}\
             [[functions]]\nname = \"g\"\nruntime = \"python3\"\ncode = \"fn\"\nhandler = \"m.h\"\n\
             hibernate_mode = \"reclaim\"\n"
        ),
        dir.path(),
    )
    .expect("valid config");
    assert!(shared
        .function("f")
        .expect("f")
        .pool
        .shares_snapshot_pages());
    assert!(!shared
        .function("g")
        .expect("g")
        .pool
        .shares_snapshot_pages());
    assert_invalid(
        &format!("{FUNCTION}hibernate_share_pages = 1\n"),
        6,
        "functions[0].hibernate_share_pages",
        "",
    );
    assert_invalid(
        &format!("{FUNCTION}hibernate_mode = \"swap\"\n"),
        6,
        "functions[0].hibernate_mode",
        "supported: \"snapshot\", \"reclaim\"",
    );
    assert_invalid(
        &format!("{FUNCTION}hibernate_after_ms = -1\n"),
        6,
        "functions[0].hibernate_after_ms",
        "between 0 and 86400000 ms",
    );
}

#[test]
fn limits_are_range_checked() {
    let cases = [
        ("memory_mb = 15", "memory_mb", "between 16 and 1048576 MiB"),
        ("memory_mb = 1048577", "memory_mb", "got 1048577"),
        ("cpu = 0", "cpu", "greater than 0"),
        ("cpu = 1024.5", "cpu", "at most 1024"),
        ("cpu = nan", "cpu", "got NaN"),
        ("cpu = inf", "cpu", "got inf"),
        ("pids = 0", "pids", "between 1 and 4194304"),
        (
            "timeout_ms = 900001",
            "timeout_ms",
            "between 1 and 900000 ms",
        ),
        (
            "writable_layer_mb = 0",
            "writable_layer_mb",
            "between 1 and 1048576 MiB",
        ),
        ("max_concurrency = 0", "max_concurrency", "at least 1"),
        (
            "queue_timeout_ms = 600001",
            "queue_timeout_ms",
            "between 0 and 600000",
        ),
        ("ready_clones = 1025", "ready_clones", "between 0 and 1024"),
        ("zygotes = 65", "zygotes", "between 0 and 64"),
        (
            "zygotes = 5",
            "zygotes",
            "max_instances (4) must be at least zygotes (5)",
        ),
        ("max_instances = 0", "max_instances", "between 1 and 64"),
        ("zygotes = -1", "zygotes", "got -1"),
        (
            "network = \"host\"",
            "network",
            "supported: \"none\", \"shared-loopback\"",
        ),
        ("python = \"python3\"", "python", "absolute path"),
        ("env = { \"A B\" = \"v\" }", "env.\"A B\"", "variable names"),
        (
            "env = { FNHOST_SECCOMP = \"unconfined\" }",
            "env.FNHOST_SECCOMP",
            "reserved",
        ),
        ("seccomp = \"lax\"", "seccomp", "\"unconfined\""),
        (
            "env = { 1X = \"v\" }",
            "env.1X",
            "not starting with a digit",
        ),
    ];
    for (line, key, needle) in cases {
        // In a function: line 6, right after the four required keys.
        assert_invalid(
            &format!("{FUNCTION}{line}\n"),
            6,
            &format!("functions[0].{key}"),
            needle,
        );
        // In [defaults], even with no function to apply them to.
        assert_invalid(
            &format!("[defaults]\n\n{line}\n"),
            3,
            &format!("defaults.{key}"),
            needle,
        );
    }
}

#[test]
fn function_identity_is_checked() {
    let with = |key: &str, value: &str| {
        FUNCTION.replace(&format!("{key} = "), &format!("{key} = {value} #"))
    };
    assert_invalid(
        &with("name", "\"Hello\""),
        2,
        "functions[0].name",
        "a-z 0-9 _ -",
    );
    assert_invalid(
        &with("name", "\"-x\""),
        2,
        "functions[0].name",
        "starting with a letter or digit",
    );
    assert_invalid(
        &with("name", &format!("\"{}\"", "a".repeat(64))),
        2,
        "functions[0].name",
        "1 to 63",
    );
    assert_invalid(
        &with("runtime", "\"node18\""),
        3,
        "functions[0].runtime",
        "supported: \"python3\", \"exec\", \"rust\", \"nodejs\"",
    );
    assert_invalid(
        &with("handler", "\"handler\""),
        5,
        "functions[0].handler",
        "module.function",
    );
    assert_invalid(
        &with("handler", "\"a..b\""),
        5,
        "functions[0].handler",
        "module.function",
    );
    assert_invalid(
        &with("handler", "\"1a.b\""),
        5,
        "functions[0].handler",
        "identifiers",
    );
}

#[test]
fn exec_and_rust_functions_take_a_command() {
    let dir = base();
    for runtime in ["exec", "rust"] {
        let text = format!(
            "[[functions]]\nname = \"f\"\nruntime = \"{runtime}\"\ncode = \"fn\"\ncommand = [\"/var/task/fn\", \"-v\"]\n"
        );
        let config = parse(&text, dir.path()).expect("valid config");
        let f = config.function("f").expect("f");
        assert_eq!(f.runtime.as_str(), runtime);
        assert_eq!(
            f.command,
            vec!["/var/task/fn".to_string(), "-v".to_string()]
        );
        assert_eq!(f.handler, "");
    }
    let python = parse(FUNCTION, dir.path()).expect("valid config");
    assert!(python.functions[0].command.is_empty());
}

#[test]
fn image_is_an_optional_reference() {
    let dir = base();
    let config = parse(FUNCTION, dir.path()).expect("valid");
    assert_eq!(config.functions[0].image, None);
    for good in ["pyimg:1", "team/app", "python:3.11-slim", "a__b.c-d/e:V_1"] {
        let config = parse(&format!("{FUNCTION}image = \"{good}\"\n"), dir.path()).expect(good);
        assert_eq!(config.functions[0].image.as_deref(), Some(good));
    }
    for bad in ["", "Py:1", "../x:1", "a//b", "a:", "a:-x", "a b:1", "a:b/c"] {
        assert_invalid(
            &format!("{FUNCTION}image = \"{bad}\"\n"),
            6,
            "functions[0].image",
            "is not an image reference",
        );
    }
}

#[test]
fn command_and_handler_belong_to_their_runtimes() {
    let exec = |line: &str| {
        format!("[[functions]]\nname = \"f\"\nruntime = \"exec\"\ncode = \"fn\"\n{line}\n")
    };
    assert_invalid(
        &exec(""),
        1,
        "functions[0].command",
        "missing required key `command`",
    );
    assert_invalid(
        &exec("command = [\"/var/task/fn\"]\nhandler = \"m.h\""),
        6,
        "functions[0].handler",
        "`handler` is for python3 and nodejs",
    );
    assert_invalid(
        &exec("command = []"),
        5,
        "functions[0].command",
        "must not be empty",
    );
    assert_invalid(
        &exec("command = [\"./fn\"]"),
        5,
        "functions[0].command",
        "\"/var/task/fn\"",
    );
    assert_invalid(
        &exec("command = \"/var/task/fn\""),
        5,
        "functions[0].command",
        "",
    );
    assert_invalid(
        &FUNCTION.replace("rust", "x").replace("python3", "rust"),
        5,
        "functions[0].handler",
        "a rust function names its program with command",
    );
    assert_invalid(
        &format!("{FUNCTION}command = [\"/var/task/fn\"]\n"),
        6,
        "functions[0].command",
        "`command` is for exec and rust functions",
    );
    let no_handler = FUNCTION.replace("handler = \"m.h\"\n", "");
    assert_invalid(
        &no_handler,
        1,
        "functions[0].handler",
        "missing required key `handler`",
    );
}

#[test]
fn required_keys_point_at_the_function_header() {
    let text = format!(
        "{FUNCTION}\n[[functions]]\nname = \"g\"\nruntime = \"python3\"\nhandler = \"m.h\"\n"
    );
    assert_invalid(&text, 7, "functions[1].code", "missing required key `code`");
    assert_invalid(
        "\n[[functions]]\n",
        2,
        "functions[0].name",
        "missing required key `name`",
    );
}

#[test]
fn code_must_be_an_existing_directory() {
    let dir = base();
    let missing = dir.path().join("absent");
    let text = FUNCTION.replace("\"fn\"", "\"absent\"");
    match parse(&text, dir.path()) {
        Err(ConfigError::Invalid {
            line, key, message, ..
        }) => {
            assert_eq!((line, key.as_str()), (Some(4), "functions[0].code"));
            assert!(
                message.contains(&missing.display().to_string()),
                "{message}"
            );
            assert!(message.contains("does not exist"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_invalid(
        &FUNCTION.replace("\"fn\"", "\"file\""),
        4,
        "functions[0].code",
        "is not a directory",
    );
    // Absolute code paths ignore the base directory.
    let absolute = dir.path().join("fn");
    let text = FUNCTION.replace("\"fn\"", &format!("{:?}", absolute.display().to_string()));
    let config = parse(&text, Path::new("/nonexistent")).expect("absolute code path");
    assert_eq!(
        config.functions[0].code,
        absolute.canonicalize().expect("canonical")
    );
}

#[test]
fn detailed_metrics_is_off_unless_asked_for() {
    let dir = base();
    let text = format!(
        "{FUNCTION}detailed_metrics = true\n\
         [[functions]]\nname = \"g\"\nruntime = \"python3\"\ncode = \"fn\"\nhandler = \"m.h\"\n"
    );
    let config = parse(&text, dir.path()).expect("valid config");
    assert!(config.function("f").expect("f").detailed_metrics);
    assert!(!config.function("g").expect("g").detailed_metrics);
    let all = parse(
        &format!("[defaults]\ndetailed_metrics = true\n{FUNCTION}"),
        dir.path(),
    )
    .expect("valid config");
    assert!(all.function("f").expect("f").detailed_metrics);
    assert_invalid(
        &format!("{FUNCTION}detailed_metrics = \"yes\"\n"),
        6,
        "functions[0].detailed_metrics",
        "",
    );
}
