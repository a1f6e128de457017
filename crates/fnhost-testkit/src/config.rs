//! The scratch side of a test daemon: a private directory sandboxes can
//! traverse (removed on drop unless kept, never across a mount), a cgroup
//! root no other daemon on the machine uses, and the `[server]` section of
//! the config that points the daemon at both.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

use crate::leaks::has_mounts_below;

/// A TOML basic string. JSON string escapes (`\"`, `\\`, `\n`, `\uXXXX`, ...)
/// are all valid TOML basic-string escapes.
pub fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("serializing a str to JSON cannot fail")
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// `<prefix>-<pid>-<n>`: unique per process and call, so tests running in
/// parallel (and several processes) never share a cgroup root.
pub fn unique_cgroup_root(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// A temporary directory for a daemon's config, code and state.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    keep: bool,
    /// Who made it (the prefix without its dash), for messages.
    owner: String,
}

impl Scratch {
    /// Creates `$TMPDIR/<prefix>XXXXXX`, mode 0711: sandboxes run as other
    /// ids (user namespace) and must traverse it to reach the state dir.
    pub fn create(prefix: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .with_context(|| format!("creating a temporary directory {prefix}*"))?;
        let path = dir.keep();
        let scratch = Self {
            path,
            keep: false,
            owner: prefix.trim_end_matches('-').to_owned(),
        };
        std::fs::set_permissions(
            &scratch.path,
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .with_context(|| format!("chmod 711 {}", scratch.path.display()))?;
        Ok(scratch)
    }

    /// Keeps the directory after drop (and says where it is).
    pub fn keep(mut self, keep: bool) -> Self {
        self.keep = keep;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates (if needed) and returns the subdirectory `name`.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Writes `contents` to the file `name` and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let file = self.path.join(name);
        std::fs::write(&file, contents).with_context(|| format!("writing {}", file.display()))?;
        Ok(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("{}: kept {}", self.owner, self.path.display());
        } else if has_mounts_below(&self.path) {
            // Recursive removal would delete through the mount.
            eprintln!(
                "{}: not removing {}: something is still mounted below it",
                self.owner,
                self.path.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("{}: cannot remove {}: {e}", self.owner, self.path.display());
        }
    }
}

/// The `[server]` section of a generated config: loopback on a free port,
/// the scratch state dir and cgroup root, and what else the caller needs.
#[derive(Debug, Clone)]
pub struct ServerSection {
    pub state_dir: PathBuf,
    pub cgroup_root: String,
    /// `admin_listen`; `None` leaves the key out (the daemon's default).
    pub admin_listen: Option<String>,
    /// `shutdown_grace_ms`; `None` leaves the daemon's default.
    pub shutdown_grace_ms: Option<u64>,
    /// More `key = value` lines, verbatim.
    pub extra: String,
}

impl ServerSection {
    pub fn new(state_dir: &Path, cgroup_root: &str) -> Self {
        Self {
            state_dir: state_dir.to_path_buf(),
            cgroup_root: cgroup_root.to_owned(),
            admin_listen: None,
            shutdown_grace_ms: None,
            extra: String::new(),
        }
    }

    /// `[server]` and its keys, ending with a newline.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
        if let Some(admin) = &self.admin_listen {
            let _ = writeln!(out, "admin_listen = {}", toml_string(admin));
        }
        let _ = writeln!(
            out,
            "state_dir = {}\ncgroup_root = {}",
            toml_string(&self.state_dir.display().to_string()),
            toml_string(&self.cgroup_root)
        );
        if let Some(grace) = self.shutdown_grace_ms {
            let _ = writeln!(out, "shutdown_grace_ms = {grace}");
        }
        out.push_str(&self.extra);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_section_escapes_and_orders_keys() {
        let mut s = ServerSection::new(Path::new("/tmp/x \"y\"/state"), "fnhost-test-1-0");
        assert_eq!(
            s.to_toml(),
            "[server]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"/tmp/x \\\"y\\\"/state\"\n\
             cgroup_root = \"fnhost-test-1-0\"\n"
        );
        s.admin_listen = Some("off".into());
        s.shutdown_grace_ms = Some(2000);
        s.extra = "max_body_bytes = 10".into();
        let text = s.to_toml();
        assert!(text.starts_with("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"off\"\n"));
        assert!(
            text.ends_with("shutdown_grace_ms = 2000\nmax_body_bytes = 10\n"),
            "{text}"
        );
    }

    #[test]
    fn cgroup_roots_are_unique() {
        let a = unique_cgroup_root("fnhost-test");
        let b = unique_cgroup_root("fnhost-test");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("fnhost-test-{}-", std::process::id())));
    }

    #[test]
    fn scratch_is_traversable_and_removed() {
        let scratch = Scratch::create("fnhost-testkit-").expect("scratch");
        let path = scratch.path().to_path_buf();
        let mode = std::fs::metadata(&path).expect("stat").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o711
        );
        let state = scratch.subdir("state").expect("state");
        assert!(state.is_dir());
        scratch.write("a.toml", "x = 1").expect("write");
        drop(scratch);
        assert!(!path.exists());
    }
}
