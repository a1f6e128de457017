//! End-to-end, privileged: a real two-layer image is built by the test — a
//! minimal Python root made of the host's python3.11, its stdlib and the
//! shared libraries they need, then a layer that whites out /etc/doomed and
//! makes /opt/data opaque — packed as an OCI layout tar, imported with
//! `fnhost image import`, and served by a daemon whose function names it.
//! The handler must see the image (not the host's /usr), with the
//! whiteouts applied and the image's Env set.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};

const PYTHON: &str = "/usr/bin/python3.11";
const STDLIB: &str = "/usr/lib/python3.11";
/// Stdlib directories left out: big and never imported by a handler here.
const STDLIB_SKIP: &[&str] = &[
    "test",
    "idlelib",
    "tkinter",
    "ensurepip",
    "__pycache__",
    "lib2to3",
    "pydoc_data",
    "turtledemo",
];

/// Layer entries: path inside the root → what it is.
enum Entry {
    File(PathBuf),
    Bytes(Vec<u8>),
    Symlink(PathBuf),
}

#[derive(Default)]
struct Layer {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Layer {
    fn bytes(&mut self, path: &str, data: &[u8]) {
        self.entries
            .insert(path.into(), Entry::Bytes(data.to_vec()));
    }

    /// Adds host file `host` at the same path, with every symlink on the
    /// way (the host's /lib64 → usr/lib64, a library's soname link)
    /// reproduced inside the root.
    fn host_path(&mut self, host: &Path) {
        let parent = host.parent().expect("absolute path");
        let parent = fs::canonicalize(parent).expect("canonical parent");
        let real = parent.join(host.file_name().expect("file name"));
        let rel = real.strip_prefix("/").expect("absolute").to_owned();
        if self.entries.contains_key(&rel) {
            return;
        }
        let meta = fs::symlink_metadata(&real).expect("lstat");
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&real).expect("readlink");
            self.entries.insert(rel, Entry::Symlink(target.clone()));
            self.host_path(&parent.join(target));
        } else if meta.is_file() {
            self.entries.insert(rel, Entry::File(real));
        }
    }

    /// Adds the tree at host `dir` (regular files and symlinks), leaving
    /// out directories named in `skip`.
    fn host_tree(&mut self, dir: &Path, skip: &[&str]) {
        for entry in fs::read_dir(dir).expect("read dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            let rel = path.strip_prefix("/").expect("absolute").to_owned();
            if kind.is_dir() {
                if !skip.iter().any(|s| entry.file_name() == *s) {
                    self.host_tree(&path, skip);
                }
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).expect("readlink");
                self.entries.insert(rel, Entry::Symlink(target));
            } else if kind.is_file() {
                self.entries.insert(rel, Entry::File(path));
            }
        }
    }

    /// The host's merged-/usr symlinks, and every library `binaries` and
    /// the native zygote shim load, with the loader cache.
    fn system_base(&mut self, binaries: &[PathBuf]) {
        for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            if let Ok(target) = fs::read_link(Path::new("/").join(top)) {
                self.entries.insert(top.into(), Entry::Symlink(target));
            }
        }
        let shim = Path::new(env!("CARGO_BIN_EXE_fnhost"))
            .parent()
            .expect("bin dir")
            .join("libfnhost_shim.so");
        let libs: BTreeSet<PathBuf> = binaries
            .iter()
            .chain(std::iter::once(&shim))
            .flat_map(|b| ldd(b))
            .collect();
        for lib in libs {
            self.host_path(&lib);
        }
        self.host_path(Path::new("/etc/ld.so.cache"));
    }

    fn tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(1_700_000_000);
            match entry {
                Entry::File(host) => {
                    let data = fs::read(host).expect("read host file");
                    let exec = fs::metadata(host).expect("stat").permissions();
                    let mode = std::os::unix::fs::PermissionsExt::mode(&exec) & 0o755;
                    header.set_mode(mode);
                    header.set_size(data.len() as u64);
                    header.set_entry_type(tar::EntryType::Regular);
                    builder
                        .append_data(&mut header, path, data.as_slice())
                        .expect("append");
                }
                Entry::Bytes(data) => {
                    header.set_mode(0o644);
                    header.set_size(data.len() as u64);
                    header.set_entry_type(tar::EntryType::Regular);
                    builder
                        .append_data(&mut header, path, data.as_slice())
                        .expect("append");
                }
                Entry::Symlink(target) => {
                    header.set_mode(0o777);
                    header.set_size(0);
                    header.set_entry_type(tar::EntryType::Symlink);
                    builder
                        .append_link(&mut header, path, target)
                        .expect("append");
                }
            }
        }
        builder.into_inner().expect("finish")
    }
}

