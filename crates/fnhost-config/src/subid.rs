//! Subordinate id ranges delegated to users (`/etc/subuid`, `/etc/subgid`,
//! `name:start:count` per line). fnhost's user-namespace range must not
//! overlap any of them: a user who owns the same host ids (rootless podman,
//! for one) would own fnhost's sandboxes and could ptrace or signal them.

use std::path::{Path, PathBuf};

/// The files checked at start.
pub const SUBID_FILES: [&str; 2] = ["/etc/subuid", "/etc/subgid"];

/// One delegated range and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubidRange {
    pub file: PathBuf,
    pub line: usize,
    pub owner: String,
    pub start: u64,
    pub count: u64,
}

impl SubidRange {
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.count)
    }
}

/// The ranges of one file; a missing file has none, malformed lines are
/// skipped (they delegate nothing the kernel would honour).
pub fn ranges(file: &Path) -> Vec<SubidRange> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let mut fields = line.split(':');
            let owner = fields.next()?.to_string();
            let start = fields.next()?.trim().parse().ok()?;
            let count = fields.next()?.trim().parse().ok()?;
            Some(SubidRange {
                file: file.to_path_buf(),
                line: i + 1,
                owner,
                start,
                count,
            })
        })
        .collect()
}

/// The first delegated range in `files` that overlaps `start..start+count`.
pub fn first_overlap(files: &[&Path], start: u64, count: u64) -> Option<SubidRange> {
    let end = start + count;
    files
        .iter()
        .flat_map(|f| ranges(f))
        .find(|r| r.start < end && start < r.end())
}

/// A base at or above `floor`, aligned to 65536, clear of every range in
/// `files`, for the error message's suggestion.
pub fn free_base(files: &[&Path], floor: u64, count: u64) -> u64 {
    let align = |v: u64| v.div_ceil(65536) * 65536;
    let mut base = align(floor);
    while let Some(r) = first_overlap(files, base, count) {
        base = align(r.end());
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(f.path(), text).expect("write");
        f
    }

    #[test]
    fn finds_the_overlapping_line() {
        let uid = file("# delegated\nalice:100000:65536\nbob:165536:65536\n");
        let gid = file("carol:2000000000:10\n");
        let files = [uid.path(), gid.path()];
        let hit = first_overlap(&files, 150_000, 65536).expect("overlap");
        assert_eq!((hit.line, hit.owner.as_str()), (2, "alice"));
        let hit = first_overlap(&files, 1_999_999_999, 2).expect("overlap");
        assert_eq!((hit.line, hit.owner.as_str()), (1, "carol"));
        assert_eq!(first_overlap(&files, 231_072, 65536), None);
        assert_eq!(
            first_overlap(&files, 0, 100_000),
            None,
            "ranges are half-open"
        );
    }

    #[test]
    fn missing_files_and_bad_lines_delegate_nothing() {
        let odd = file("garbage\nname:x:1\n:5\n");
        assert!(ranges(odd.path()).is_empty());
        assert!(ranges(Path::new("/nonexistent/subuid")).is_empty());
    }

    #[test]
    fn suggests_a_free_aligned_base() {
        let uid = file("alice:100000:65536\nbob:165536:65536\n");
        assert_eq!(free_base(&[uid.path()], 100_000, 65536), 262_144);
        assert_eq!(free_base(&[uid.path()], 300_000, 65536), 327_680);
    }
}
