//! A layer's seal: what every entry of a committed layer looked like right
//! after the commit (type, mode, owner, size, inode and change time), kept
//! beside it as `<hex>.seal`. The store trusts an existing layer directory
//! only while its seal matches: any write, chmod, chown, added or removed
//! entry since the commit changes a ctime or the listing, and user space
//! cannot set a ctime back. A layer without a seal (built by an older
//! fnhost, when a sandbox could reach the layers, or cut short by a crash
//! between commit and seal) is not trusted either: it is rebuilt.
//!
//! Cost: one `lstat` per entry when a layer is reused, no reading of file
//! contents.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::write::Durability;

/// Path of the seal of the layer directory `layer`.
pub(crate) fn path_of(layer: &Path) -> PathBuf {
    let mut name = layer.file_name().unwrap_or_default().to_os_string();
    name.push(".seal");
    layer.with_file_name(name)
}

/// One line per entry, sorted by path (the layer root is "."). Symlinks are
/// not followed.
fn describe(layer: &Path) -> io::Result<String> {
    let mut lines = Vec::new();
    let mut stack = vec![PathBuf::from(".")];
    while let Some(rel) = stack.pop() {
        let path = layer.join(&rel);
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                stack.push(rel.join(entry?.file_name()));
            }
        }
        let mut line = String::new();
        let _ = write!(
            line,
            "{}\t{:o}\t{}:{}\t{}\t{}\t{}.{:09}",
            rel.display(),
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.size(),
            meta.ino(),
            meta.ctime(),
            meta.ctime_nsec()
        );
        lines.push(line);
    }
    lines.sort_unstable();
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(text)
}

/// Writes the seal of the freshly committed layer `layer`. With
/// `Durability::EachFile` it is on disk before it is renamed into place;
/// deferred, a crash can leave a seal that is empty or missing, which only
/// makes the next start build the layer again (a seal is written after the
/// layer's contents were synced, so it never vouches for unsynced data).
pub(crate) fn write(layer: &Path, durability: Durability) -> io::Result<()> {
    let text = describe(layer)?;
    let seal = path_of(layer);
    let tmp = seal.with_extension("seal.tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    if durability == Durability::EachFile {
        file.sync_all()?;
    }
    fs::rename(&tmp, &seal)
}

/// Why an existing layer is not trusted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Untrusted {
    /// No seal (older fnhost, or a crash right after the commit).
    Unsealed,
    /// The first entry (in path order) that differs from its seal.
    Changed(String),
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Untrusted::Unsealed => f.write_str("it has no seal"),
            Untrusted::Changed(entry) => write!(f, "{entry} changed since it was built"),
        }
    }
}

/// Checks the existing layer `layer` against its seal.
pub(crate) fn verify(layer: &Path) -> Result<(), Untrusted> {
    let Ok(sealed) = fs::read_to_string(path_of(layer)) else {
        return Err(Untrusted::Unsealed);
    };
    let now = describe(layer).map_err(|e| Untrusted::Changed(format!("the layer ({e})")))?;
    if now == sealed {
        return Ok(());
    }
    let entry = |line: &str| line.split('\t').next().unwrap_or_default().to_owned();
    let differs = now
        .lines()
        .zip(sealed.lines())
        .find(|(a, b)| a != b)
        .map(|(a, b)| entry(a.min(b)))
        .unwrap_or_else(|| "an entry (added or removed)".to_owned());
    Err(Untrusted::Changed(differs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("abc");
        fs::create_dir_all(layer.join("etc")).unwrap();
        fs::write(layer.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        (dir, layer)
    }

    #[test]
    fn a_sealed_layer_verifies_until_anything_in_it_changes() {
        let (_dir, layer) = layer();
        assert_eq!(verify(&layer), Err(Untrusted::Unsealed));
        write(&layer, Durability::EachFile).unwrap();
        assert!(path_of(&layer).ends_with("abc.seal"));
        assert_eq!(verify(&layer), Ok(()));

        // Same size, same mtime set back: the ctime still tells.
        let hosts = layer.join("etc/hosts");
        let mtime = fs::metadata(&hosts).unwrap().modified().unwrap();
        fs::write(&hosts, "6.6.6.6 localhost\n").unwrap();
        fs::File::options()
            .write(true)
            .open(&hosts)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(
            verify(&layer),
            Err(Untrusted::Changed("./etc/hosts".into()))
        );
    }

    #[test]
    fn an_added_file_is_found() {
        let (_dir, layer) = layer();
        write(&layer, Durability::EachFile).unwrap();
        fs::write(layer.join("etc/ld.so.preload"), "/tmp/evil.so\n").unwrap();
        assert!(matches!(verify(&layer), Err(Untrusted::Changed(_))));
    }
}
