//! Image import tests: archives are built here with the `tar` crate
//! (malicious entries with raw header bytes, since the builder refuses
//! them), imported into a temporary store, and checked on disk.

use std::collections::BTreeMap;
use std::fs::{self, Permissions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::*;

/// Builds a layer tar entry by entry; paths are written as raw header bytes
/// so that hostile ones (`../x`, `/etc/x`) can be built too.
#[derive(Default)]
pub(crate) struct TarBuilder {
    out: Vec<u8>,
}

impl TarBuilder {
    fn entry(&mut self, path: &str, kind: EntryType, mode: u32, data: &[u8], link: Option<&str>) {
        let mut header = Header::new_gnu();
        header.as_mut_bytes()[..100].fill(0);
        header.as_mut_bytes()[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_mtime(1_700_000_000);
        if let Some(link) = link {
            header.as_mut_bytes()[157..157 + link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    pub(crate) fn dir(mut self, path: &str, mode: u32) -> Self {
        self.entry(path, EntryType::Directory, mode, b"", None);
        self
    }

    pub(crate) fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        self.entry(path, EntryType::Regular, mode, data, None);
        self
    }

    pub(crate) fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entry(path, EntryType::Symlink, 0o777, b"", Some(target));
        self
    }

    pub(crate) fn hardlink(mut self, path: &str, target: &str) -> Self {
        self.entry(path, EntryType::Link, 0o644, b"", Some(target));
        self
    }

    pub(crate) fn special(mut self, path: &str, kind: EntryType) -> Self {
        self.entry(path, kind, 0o666, b"", None);
        self
    }

    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 1).expect("zstd")
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A tar archive of `members` (path → contents).
fn archive_of(members: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in members {
        let mut header = Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, path, data.as_slice())
            .expect("append");
    }
    builder.into_inner().expect("finish")
}

fn write_members(dir: &Path, members: &BTreeMap<String, Vec<u8>>) {
    for (path, data) in members {
        let path = dir.join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, data).expect("write");
    }
}

/// An OCI layout of one image with `layers` (bottom first, each stored
/// gzip-compressed), as members.
pub(crate) fn oci_layout(layers: &[Vec<u8>], env: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let mut members = BTreeMap::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        let blob = gzip(layer);
        diff_ids.push(sha(layer));
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": sha(&blob),
            "size": blob.len(),
        }));
        members.insert(format!("blobs/sha256/{}", &sha(&blob)[7..]), blob);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": oci::host_arch(), "os": "linux",
        "config": {"Env": env, "Cmd": ["python3"], "WorkingDir": "/srv"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": descs,
    }))
    .expect("json");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "1"},
        }],
    }))
    .expect("json");
    members.insert(format!("blobs/sha256/{}", &sha(&config)[7..]), config);
    members.insert(format!("blobs/sha256/{}", &sha(&manifest)[7..]), manifest);
    members.insert("index.json".into(), index);
    members.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    members
}

/// A `docker save` archive (old layout: `<id>/layer.tar`, `<hex>.json`).
fn docker_archive(layers: &[Vec<u8>]) -> BTreeMap<String, Vec<u8>> {
    let mut members = BTreeMap::new();
    let mut paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let path = format!("{}/layer.tar", hex::encode([i as u8 + 1; 32]));
        members.insert(path.clone(), layer.clone());
        paths.push(path);
    }
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "config": {"Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json");
    let config_name = format!("{}.json", &sha(&config)[7..]);
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": ["app:1"], "Layers": paths}
    ]))
    .expect("json");
    members.insert(config_name, config);
    members.insert("manifest.json".into(), manifest);
    members
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: LayerStore,
    /// A directory outside the store that no import may touch.
    outside: PathBuf,
    work: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = LayerStore::open(&dir.path().join("layers")).expect("open");
    let outside = dir.path().join("outside");
    let work = dir.path().join("work");
    fs::create_dir(&outside).expect("mkdir");
    fs::create_dir(&work).expect("mkdir");
    Fixture {
        store,
        outside,
        work,
        _dir: dir,
    }
}