/// Libraries `ldd` says `binary` needs.
fn ldd(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

/// Layer 1: python3 with its stdlib and every library it, its extension
/// modules and the native zygote shim load; plus /etc/doomed and
/// /opt/data/{a,b}.
fn python_layer() -> Layer {
    let mut layer = Layer::default();
    layer
        .entries
        .insert("usr/bin/python3".into(), Entry::File(PYTHON.into()));
    layer.host_tree(Path::new(STDLIB), STDLIB_SKIP);
    let mut binaries = vec![PathBuf::from(PYTHON)];
    let dynload = Path::new(STDLIB).join("lib-dynload");
    for entry in fs::read_dir(dynload).expect("lib-dynload") {
        binaries.push(entry.expect("entry").path());
    }
    layer.system_base(&binaries);
    if Path::new("/etc/python3.11").is_dir() {
        layer.host_tree(Path::new("/etc/python3.11"), &[]);
    }
    layer.bytes("etc/doomed", b"doomed\n");
    layer.bytes("opt/data/a.txt", b"a\n");
    layer.bytes("opt/data/b.txt", b"b\n");
    layer
}

/// Layer 2: deletes /etc/doomed, replaces /opt/data's contents.
fn change_layer() -> Layer {
    let mut layer = Layer::default();
    layer.bytes("etc/.wh.doomed", b"");
    layer.bytes("opt/data/.wh..wh..opq", b"");
    layer.bytes("opt/data/new.txt", b"new\n");
    layer
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex_encode(&Sha256::digest(data)))
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OCI image layout tar: layer 1 stored uncompressed, layer 2 gzipped.
fn oci_archive(layers: &[Vec<u8>]) -> Vec<u8> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        diff_ids.push(sha(layer));
        let (blob, media_type) = if i == 0 {
            (layer.clone(), "application/vnd.oci.image.layer.v1.tar")
        } else {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(layer).expect("gzip");
            (
                enc.finish().expect("gzip"),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        };
        descs.push(
            serde_json::json!({"mediaType": media_type, "digest": sha(&blob), "size": blob.len()}),
        );
        blobs.push((sha(&blob), blob));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin", "IMAGE_VAR=from-image"], "Cmd": ["python3"]},
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
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len()}],
    }))
    .expect("json");
    blobs.push((sha(&config), config));
    blobs.push((sha(&manifest), manifest));
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, path, data)
            .expect("append");
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for (digest, blob) in &blobs {
        add(&format!("blobs/sha256/{}", &digest[7..]), blob);
    }
    builder.into_inner().expect("finish")
}

/// `fnhost image import TAR --name NAME --config CONFIG`, which must
/// succeed; returns its stdout.
fn import_image(tar: &Path, name: &str, config: &Path) -> String {
    let import = Command::new(env!("CARGO_BIN_EXE_fnhost"))
        .args(["image", "import"])
        .arg(tar)
        .args(["--name", name, "--config"])
        .arg(config)
        .output()
        .expect("run fnhost image import");
    let stdout = String::from_utf8_lossy(&import.stdout).into_owned();
    assert!(
        import.status.success(),
        "import of {name} failed: {stdout}{}",
        String::from_utf8_lossy(&import.stderr)
    );
    stdout
}

/// Invokes `function` with `{}`, which must answer 200; its JSON body.
fn invoke_ok(daemon: &Daemon, function: &str) -> serde_json::Value {
    let response = daemon.invoke(function, "{}");
    assert_eq!(
        response.status,
        200,
        "{}\nstderr:\n{}",
        response.text(),
        daemon.stderr()
    );
    response.json()
}

const HANDLER: &str = r#"
import os, platform

def handler(event, context):
    return {
        "doomed": os.path.exists("/etc/doomed"),
        "data": sorted(os.listdir("/opt/data")),
        "version": platform.python_version(),
        "image_var": os.environ.get("IMAGE_VAR"),
        "fn_var": os.environ.get("FN_VAR"),
        "host_usr_share": os.path.exists("/usr/share"),
    }
"#;

