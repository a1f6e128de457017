//! What the harness's integration tests share: the privileged preconditions
//! (root, and the `fnhost` daemon built beside the harness binary).

use std::path::{Path, PathBuf};

use fnhost_testkit::{require_root, skip};

/// The `fnhost` binary next to `fnhost-bench`, or `None` when `test` cannot
/// run here (not root, or not built: skipped, which fails under CI=true).
pub fn fnhost_beside_harness(test: &str) -> Option<PathBuf> {
    if !require_root(test) {
        return None;
    }
    let fnhost = Path::new(env!("CARGO_BIN_EXE_fnhost-bench"))
        .parent()
        .expect("the harness binary lives in a directory")
        .join("fnhost");
    if !fnhost.is_file() {
        skip(
            test,
            &format!(
                "{} not built: run cargo build --workspace --all-targets",
                fnhost.display()
            ),
        );
        return None;
    }
    Some(fnhost)
}