impl Fixture {
    fn import_tar(&self, tar: &[u8], limits: &ImportLimits) -> Result<Image, LayerError> {
        let path = self.work.join("image.tar");
        fs::write(&path, tar).expect("write");
        self.store.import_image_with(&path, "t:1", limits)
    }

    /// Nothing outside the store changed, no build is left behind, no
    /// layer and no image was recorded.
    fn assert_untouched(&self) {
        assert_eq!(fs::read_dir(&self.outside).expect("read").count(), 0);
        assert_eq!(
            fs::read_dir(self.store.root().join("tmp"))
                .expect("read")
                .count(),
            0
        );
        assert!(self.store.list().expect("list").is_empty());
        assert!(self.store.list_images().expect("list").is_empty());
    }
}

fn rejected(fx: &Fixture, tar: Vec<u8>, needle: &str) -> String {
    let err = fx
        .import_tar(&tar, &ImportLimits::default())
        .expect_err("must be rejected");
    let text = err.to_string();
    assert!(text.contains(needle), "{needle:?} not in: {text}");
    fx.assert_untouched();
    text
}

#[test]
fn rejects_parent_dir_traversal() {
    let fx = fixture();
    let tar = TarBuilder::default()
        .file("ok", b"x", 0o644)
        .file("../x", b"pwned", 0o644)
        .finish();
    let text = rejected(&fx, tar, "\"../x\" rejected");
    assert!(text.contains("'..'"), "{text}");
    let tar = TarBuilder::default()
        .file("a/../../x", b"pwned", 0o644)
        .finish();
    rejected(&fx, tar, "a/../../x");
    assert!(!fx.work.parent().expect("parent").join("x").exists());
}

#[test]
fn rejects_absolute_paths() {
    let fx = fixture();
    let target = fx.outside.join("x");
    let tar = TarBuilder::default()
        .file(target.to_str().expect("utf-8"), b"pwned", 0o644)
        .finish();
    rejected(&fx, tar, "absolute path");
    let tar = TarBuilder::default()
        .file("/etc/x", b"pwned", 0o644)
        .finish();
    rejected(&fx, tar, "\"/etc/x\" rejected: absolute path");
}

#[test]
fn never_writes_through_a_symlink() {
    let fx = fixture();
    let outside = fx.outside.to_str().expect("utf-8");
    let tar = TarBuilder::default()
        .symlink("a", outside)
        .file("a/pwned", b"pwned", 0o644)
        .finish();
    let text = rejected(&fx, tar, "\"a/pwned\" rejected");
    assert!(text.contains("through symlink a ->"), "{text}");

    // A directory replaced by a symlink later in the same layer.
    let tar = TarBuilder::default()
        .dir("d", 0o755)
        .file("d/ok", b"x", 0o644)
        .symlink("d", outside)
        .file("d/pwned", b"pwned", 0o644)
        .finish();
    rejected(&fx, tar, "through symlink d ->");

    // Relative escapes and a symlink chain are refused the same way.
    let tar = TarBuilder::default()
        .symlink("up", "../../../../..")
        .dir("up/tmp", 0o755)
        .finish();
    rejected(&fx, tar, "through symlink up ->");
    let tar = TarBuilder::default()
        .symlink("x", outside)
        .symlink("y", "x")
        .hardlink("y/z", "ok")
        .finish();
    rejected(&fx, tar, "\"y/z\" rejected");
}

