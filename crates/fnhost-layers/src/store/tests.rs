//! Tests of the parent module.

use std::os::unix::fs::{symlink, MetadataExt};
use std::process::Command;

use super::*;

fn write(path: &Path, contents: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent");
    }
    fs::write(path, contents).expect("write file");
    fs::set_permissions(path, Permissions::from_mode(mode)).expect("chmod");
}

/// A small code directory with files of several modes and two symlinks,
/// one pointing outside the tree.
fn code_tree(dir: &Path) {
    write(
        &dir.join("handler.py"),
        b"def handler(e, c):\n    return e\n",
        0o644,
    );
    write(&dir.join("bin/run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write(&dir.join("private/secret"), b"s3cr3t", 0o600);
    fs::set_permissions(dir.join("private"), Permissions::from_mode(0o700)).expect("chmod");
    symlink("handler.py", dir.join("main.py")).expect("symlink");
    symlink("/etc/passwd", dir.join("passwd")).expect("symlink");
}

fn tmp_entries(store: &LayerStore) -> usize {
    fs::read_dir(store.root().join("tmp"))
        .expect("read tmp")
        .count()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

fn digest_of(store: &LayerStore, src: &Path) -> String {
    store
        .import_dir(src, Path::new("var/task"))
        .expect("import")
        .digest
}

/// A store in a temporary directory holding the code layer of
/// [`code_tree`], imported once below `var/task`.
struct Imported {
    _state: tempfile::TempDir,
    src: tempfile::TempDir,
    store: LayerStore,
    layer: Layer,
}

fn imported() -> Imported {
    let state = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    code_tree(src.path());
    let store = LayerStore::open(state.path()).expect("open");
    let layer = store
        .import_dir(src.path(), Path::new("var/task"))
        .expect("import");
    Imported {
        _state: state,
        src,
        store,
        layer,
    }
}

#[test]
fn same_tree_gives_same_layer_without_copying_again() {
    let state = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    code_tree(src.path());
    let store = LayerStore::open(&state.path().join("layers")).expect("open");
    assert_eq!(mode(store.root()), 0o711);

    let first = store
        .import_dir(src.path(), Path::new("var/task"))
        .expect("import");
    let inode = fs::metadata(first.path.join("var/task/handler.py"))
        .expect("stat")
        .ino();
    let second = store
        .import_dir(src.path(), Path::new("var/task"))
        .expect("import");
    assert_eq!(first, second);
    assert!(first.path.is_absolute());
    assert_eq!(
        first.path,
        store.root().join("sha256").join(&first.digest[7..])
    );
    let inode_again = fs::metadata(second.path.join("var/task/handler.py"))
        .expect("stat")
        .ino();
    assert_eq!(
        inode, inode_again,
        "existing layer must be reused, not rewritten"
    );
    assert_eq!(store.list().expect("list"), vec![first]);
    assert_eq!(tmp_entries(&store), 0);
}

#[test]
fn a_layer_changed_after_its_commit_is_built_again() {
    let Imported {
        _state,
        src,
        store,
        layer: first,
    } = imported();
    let handler = first.path.join("var/task/handler.py");
    let original = fs::read(&handler).expect("read");
    // What a sandbox could once do: write into a shared layer.
    fs::write(&handler, b"import os; os.system('evil')\n").expect("tamper");
    let again = store
        .import_dir(src.path(), Path::new("var/task"))
        .expect("import");
    assert_eq!(again, first, "same digest, same place");
    assert_eq!(
        fs::read(&handler).expect("read"),
        original,
        "rebuilt from the source"
    );
    assert!(trusted(&store, &again));
    // A layer without a seal (an older fnhost's) is not trusted either.
    fs::remove_file(seal::path_of(&again.path)).expect("unseal");
    assert!(!trusted(&store, &again));
    assert!(!again.path.exists(), "moved out of the way");
    let rebuilt = store
        .import_dir(src.path(), Path::new("var/task"))
        .expect("import");
    assert!(trusted(&store, &rebuilt));
    assert_eq!(store.list().expect("list"), vec![rebuilt]);
}

#[test]
fn digest_covers_contents_modes_and_symlinks_but_not_mtimes() {
    let state = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    code_tree(src.path());
    let store = LayerStore::open(state.path()).expect("open");
    let base = digest_of(&store, src.path());

    let handler = src.path().join("handler.py");
    let old = fs::read(&handler).expect("read");
    File::options()
        .write(true)
        .open(&handler)
        .and_then(|f| f.set_modified(std::time::UNIX_EPOCH))
        .expect("set mtime");
    assert_eq!(digest_of(&store, src.path()), base, "mtime must not matter");

    let mut changed = old.clone();
    changed[0] ^= 1;
    fs::write(&handler, &changed).expect("write");
    let by_byte = digest_of(&store, src.path());
    assert_ne!(by_byte, base);
    fs::write(&handler, &old).expect("write");
    assert_eq!(digest_of(&store, src.path()), base);

    fs::set_permissions(&handler, Permissions::from_mode(0o600)).expect("chmod");
    let by_mode = digest_of(&store, src.path());
    assert_ne!(by_mode, base);
    fs::set_permissions(&handler, Permissions::from_mode(0o644)).expect("chmod");

    fs::remove_file(src.path().join("main.py")).expect("rm");
    symlink("bin/run.sh", src.path().join("main.py")).expect("symlink");
    let by_link = digest_of(&store, src.path());
    assert_ne!(by_link, base);

    let other_prefix = store
        .import_dir(src.path(), Path::new("opt"))
        .expect("import")
        .digest;
    assert_ne!(other_prefix, by_link, "the prefix is part of the layer");
    assert_eq!(store.list().expect("list").len(), 5);
}

#[test]
fn import_dir_copies_contents_modes_and_symlinks() {
    let state = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    code_tree(src.path());
    write(&src.path().join("suid"), b"x", 0o4755);
    let store = LayerStore::open(state.path()).expect("open");
    let layer = store
        .import_dir(src.path(), Path::new("var/task"))
        .expect("import");
    let task = layer.path.join("var/task");

    assert_eq!(mode(&layer.path), 0o755);
    assert_eq!(mode(&layer.path.join("var")), 0o755);
    assert_eq!(mode(&task), mode(src.path()));
    assert_eq!(
        fs::read(task.join("handler.py")).expect("read"),
        b"def handler(e, c):\n    return e\n"
    );
    assert_eq!(mode(&task.join("handler.py")), 0o644);
    assert_eq!(mode(&task.join("bin/run.sh")), 0o755);
    assert_eq!(mode(&task.join("private")), 0o700);
    assert_eq!(mode(&task.join("private/secret")), 0o600);
    assert_eq!(mode(&task.join("suid")), 0o755, "setuid is dropped");
    assert_eq!(
        fs::read_link(task.join("main.py")).expect("readlink"),
        Path::new("handler.py")
    );

    let passwd = task.join("passwd");
    assert!(fs::symlink_metadata(&passwd)
        .expect("lstat")
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(&passwd).expect("readlink"),
        Path::new("/etc/passwd")
    );

    let src_mtime = fs::metadata(src.path().join("handler.py"))
        .expect("stat")
        .modified()
        .expect("mtime");
    let dst_mtime = fs::metadata(task.join("handler.py"))
        .expect("stat")
        .modified()
        .expect("mtime");
    assert_eq!(src_mtime, dst_mtime);
    if fs::metadata(&layer.path).expect("stat").uid() == 0 {
        let meta = fs::symlink_metadata(task.join("passwd")).expect("lstat");
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
    }
}

#[test]
fn import_dir_at_layer_root_and_bad_prefixes() {
    let state = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    code_tree(src.path());
    let store = LayerStore::open(state.path()).expect("open");
    let layer = store.import_dir(src.path(), Path::new("")).expect("import");
    assert!(layer.path.join("handler.py").is_file());
    for bad in ["/var/task", "../x", "a/../../b"] {
        let err = store
            .import_dir(src.path(), Path::new(bad))
            .expect_err("bad prefix");
        assert!(
            matches!(err, LayerError::InvalidPrefix { .. }),
            "{bad}: {err}"
        );
    }
    let missing = store
        .import_dir(&src.path().join("nope"), Path::new("x"))
        .expect_err("missing");
    assert!(missing.to_string().contains("nope"), "{missing}");
}

#[test]
fn import_dir_rejects_fifos_and_sockets_naming_them() {
    let state = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    code_tree(src.path());
    let fifo = src.path().join("bin/a-fifo");
    let status = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success());
    let store = LayerStore::open(state.path()).expect("open");
    let err = store
        .import_dir(src.path(), Path::new("var/task"))
        .expect_err("fifo");
    assert!(
        matches!(err, LayerError::UnsupportedFileType { kind: "fifo", .. }),
        "{err}"
    );
    assert!(err.to_string().contains(&*fifo.to_string_lossy()), "{err}");
    fs::remove_file(&fifo).expect("rm fifo");

    let sock = src.path().join("app.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let err = store
        .import_dir(src.path(), Path::new("var/task"))
        .expect_err("socket");
    assert!(
        err.to_string().contains("app.sock") && err.to_string().contains("socket"),
        "{err}"
    );
    assert!(store.list().expect("list").is_empty());
    assert_eq!(tmp_entries(&store), 0);
}

#[test]
fn import_files_builds_content_addressed_layers() {
    let state = tempfile::tempdir().expect("tempdir");
    let store = LayerStore::open(state.path()).expect("open");
    let files = vec![
        LayerFile {
            path: ".fnhost/runtime/shim.py".into(),
            contents: b"print('shim')\n".to_vec(),
            mode: 0o644,
        },
        LayerFile {
            path: ".fnhost/runtime/libfnhost.so".into(),
            contents: vec![0x7f, b'E', b'L', b'F', 0, 1, 2],
            mode: 0o6755,
        },
    ];
    let layer = store.import_files(&files).expect("import");
    let runtime = layer.path.join(".fnhost/runtime");
    assert_eq!(
        fs::read(runtime.join("shim.py")).expect("read"),
        b"print('shim')\n"
    );
    assert_eq!(mode(&runtime.join("shim.py")), 0o644);
    assert_eq!(mode(&runtime.join("libfnhost.so")), 0o755);
    assert_eq!(mode(&runtime), 0o755);
    assert_eq!(mode(&layer.path.join(".fnhost")), 0o755);

    let mut reordered = files.clone();
    reordered.reverse();
    assert_eq!(store.import_files(&reordered).expect("import"), layer);
    reordered[0].contents.push(b'\n');
    assert_ne!(
        store.import_files(&reordered).expect("import").digest,
        layer.digest
    );

    let dup = [files[0].clone(), files[0].clone()];
    assert!(matches!(
        store.import_files(&dup),
        Err(LayerError::ConflictingPath { .. })
    ));
    for bad in ["", "/etc/x", "../x"] {
        let file = LayerFile {
            path: bad.into(),
            contents: Vec::new(),
            mode: 0o644,
        };
        let err = store.import_files(&[file]).expect_err("bad path");
        assert!(
            matches!(err, LayerError::InvalidFilePath { .. }),
            "{bad}: {err}"
        );
    }
    let empty = store.import_files(&[]).expect("empty layer");
    assert_eq!(fs::read_dir(&empty.path).expect("read").count(), 0);
}

#[test]
fn concurrent_imports_of_one_tree_make_one_layer() {
    let state = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    code_tree(src.path());
    for i in 0..50 {
        write(
            &src.path().join(format!("pkg/mod{i}.py")),
            format!("X = {i}\n").as_bytes(),
            0o644,
        );
    }
    let store = LayerStore::open(state.path()).expect("open");
    let layers: Vec<Layer> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| store.import_dir(src.path(), Path::new("var/task"))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("import"))
            .collect()
    });
    assert!(layers.iter().all(|l| *l == layers[0]));
    assert_eq!(store.list().expect("list"), vec![layers[0].clone()]);
    assert_eq!(tmp_entries(&store), 0);
    assert_eq!(
        fs::read(layers[0].path.join("var/task/pkg/mod49.py")).expect("read"),
        b"X = 49\n"
    );
}

