//! The gate of privileged tests: run when root, otherwise skip with a printed
//! reason, except under `CI=true`, where CI has root and every tool, so a
//! skip would hide a failure and is one.

/// Whether the CI environment variable says this is a CI run.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips `test` for `reason`: prints why and returns false; panics under
/// `CI=true`, where nothing may be skipped.
pub fn skip(test: &str, reason: &str) -> bool {
    if in_ci() {
        panic!("{test}: {reason}, and CI=true forbids skipping");
    }
    eprintln!("skipping {test}: {reason}");
    false
}

/// True when there is no reason to skip; otherwise [`skip`].
pub fn require(test: &str, skip_reason: Option<String>) -> bool {
    match skip_reason {
        None => true,
        Some(reason) => skip(test, &reason),
    }
}

/// True if the privileged `test` may run: root. Not root: prints the reason
/// and returns false, or panics under `CI=true`.
pub fn require_root(test: &str) -> bool {
    require(test, root_reason())
}

/// Why a privileged test cannot run here, if it cannot.
fn root_reason() -> Option<String> {
    (!is_root()).then(|| "needs root (namespaces, mounts, cgroups)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_skip_runs() {
        assert!(require("t", None));
    }

    #[test]
    fn a_reason_skips_or_fails_under_ci() {
        let outcome = std::panic::catch_unwind(|| skip("t", "tool missing"));
        if in_ci() {
            let message = outcome.expect_err("CI=true must fail a skip");
            let text = message
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default();
            assert!(text.contains("t: tool missing"), "{text}");
        } else {
            assert_eq!(outcome.ok(), Some(false));
        }
    }

    #[test]
    fn root_reason_matches_the_euid() {
        assert_eq!(root_reason().is_none(), is_root());
    }
}