#[test]
fn symlinks_escaping_the_layer_are_stored_not_followed() {
    let fx = fixture();
    let tar = TarBuilder::default()
        .symlink("etc/passwd-link", "/etc/passwd")
        .symlink("up", "../../..")
        .finish();
    let image = fx
        .import_tar(&tar, &ImportLimits::default())
        .expect("symlinks are fine");
    let layer = &image.layers[0].path;
    assert_eq!(
        fs::read_link(layer.join("etc/passwd-link")).expect("readlink"),
        Path::new("/etc/passwd")
    );
    assert_eq!(
        fs::read_link(layer.join("up")).expect("readlink"),
        Path::new("../../..")
    );
}

#[test]
fn hardlinks_only_to_earlier_files_of_the_layer() {
    let fx = fixture();
    let tar = TarBuilder::default()
        .hardlink("passwd", "/etc/passwd")
        .finish();
    rejected(&fx, tar, "hardlink target \"/etc/passwd\": absolute path");
    let tar = TarBuilder::default()
        .hardlink("passwd", "../../../../etc/passwd")
        .finish();
    rejected(&fx, tar, "'..'");
    let tar = TarBuilder::default()
        .hardlink("early", "late")
        .file("late", b"x", 0o644)
        .finish();
    rejected(&fx, tar, "not an earlier regular file of this layer");
    let tar = TarBuilder::default()
        .symlink("s", "/etc/shadow")
        .hardlink("h", "s")
        .finish();
    rejected(&fx, tar, "not an earlier regular file");

    let tar = TarBuilder::default()
        .file("bin/python3.11", b"\x7fELF", 0o755)
        .hardlink("bin/python3", "bin/python3.11")
        .finish();
    let image = fx
        .import_tar(&tar, &ImportLimits::default())
        .expect("valid hardlink");
    let bin = image.layers[0].path.join("bin");
    let a = fs::metadata(bin.join("python3")).expect("stat");
    let b = fs::metadata(bin.join("python3.11")).expect("stat");
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
}

#[test]
fn rejects_devices_and_fifos_but_skips_them_in_dev() {
    let fx = fixture();
    let tar = TarBuilder::default()
        .special("bad/null", EntryType::Char)
        .finish();
    rejected(
        &fx,
        tar,
        "a character device; layers may not hold device nodes",
    );
    let tar = TarBuilder::default()
        .special("sda", EntryType::Block)
        .finish();
    rejected(&fx, tar, "block device");
    let tar = TarBuilder::default()
        .special("run/pipe", EntryType::Fifo)
        .finish();
    rejected(&fx, tar, "\"run/pipe\" rejected: a fifo");

    let tar = TarBuilder::default()
        .dir("dev", 0o755)
        .special("dev/null", EntryType::Char)
        .special("dev/sda", EntryType::Block)
        .finish();
    let image = fx
        .import_tar(&tar, &ImportLimits::default())
        .expect("skipped below dev/");
    let dev = image.layers[0].path.join("dev");
    assert_eq!(fs::read_dir(dev).expect("read").count(), 0);
}