#[test]
fn losing_the_rename_race_keeps_the_existing_layer() {
    let Imported {
        _state,
        store,
        layer,
        ..
    } = imported();
    let inode = fs::metadata(layer.path.join("var/task/handler.py"))
        .expect("stat")
        .ino();
    let mut plan = Plan::new();
    let data = FileData::Bytes(Cow::Borrowed(b"x"));
    plan.insert("x".into(), Node::File { mode: 0o644, data })
        .expect("insert");
    // As a second builder would see it: the target appeared after our check.
    let held = store.lock_digest(&layer.digest).expect("lock");
    let again = store
        .write_and_commit(&plan, layer.clone(), &held)
        .expect("lost race is fine");
    assert_eq!(again, layer);
    let inode_again = fs::metadata(layer.path.join("var/task/handler.py"))
        .expect("stat")
        .ino();
    assert_eq!(inode, inode_again);
    assert_eq!(tmp_entries(&store), 0);
}

#[test]
fn open_removes_builds_of_dead_processes_only() {
    let state = tempfile::tempdir().expect("tempdir");
    let store = LayerStore::open(state.path()).expect("open");
    let tmp = store.root().join("tmp");
    let dead = tmp.join(format!("999999999-0-{}", "a".repeat(64)));
    let garbage = tmp.join("garbage");
    let ours = tmp.join(format!("{}-12345-{}", std::process::id(), "b".repeat(64)));
    for dir in [&dead, &garbage, &ours] {
        write(&dir.join("sub/file"), b"x", 0o444);
        fs::set_permissions(dir.join("sub"), Permissions::from_mode(0o555)).expect("chmod");
    }
    fs::create_dir(store.root().join("sha256/not-a-layer")).expect("mkdir");

    let reopened = LayerStore::open(state.path()).expect("reopen");
    assert!(!dead.exists());
    assert!(!garbage.exists());
    assert!(ours.exists(), "a build of a running process must survive");
    assert!(reopened.list().expect("list").is_empty());
    remove_tree(&ours).expect("cleanup");
}

