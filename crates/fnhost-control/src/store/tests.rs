use std::collections::BTreeMap;
use std::io::Write as _;

use zip::write::SimpleFileOptions;

use super::*;

fn zip_of(content: &str) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    w.start_file("app.py", SimpleFileOptions::default())
        .expect("start");
    w.write_all(content.as_bytes()).expect("write");
    w.finish().expect("finish").into_inner()
}

fn record(name: &str, code: &CodeRef) -> FunctionRecord {
    FunctionRecord {
        name: name.into(),
        runtime: "python3.11".into(),
        handler: "app.handler".into(),
        role: String::new(),
        description: String::new(),
        memory_size: 128,
        timeout: 3,
        environment: BTreeMap::new(),
        code_sha256: code.sha256.clone(),
        code_size: code.zip_size,
        last_modified: String::new(),
        revision_id: String::new(),
        reserved_concurrency: None,
        provisioned_concurrency: None,
    }
}

#[test]
fn identical_code_is_shared_and_records_round_trip() {
    let state = tempfile::tempdir().expect("tempdir");
    let store = Store::open(state.path()).expect("open");
    let (a, extracted) = store
        .put_code(&zip_of("x = 1"), &ZipLimits::default())
        .expect("put");
    assert!(extracted.is_some());
    let (b, again) = store
        .put_code(&zip_of("x = 1"), &ZipLimits::default())
        .expect("put");
    assert_eq!(a, b);
    assert!(again.is_none(), "identical code is extracted once");
    store.save(&record("f", &a)).expect("save");
    store.save(&record("g", &b)).expect("save");
    let loaded = store.load().expect("load");
    assert_eq!(
        loaded.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["f", "g"]
    );
    assert_eq!(
        fs::read_to_string(a.dir.join("app.py")).expect("read"),
        "x = 1"
    );
    store.remove("g").expect("remove");
    assert_eq!(store.load().expect("load").len(), 1);
}

#[test]
fn a_refused_zip_leaves_nothing() {
    let state = tempfile::tempdir().expect("tempdir");
    let store = Store::open(state.path()).expect("open");
    assert!(store.put_code(b"not a zip", &ZipLimits::default()).is_err());
    assert_eq!(
        fs::read_dir(store.root().join("code")).expect("ls").count(),
        0
    );
    assert_eq!(
        fs::read_dir(store.root().join("tmp")).expect("ls").count(),
        0
    );
}

#[test]
fn a_crash_between_steps_leaves_old_or_new() {
    let state = tempfile::tempdir().expect("tempdir");
    let store = Store::open(state.path()).expect("open");
    let (old, _) = store
        .put_code(&zip_of("old"), &ZipLimits::default())
        .expect("put");
    store.save(&record("f", &old)).expect("save");

    // Crash 1: new code extracted halfway (scratch dir), record not written.
    let half = store.root().join("tmp").join("deadbeef.1.0");
    fs::create_dir_all(&half).expect("mkdir");
    fs::write(half.join("app.py"), "partial").expect("write");
    // Crash 2: new code in place, new record only half written to its temp file.
    let (new, _) = store
        .put_code(&zip_of("new"), &ZipLimits::default())
        .expect("put");
    fs::write(
        store.root().join("records/.f.json.tmp"),
        "{\"name\": \"f\", \"runt",
    )
    .expect("write");

    // Restart: the old version stands, the debris goes.
    let reopened = Store::open(state.path()).expect("reopen");
    let loaded = reopened.load().expect("load");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].code_sha256, old.sha256);
    reopened.collect(&loaded);
    assert!(!half.exists());
    assert!(!new.dir.exists(), "unused code is collected");
    assert!(old.dir.exists());
    assert!(!reopened.root().join("records/.f.json.tmp").exists());

    // The completed update: the new version stands.
    let (new, _) = reopened
        .put_code(&zip_of("new"), &ZipLimits::default())
        .expect("put");
    reopened.save(&record("f", &new)).expect("save");
    let loaded = Store::open(state.path())
        .expect("reopen")
        .load()
        .expect("load");
    assert_eq!(loaded[0].code_sha256, new.sha256);
}

#[test]
fn a_corrupt_record_is_reported() {
    let state = tempfile::tempdir().expect("tempdir");
    let store = Store::open(state.path()).expect("open");
    fs::write(store.root().join("records/f.json"), "{").expect("write");
    let err = store.load().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}