#[test]
fn entry_count_and_size_limits() {
    let fx = fixture();
    let mut tar = TarBuilder::default();
    for i in 0..101 {
        tar = tar.file(&format!("f{i}"), b"", 0o644);
    }
    let limits = ImportLimits {
        max_entries: 100,
        max_bytes: 1 << 20,
    };
    let err = fx.import_tar(&tar.finish(), &limits).expect_err("too many");
    assert!(
        matches!(
            err,
            LayerError::Image(ref e) if matches!(**e, ImageError::TooManyEntries { limit: 100, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("more than 100 entries"), "{err}");
    fx.assert_untouched();

    let tar = TarBuilder::default()
        .file("small", &[1; 512], 0o644)
        .file("big", &[1; 1024], 0o644)
        .finish();
    let limits = ImportLimits {
        max_entries: 100,
        max_bytes: 1024,
    };
    let err = fx.import_tar(&tar, &limits).expect_err("too large");
    assert!(err.to_string().contains("larger than 1024 bytes"), "{err}");
    assert!(err.to_string().contains("big"), "{err}");
    fx.assert_untouched();

    // A gzip bomb: a few KiB that inflate far past the limit.
    let bomb = gzip(&vec![0u8; 8 << 20]);
    let limits = ImportLimits {
        max_entries: 10,
        max_bytes: 1024,
    };
    let err = fx.import_tar(&bomb, &limits).expect_err("bomb");
    assert!(err.to_string().contains("larger than"), "{err}");
    fx.assert_untouched();
}

#[test]
fn strips_setuid_and_keeps_modes() {
    let fx = fixture();
    let tar = TarBuilder::default()
        .dir("./", 0o755)
        .dir("tmp", 0o1777)
        .file("usr/bin/su", b"\x7fELF", 0o4755)
        .file("usr/bin/wall", b"\x7fELF", 0o2755)
        .dir("ro", 0o555)
        .file("ro/f", b"x", 0o444)
        .finish();
    let image = fx
        .import_tar(&tar, &ImportLimits::default())
        .expect("import");
    let layer = &image.layers[0].path;
    let mode = |p: &str| fs::symlink_metadata(layer.join(p)).expect("stat").mode() & 0o7777;
    assert_eq!(mode("usr/bin/su"), 0o755);
    assert_eq!(mode("usr/bin/wall"), 0o755);
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("usr"), 0o755);
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(fs::read(layer.join("ro/f")).expect("read"), b"x");
    let mtime = fs::metadata(layer.join("ro/f")).expect("stat").mtime();
    assert_eq!(mtime, 1_700_000_000);
}

fn sample_rootfs() -> Vec<u8> {
    TarBuilder::default()
        .dir("./", 0o755)
        .dir("./etc", 0o755)
        .file("./etc/os-release", b"ID=test\n", 0o644)
        .file("./usr/bin/tool", b"#!/bin/sh\n", 0o755)
        .symlink("./bin", "usr/bin")
        .finish()
}

#[test]
fn rootfs_tarballs_plain_gzip_and_zstd_give_one_layer() {
    let fx = fixture();
    let plain = sample_rootfs();
    let images: Vec<Image> = [plain.clone(), gzip(&plain), zstd(&plain)]
        .iter()
        .map(|tar| {
            fx.import_tar(tar, &ImportLimits::default())
                .expect("import")
        })
        .collect();
    for image in &images {
        assert_eq!(image.format, ImageFormat::RootfsTarball);
        assert_eq!(image.layers, images[0].layers);
    }
    assert_eq!(fx.store.list().expect("list").len(), 1);
    let layer = &images[0].layers[0].path;
    assert_eq!(
        fs::read(layer.join("etc/os-release")).expect("read"),
        b"ID=test\n"
    );
    assert_eq!(
        fs::read_link(layer.join("bin")).expect("readlink"),
        Path::new("usr/bin")
    );

    // The same tree as a directory makes the very same layer.
    let dir = fx.work.join("rootfs");
    fs::create_dir_all(dir.join("etc")).expect("mkdir");
    fs::create_dir_all(dir.join("usr/bin")).expect("mkdir");
    fs::write(dir.join("etc/os-release"), b"ID=test\n").expect("write");
    fs::write(dir.join("usr/bin/tool"), b"#!/bin/sh\n").expect("write");
    fs::set_permissions(dir.join("usr/bin/tool"), Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("usr/bin", dir.join("bin")).expect("symlink");
    let from_dir = fx.store.import_image(&dir, "t:dir").expect("import dir");
    assert_eq!(from_dir.format, ImageFormat::Directory);
    assert_eq!(from_dir.layers, images[0].layers);
    assert_eq!(
        fs::read_dir(fx.store.root().join("tmp"))
            .expect("read")
            .count(),
        0
    );
}

fn two_layers() -> (Vec<u8>, Vec<u8>) {
    let bottom = TarBuilder::default()
        .file("usr/bin/python3", b"\x7fELF", 0o755)
        .file("etc/keep", b"keep\n", 0o644)
        .finish();
    let top = TarBuilder::default()
        .file("srv/app.py", b"print(1)\n", 0o644)
        .file("etc/keep", b"changed\n", 0o644)
        .finish();
    (bottom, top)
}

#[test]
fn oci_layout_directory_and_tar_round_trip() {
    let fx = fixture();
    let (bottom, top) = two_layers();
    let members = oci_layout(&[bottom, top], &["PATH=/usr/bin", "LANG=C.UTF-8"]);
    let dir = fx.work.join("oci");
    write_members(&dir, &members);
    let from_dir = fx.store.import_image(&dir, "pyimg:1").expect("import dir");
    let tar_path = fx.work.join("oci.tar");
    fs::write(&tar_path, archive_of(&members)).expect("write");
    let from_tar = fx
        .store
        .import_image(&tar_path, "pyimg:2")
        .expect("import tar");

    assert_eq!(from_dir.format, ImageFormat::OciLayout);
    assert_eq!(from_dir.layers, from_tar.layers);
    assert_eq!(from_dir.layers.len(), 2);
    assert_eq!(fx.store.list().expect("list").len(), 2, "layers are shared");
    let top_layer = &from_dir.layers[0].path;
    assert_eq!(
        fs::read(top_layer.join("etc/keep")).expect("read"),
        b"changed\n"
    );
    assert!(top_layer.join("srv/app.py").is_file());
    assert!(from_dir.layers[1].path.join("usr/bin/python3").is_file());
    assert_eq!(
        from_dir.config.env_pairs(),
        vec![
            ("PATH".to_string(), "/usr/bin".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string())
        ]
    );
    assert_eq!(from_dir.config.cmd, vec!["python3".to_string()]);
    assert_eq!(from_dir.config.working_dir.as_deref(), Some("/srv"));
    assert!(from_dir.manifest_digest.is_some());

    assert_eq!(fx.store.image("pyimg:1").expect("lookup"), from_dir);
    let listed: Vec<String> = fx
        .store
        .list_images()
        .expect("list")
        .iter()
        .map(|i| i.reference.to_string())
        .collect();
    assert_eq!(listed, vec!["pyimg:1", "pyimg:2"]);
    let missing = fx.store.image("pyimg:3").expect_err("unknown");
    assert!(
        missing.to_string().contains("pyimg:1, pyimg:2"),
        "{missing}"
    );
    assert_eq!(
        fs::read_dir(fx.store.root().join("tmp"))
            .expect("read")
            .count(),
        0
    );
}

#[test]
fn oci_blobs_are_verified() {
    let fx = fixture();
    let (bottom, top) = two_layers();
    let mut members = oci_layout(&[bottom, top.clone()], &[]);
    // Swap the top layer's bytes for others, keeping the name.
    let evil = gzip(
        &TarBuilder::default()
            .file("etc/keep", b"evil\n", 0o644)
            .finish(),
    );
    let top_member = format!("blobs/sha256/{}", &sha(&gzip(&top))[7..]);
    assert!(members.contains_key(&top_member));
    members.insert(top_member.clone(), evil);
    let dir = fx.work.join("oci");
    write_members(&dir, &members);
    let err = fx.store.import_image(&dir, "x:1").expect_err("tampered");
    let text = err.to_string();
    assert!(
        text.contains("corrupt or was tampered with") || text.contains("bytes but the image says"),
        "{text}"
    );
    assert!(fx.store.list_images().expect("list").is_empty());
    assert_eq!(
        fs::read_dir(fx.store.root().join("tmp"))
            .expect("read")
            .count(),
        0
    );

    fs::remove_file(dir.join(&top_member)).expect("rm");
    let err = fx
        .store
        .import_image(&dir, "x:1")
        .expect_err("missing blob");
    assert!(err.to_string().contains(&top_member), "{err}");
}

#[test]
fn docker_save_archive_shares_layers_with_the_oci_image() {
    let fx = fixture();
    let (bottom, top) = two_layers();
    let oci_dir = fx.work.join("oci");
    write_members(&oci_dir, &oci_layout(&[bottom.clone(), top.clone()], &[]));
    let oci = fx.store.import_image(&oci_dir, "a:1").expect("oci");

    let docker = archive_of(&docker_archive(&[bottom, top]));
    let path = fx.work.join("docker.tar");
    fs::write(&path, &docker).expect("write");
    let saved = fx.store.import_image(&path, "b:1").expect("docker");
    assert_eq!(saved.format, ImageFormat::DockerArchive);
    assert_eq!(saved.layers, oci.layers);
    assert_eq!(saved.config.env, vec!["PATH=/usr/bin".to_string()]);
    assert_eq!(fx.store.list().expect("list").len(), 2);

    // `docker save | gzip` works too.
    let gz = fx.work.join("docker.tar.gz");
    fs::write(&gz, gzip(&docker)).expect("write");
    let zipped = fx.store.import_image(&gz, "c:1").expect("gzip docker");
    assert_eq!(zipped.layers, oci.layers);
    assert_eq!(
        fs::read_dir(fx.store.root().join("tmp"))
            .expect("read")
            .count(),
        0
    );
}

#[test]
fn not_an_image_is_a_clear_error() {
    let fx = fixture();
    let path = fx.work.join("notes.txt");
    fs::write(&path, "just text, long enough to not be a tar header").expect("write");
    let err = fx.store.import_image(&path, "x:1").expect_err("not a tar");
    assert!(
        err.to_string()
            .contains("neither a directory nor a tar archive"),
        "{err}"
    );
    let err = fx
        .store
        .import_image(&fx.work.join("nope"), "x:1")
        .expect_err("missing");
    assert!(err.to_string().contains("nope"), "{err}");
    let err = fx
        .store
        .import_image(&fx.work, "Bad:1")
        .expect_err("bad ref");
    assert!(err.to_string().contains("invalid image reference"), "{err}");
}

#[test]
fn whiteouts_become_overlayfs_whiteouts() {
    let fx = fixture();
    let tar = TarBuilder::default()
        .file("etc/.wh.doomed", b"", 0o644)
        .dir("opt/data", 0o755)
        .file("opt/data/.wh..wh..opq", b"", 0o644)
        .file("opt/data/new", b"new\n", 0o644)
        .file("opt/.wh..wh.plnk", b"", 0o644)
        .finish();
    let result = fx.import_tar(&tar, &ImportLimits::default());
    let as_root = fs::metadata(fx.store.root()).expect("stat").uid() == 0;
    if !as_root {
        let err = result.expect_err("needs root");
        assert!(err.to_string().contains("needs root"), "{err}");
        fx.assert_untouched();
        return;
    }
    let image = result.expect("import");
    let layer = &image.layers[0].path;
    let meta = fs::symlink_metadata(layer.join("etc/doomed")).expect("whiteout");
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), 0);
    assert!(!layer.join("etc/.wh.doomed").exists());
    assert!(!layer.join("opt/data/.wh..wh..opq").exists());
    assert!(!layer.join("opt/.wh..wh.plnk").exists());
    assert_eq!(
        fs::read_dir(layer.join("opt/data")).expect("read").count(),
        1
    );
    let mut value = [0u8; 8];
    let n = rustix::fs::getxattr(layer.join("opt/data"), "trusted.overlay.opaque", &mut value)
        .expect("opaque xattr");
    assert_eq!(&value[..n], b"y");

    // Whiteouts and opaque marks are part of the digest.
    let plain = TarBuilder::default()
        .dir("opt/data", 0o755)
        .file("opt/data/new", b"new\n", 0o644)
        .finish();
    let other = fx
        .import_tar(&plain, &ImportLimits::default())
        .expect("import");
    assert_ne!(other.layers[0].digest, image.layers[0].digest);
}