/// [`LayerStore::trusted`] under the digest's lock.
fn trusted(store: &LayerStore, layer: &Layer) -> bool {
    let held = store.lock_digest(&layer.digest).expect("lock");
    store.trusted(layer, &held)
}

/// Functions sharing their code are imported on parallel threads at start:
/// every builder of the one digest gets the sealed layer, and none breaks
/// another's commit (the second used to take the first's committed but
/// not yet sealed layer for a tampered one and move it aside).
#[test]
fn concurrent_builders_of_one_digest_all_get_the_sealed_layer() {
    const BUILDERS: usize = 8;
    const ROUNDS: usize = 25;
    let src = tempfile::tempdir().expect("tempdir");
    code_tree(src.path());
    for round in 0..ROUNDS {
        let state = tempfile::tempdir().expect("tempdir");
        let store = LayerStore::open(state.path()).expect("open");
        let start = std::sync::Barrier::new(BUILDERS);
        let layers: Vec<Result<Layer, LayerError>> = std::thread::scope(|scope| {
            let builders: Vec<_> = (0..BUILDERS)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        store.import_dir(src.path(), Path::new("var/task"))
                    })
                })
                .collect();
            builders
                .into_iter()
                .map(|b| b.join().expect("builder thread"))
                .collect()
        });
        let first = layers[0].as_ref().expect("import").clone();
        for layer in &layers {
            let layer = layer
                .as_ref()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(*layer, first, "round {round}");
        }
        assert!(trusted(&store, &first), "round {round}");
        assert_eq!(store.list().expect("list"), vec![first], "round {round}");
        assert_eq!(tmp_entries(&store), 0, "round {round}");
    }
}