#[test]
fn function_runs_on_an_imported_multi_layer_image() {
    if !require_root("function_runs_on_an_imported_multi_layer_image") {
        return;
    }
    if !Path::new(PYTHON).is_file() {
        panic!("{PYTHON} is needed to build the test image");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let code = dir.path().join("code");
    fs::create_dir(&code).expect("mkdir");
    fs::write(code.join("handler.py"), HANDLER).expect("write handler");
    let image_tar = dir.path().join("pyimg.tar");
    fs::write(
        &image_tar,
        oci_archive(&[python_layer().tar(), change_layer().tar()]),
    )
    .expect("write image");

    let cgroup_root = unique_cgroup_root();
    let functions = format!(
        "[[functions]]\nname = \"onimage\"\nruntime = \"python3\"\ncode = \"{}\"\nhandler = \"handler.handler\"\nimage = \"pyimg:1\"\nenv = {{ FN_VAR = \"from-fn\" }}\n",
        code.display()
    );
    let config = write_config(dir.path(), &cgroup_root, "", &functions);

    let stdout = import_image(&image_tar, "pyimg:1", &config);
    assert!(stdout.contains("imported pyimg:1"), "{stdout}");
    let list = Command::new(env!("CARGO_BIN_EXE_fnhost"))
        .args(["image", "list", "--config"])
        .arg(&config)
        .output()
        .expect("run fnhost image list");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains("pyimg:1") && listed.contains("2 layers"),
        "{listed}"
    );

    let daemon = Daemon::start_config(dir, config, cgroup_root);
    let body = invoke_ok(&daemon, "onimage");
    let host_version = Command::new(PYTHON)
        .args(["-c", "import platform; print(platform.python_version())"])
        .output()
        .expect("host python");
    let host_version = String::from_utf8_lossy(&host_version.stdout)
        .trim()
        .to_owned();
    assert_eq!(body["doomed"], false, "{body}");
    assert_eq!(body["data"], serde_json::json!(["new.txt"]), "{body}");
    assert_eq!(body["version"], host_version.as_str(), "{body}");
    assert_eq!(body["image_var"], "from-image", "{body}");
    assert_eq!(body["fn_var"], "from-fn", "{body}");
    assert_eq!(
        body["host_usr_share"], false,
        "the host's /usr must not be bound into an image root: {body}"
    );
}

/// Where the official node images keep node (not the host's /usr/bin).
const IMAGE_NODE: &str = "usr/local/bin/node";

const NODE_HANDLER: &str = "const fs = require('fs');\n\
exports.handler = async () => ({ execPath: process.execPath, version: process.version,\n\
  hostNode: fs.existsSync('/usr/bin/node'), imageVar: process.env.IMAGE_VAR });\n";

/// A node function on an image whose node is at /usr/local/bin/node, as in
/// the official node images: the `node` key names it.
#[test]
fn node_function_runs_on_an_image_with_its_own_node() {
    if !require_root("node_function_runs_on_an_image_with_its_own_node") {
        return;
    }
    let host_node = Path::new("/usr/bin/node");
    assert!(
        host_node.is_file(),
        "/usr/bin/node is needed to build the test image (scripts/install-deps.sh installs nodejs)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let code = dir.path().join("code");
    fs::create_dir(&code).expect("mkdir");
    fs::write(code.join("index.js"), NODE_HANDLER).expect("write handler");
    let mut layer = Layer::default();
    layer
        .entries
        .insert(IMAGE_NODE.into(), Entry::File(host_node.into()));
    layer.system_base(&[host_node.to_path_buf()]);
    let image_tar = dir.path().join("nodeimg.tar");
    fs::write(&image_tar, oci_archive(&[layer.tar()])).expect("write image");

    let cgroup_root = unique_cgroup_root();
    let functions = format!(
        "[[functions]]\nname = \"onnode\"\nruntime = \"nodejs\"\ncode = \"{}\"\nhandler = \"index.handler\"\nimage = \"nodeimg:1\"\nnode = \"/{IMAGE_NODE}\"\n",
        code.display()
    );
    let config = write_config(dir.path(), &cgroup_root, "", &functions);
    import_image(&image_tar, "nodeimg:1", &config);
    let daemon = Daemon::start_config(dir, config, cgroup_root);
    let body = invoke_ok(&daemon, "onnode");
    assert_eq!(body["execPath"], format!("/{IMAGE_NODE}"), "{body}");
    assert_eq!(
        body["hostNode"], false,
        "the host's /usr is not in an image root: {body}"
    );
    assert_eq!(body["imageVar"], "from-image", "{body}");
    let host_version = Command::new(host_node)
        .arg("--version")
        .output()
        .expect("node --version");
    assert_eq!(
        body["version"],
        String::from_utf8_lossy(&host_version.stdout).trim(),
        "{body}"
    );
}
