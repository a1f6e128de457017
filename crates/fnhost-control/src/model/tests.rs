use super::*;

fn runtimes() -> Runtimes {
    Runtimes {
        python: Some("3.11".into()),
        node: Some("20".into()),
    }
}

fn body(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("object")
}

#[test]
fn names() {
    assert!(check_name("hello-world_1").is_ok());
    assert_eq!(
        check_name("has space").unwrap_err().kind,
        "ValidationException"
    );
    assert_eq!(
        check_name(&"a".repeat(65)).unwrap_err().kind,
        "ValidationException"
    );
    assert_eq!(
        check_name("Hello").unwrap_err().kind,
        "InvalidParameterValueException"
    );
    assert_eq!(check_name("").unwrap_err().kind, "ValidationException");
}

#[test]
fn limits_of_memory_and_timeout() {
    let e = ConfigChange::parse(&body(json!({"MemorySize": 64})), &runtimes()).unwrap_err();
    assert_eq!(e.kind, "ValidationException");
    assert!(
        e.message.contains("memorySize") && e.message.contains("128"),
        "{e}"
    );
    let e = ConfigChange::parse(&body(json!({"Timeout": 901})), &runtimes()).unwrap_err();
    assert!(e.message.contains("900"), "{e}");
    let ok = ConfigChange::parse(
        &body(json!({"Timeout": 900, "MemorySize": 10240})),
        &runtimes(),
    )
    .expect("ok");
    assert_eq!((ok.timeout, ok.memory_size), (Some(900), Some(10240)));
}

#[test]
fn unsupported_fields_are_refused_and_empty_ones_ignored() {
    let e = ConfigChange::parse(&body(json!({"Layers": ["arn:x"]})), &runtimes()).unwrap_err();
    assert!(e.message.contains("Layers"), "{e}");
    assert!(ConfigChange::parse(
        &body(json!({"Layers": [], "VpcConfig": {"SubnetIds": []}})),
        &runtimes()
    )
    .is_ok());
}

#[test]
fn environment_and_handler() {
    let c = ConfigChange::parse(
        &body(json!({"Environment": {"Variables": {"GREETING": "hi"}}, "Handler": "app.main"})),
        &runtimes(),
    )
    .expect("ok");
    assert_eq!(c.environment.expect("env")["GREETING"], "hi");
    assert!(ConfigChange::parse(
        &body(json!({"Environment": {"Variables": {"AWS_REGION": "x"}}})),
        &runtimes()
    )
    .is_err());
    assert!(ConfigChange::parse(
        &body(json!({"Environment": {"Variables": {"1X": "x"}}})),
        &runtimes()
    )
    .is_err());
    assert!(ConfigChange::parse(&body(json!({"Handler": "nodot"})), &runtimes()).is_err());
    assert!(ConfigChange::parse(&body(json!({"Runtime": "python2.7"})), &runtimes()).is_err());
}

#[test]
fn handler_module_lookup() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("pkg")).expect("mkdir");
    std::fs::write(dir.path().join("app.py"), "").expect("write");
    std::fs::write(dir.path().join("pkg/__init__.py"), "").expect("write");
    assert!(check_handler_module("python3", "app.handler", dir.path()).is_ok());
    assert!(check_handler_module("python3", "pkg.handler", dir.path()).is_ok());
    let e = check_handler_module("python3", "missing.handler", dir.path()).unwrap_err();
    assert!(
        e.message.contains("Runtime.ImportModuleError") && e.message.contains("missing.py"),
        "{e}"
    );
}

#[test]
fn node_handler_module_lookup() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("src/lib")).expect("mkdir");
    std::fs::write(dir.path().join("index.js"), "").expect("write");
    std::fs::write(dir.path().join("src/app.mjs"), "").expect("write");
    std::fs::write(dir.path().join("a.py"), "").expect("write");
    assert!(check_handler_module("nodejs", "index.handler", dir.path()).is_ok());
    assert!(check_handler_module("nodejs", "index.nested.fn", dir.path()).is_ok());
    assert!(check_handler_module("nodejs", "src/app.handler", dir.path()).is_ok());
    assert!(check_handler_module("nodejs", "src/lib.handler", dir.path()).is_ok());
    let e = check_handler_module("nodejs", "a.handler", dir.path()).unwrap_err();
    assert!(
        e.message.contains("Cannot find module 'a'") && e.message.contains("a.mjs"),
        "{e}"
    );
}

fn record() -> FunctionRecord {
    FunctionRecord {
        name: "f".into(),
        runtime: "python3.11".into(),
        handler: "app.handler".into(),
        role: "arn:aws:iam::000000000000:role/r".into(),
        description: String::new(),
        memory_size: 256,
        timeout: 3,
        environment: BTreeMap::from([("K".to_string(), "v".to_string())]),
        code_sha256: "00".repeat(32),
        code_size: 10,
        last_modified: String::new(),
        revision_id: String::new(),
        reserved_concurrency: Some(5),
        provisioned_concurrency: Some(2),
    }
}

#[test]
fn configuration_and_entry() {
    let mut r = record();
    r.touch(0);
    let before = r.revision_id.clone();
    assert_eq!(r.last_modified, "1970-01-01T00:00:00.000+0000");
    r.memory_size = 512;
    r.touch(0);
    assert_ne!(r.revision_id, before);
    let c = r.configuration();
    assert_eq!(c["FunctionArn"], arn("f"));
    assert_eq!(
        c["CodeSha256"],
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    );
    assert_eq!(c["State"], "Active");
    let e = r.config_entry("python3", Path::new("/s/code/aa"));
    assert_eq!(e["timeout_ms"], 3000);
    assert_eq!(e["max_concurrency"], 5);
    assert_eq!(e["ready_clones"], 2);
    assert_eq!(e["env"]["K"], "v");
}