/// The window the lock closes, held open: a layer renamed into place whose
/// seal is not written yet. A second builder waits for the lock, then finds
/// the layer sealed and keeps it (same inode) instead of taking it for a
/// tampered one and rebuilding it under the first builder's feet.
#[test]
fn a_builder_waits_for_a_commit_in_progress_instead_of_undoing_it() {
    let Imported {
        _state,
        src,
        store,
        layer,
    } = imported();
    let inode = || fs::metadata(layer.path.join("var/task/handler.py")).map(|m| m.ino());
    let before = inode().expect("stat");
    // The first builder, between its rename and its seal.
    let held = store.lock_digest(&layer.digest).expect("lock");
    fs::remove_file(seal::path_of(&layer.path)).expect("unseal");
    let second = std::thread::scope(|scope| {
        let second = scope.spawn(|| store.import_dir(src.path(), Path::new("var/task")));
        // Without the lock the second builder would already have moved the
        // unsealed layer aside by now.
        std::thread::sleep(std::time::Duration::from_millis(200));
        seal::write(&layer.path, crate::write::Durability::EachFile)
            .expect("seal: the layer is still in place");
        drop(held);
        second.join().expect("second builder")
    });
    assert_eq!(second.expect("second import"), layer);
    assert_eq!(inode().expect("stat"), before, "kept, not rebuilt");
    assert!(trusted(&store, &layer));
}
