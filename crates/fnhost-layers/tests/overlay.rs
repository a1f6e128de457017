//! Privileged: an image whose top layer deletes a file (`.wh.`) and makes a
//! directory opaque (`.wh..wh..opq`) is imported, its layers are mounted as
//! overlayfs lower dirs, and the merged view must hide what was deleted.
//! Needs root (whiteouts are device nodes, opaque marks trusted xattrs);
//! skips otherwise, but fails under CI=true.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use fnhost_layers::{ImageFormat, LayerStore};

/// A layer tar built from (path, contents-or-None-for-dir) entries.
fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_ustar();
        match data {
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, *data)
                    .expect("append");
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, path, &[][..])
                    .expect("append");
            }
        }
    }
    builder.into_inner().expect("finish")
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.0).status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("warning: could not unmount {}", self.0.display());
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn overlay_of_imported_layers_applies_whiteouts() {
    if !fnhost_testkit::require_root("overlay_of_imported_layers_applies_whiteouts") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = LayerStore::open(&tmp.path().join("layers")).expect("open store");
    let bottom = layer(&[
        ("etc", None),
        ("etc/doomed", Some(b"doomed\n")),
        ("etc/kept", Some(b"kept\n")),
        ("opt/data/old1", Some(b"1")),
        ("opt/data/old2", Some(b"2")),
    ]);
    let top = layer(&[
        ("etc/.wh.doomed", Some(b"")),
        ("opt/data/.wh..wh..opq", Some(b"")),
        ("opt/data/new", Some(b"new\n")),
    ]);
    // A `docker save` directory without diff_ids: the simplest multi-layer source.
    let src = tmp.path().join("saved");
    fs::create_dir_all(src.join("l1")).expect("mkdir");
    fs::create_dir_all(src.join("l2")).expect("mkdir");
    fs::write(src.join("l1/layer.tar"), bottom).expect("write");
    fs::write(src.join("l2/layer.tar"), top).expect("write");
    fs::write(src.join("config.json"), br#"{"config":{"Env":["A=1"]}}"#).expect("write");
    fs::write(
        src.join("manifest.json"),
        br#"[{"Config":"config.json","RepoTags":["wh:1"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#,
    )
    .expect("write");
    let image = store.import_image(&src, "wh:1").expect("import");
    assert_eq!(image.format, ImageFormat::DockerArchive);
    assert_eq!(image.layers.len(), 2);

    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).expect("mkdir");
    let lower: Vec<String> = image
        .layers
        .iter()
        .map(|l| l.path.display().to_string())
        .collect();
    let status = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={}", lower.join(":")))
        .arg(&merged)
        .status()
        .expect("run mount");
    assert!(status.success(), "overlay mount failed");
    let _mounted = Mounted(merged.clone());

    assert!(
        !merged.join("etc/doomed").exists(),
        "whiteout must hide etc/doomed"
    );
    assert_eq!(fs::read(merged.join("etc/kept")).expect("read"), b"kept\n");
    assert_eq!(names(&merged.join("etc")), vec!["kept"]);
    assert_eq!(names(&merged.join("opt/data")), vec!["new"]);
    assert_eq!(
        fs::read(merged.join("opt/data/new")).expect("read"),
        b"new\n"
    );
}
