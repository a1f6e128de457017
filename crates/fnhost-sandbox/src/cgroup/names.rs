//! The names of fnhost's cgroups below its root: one flat level,
//! `<root>/<function>.zygote` for a function's zygotes and
//! `<root>/<function>.s<N>` for each of its clone slots.
//!
//! Why flat, with no directory per function: every memory cgroup costs the
//! kernel a `shrinker_info` of 1 KiB per 64 superblocks the host has ever
//! had at once (each zygote brings several), so that cost grows with the
//! number of functions *per cgroup*. A per-function parent made an idle
//! function two memory cgroups (on hybrid v1, eight directories) where one
//! holds its zygote; nothing was limited or read at the parent that the
//! leaves do not give. Function names are `[a-z0-9_-]`, so the `.`
//! separator cannot be confused with a name.

/// What a cgroup of fnhost's root holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// The function's zygotes (and their inits).
    Zygote,
    /// Clone slot `n`: one clone at a time.
    Slot(u64),
}

const ZYGOTE_SUFFIX: &str = ".zygote";
const SLOT_INFIX: &str = ".s";

/// The cgroup of `function`'s zygotes, relative to fnhost's root.
pub fn zygote(function: &str) -> String {
    format!("{function}{ZYGOTE_SUFFIX}")
}

/// The cgroup of `function`'s clone slot `n`, relative to fnhost's root.
pub fn slot(function: &str, n: u64) -> String {
    format!("{function}{SLOT_INFIX}{n}")
}

/// The function and member a cgroup path names, from its last component
/// (`/sys/fs/cgroup/fnhost/hello.s3` → `("hello", Slot(3))`); `None` for
/// anything else.
pub fn parse(path: &str) -> Option<(&str, Member)> {
    let leaf = path.rsplit('/').next()?;
    if let Some(function) = leaf.strip_suffix(ZYGOTE_SUFFIX) {
        return (!function.is_empty()).then_some((function, Member::Zygote));
    }
    let (function, n) = leaf.rsplit_once(SLOT_INFIX)?;
    let all_digits = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    if function.is_empty() || !all_digits {
        return None;
    }
    Some((function, Member::Slot(n.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        assert_eq!(parse(&zygote("hello")), Some(("hello", Member::Zygote)));
        assert_eq!(parse(&slot("hello", 17)), Some(("hello", Member::Slot(17))));
        assert_eq!(
            parse("/sys/fs/cgroup/memory/fnhost/my-fn_2.s0"),
            Some(("my-fn_2", Member::Slot(0)))
        );
        // A function may be named like a member.
        assert_eq!(parse("/r/zygote.zygote"), Some(("zygote", Member::Zygote)));
        assert_eq!(parse("/r/s1.s2"), Some(("s1", Member::Slot(2))));
    }

    #[test]
    fn other_paths_are_not_members() {
        for path in [
            "/r/hello",
            "/r/.zygote",
            "/r/.s3",
            "/r/hello.s",
            "/r/hello.sx",
            "/r/hello.s-1",
            "/r/hello/zygote",
            "/r/hello/s3",
            "",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }
}
