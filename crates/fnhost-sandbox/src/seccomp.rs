//! Seccomp: the syscall filter every sandbox runs under.
//!
//! The policy is data: a profile (JSON, [`DEFAULT_PROFILE`] unless a
//! function overrides it) lists every allowed syscall with a comment, with
//! optional argument rules; anything else fails with the profile's default
//! errno (EPERM). A zygote compiles its profile once, with seccompiler.
//!
//! Installing a ~1,500-instruction filter costs ~0.6 ms (the kernel JITs it
//! and precomputes its allow-cache per syscall number), too much per clone.
//! So the filter is split in two stages:
//! - the **zygote stage** (installed once, by the fork server, before it
//!   serves): the allow-list plus the `setup_only` syscalls a clone needs to
//!   set itself up (clone3, mount, chroot). Clones inherit it
//!   for free at fork.
//! - the **clone stage** (installed by each clone after dropping its
//!   privileges, before function code runs): a few tiny programs that
//!   answer the `setup_only` and `errno` syscalls with their errno. Measured
//!   ~15 µs.
//!
//! Stacked filters all run and the strictest verdict wins; between two
//! `SECCOMP_RET_ERRNO` verdicts the kernel keeps the most recently
//! installed one, so a clone-stage ENOSYS beats the zygote stage's EPERM.

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{BpfProgram, TargetArch};
use serde::Deserialize;
use serde_json::{json, Value};

/// The default profile (see `seccomp/default.json` in this crate).
pub const DEFAULT_PROFILE: &str = include_str!("../seccomp/default.json");

/// Error loading, compiling or installing a seccomp profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile is not valid JSON for the profile format: {source}")]
    Parse { source: serde_json::Error },
    #[error("seccomp profile: syscall {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("seccomp profile: unknown errno {errno:?} (known: EPERM, ENOSYS, EACCES, EINVAL)")]
    UnknownErrno { errno: String },
    #[error("seccomp is not supported on architecture {arch} (supported: x86_64, aarch64)")]
    UnsupportedArch { arch: String },
    #[error("cannot compile seccomp profile for {arch}: {source}")]
    Compile {
        arch: &'static str,
        source: seccompiler::Error,
    },
    #[error("cannot install seccomp filter: {source}")]
    Install { source: seccompiler::Error },
}

/// What a clone calls to set itself up, after the zygote stage is installed
/// and before its own stage: a profile must allow them there.
const CLONE_SETUP_SYSCALLS: [&str; 2] = ["mount", "chroot"];

/// A seccomp profile as written in JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the profile is for; free text.
    #[serde(default)]
    pub comment: String,
    /// Errno of every syscall not listed (by name: "EPERM", "ENOSYS", …).
    pub default_errno: String,
    /// Syscalls that fail with a specific errno instead of the default.
    #[serde(default)]
    pub errno: Vec<ErrnoEntry>,
    /// Syscalls allowed in the zygote (fork server, clone setup) that fail
    /// with their errno in a clone once it is set up.
    #[serde(default)]
    pub setup_only: Vec<ErrnoEntry>,
    /// Allowed syscalls.
    pub allow: Vec<AllowEntry>,
}

/// An allowed syscall.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    pub name: String,
    /// Why it is allowed; required, so every entry of a profile is explained.
    pub comment: String,
    /// Only on these architectures (legacy x86_64 syscalls); all if absent.
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    /// Alternatives, each a list of seccompiler argument conditions that must
    /// all hold; allowed unconditionally if absent.
    #[serde(default)]
    pub rules: Option<Vec<Vec<Value>>>,
}

/// A syscall answered with a fixed errno.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrnoEntry {
    pub name: String,
    pub errno: String,
    pub comment: String,
    #[serde(default)]
    pub arches: Option<Vec<String>>,
}

fn errno_value(name: &str) -> Result<u32, SeccompError> {
    Ok(match name {
        "EPERM" => libc::EPERM,
        "ENOSYS" => libc::ENOSYS,
        "EACCES" => libc::EACCES,
        "EINVAL" => libc::EINVAL,
        _ => {
            return Err(SeccompError::UnknownErrno {
                errno: name.to_string(),
            })
        }
    } as u32)
}

fn arch_name(arch: TargetArch) -> &'static str {
    match arch {
        TargetArch::x86_64 => "x86_64",
        TargetArch::aarch64 => "aarch64",
    }
}

/// The architecture of the running process.
pub fn host_arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| SeccompError::UnsupportedArch {
        arch: std::env::consts::ARCH.to_string(),
    })
}

fn applies(arches: &Option<Vec<String>>, arch: TargetArch) -> bool {
    match arches {
        None => true,
        Some(list) => list.iter().any(|a| a == arch_name(arch)),
    }
}

impl Profile {
    /// Parses a profile and checks it: every syscall listed once, in one
    /// section, with a comment; errno names known.
    pub fn parse(json: &str) -> Result<Profile, SeccompError> {
        let profile: Profile =
            serde_json::from_str(json).map_err(|source| SeccompError::Parse { source })?;
        profile.validate()?;
        Ok(profile)
    }

    /// The built-in default profile.
    pub fn default_profile() -> Profile {
        Profile::parse(DEFAULT_PROFILE)
            .expect("the embedded default profile is checked by unit tests")
    }

    fn validate(&self) -> Result<(), SeccompError> {
        errno_value(&self.default_errno)?;
        let invalid = |name: &str, reason: &str| SeccompError::Invalid {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let mut seen = BTreeSet::new();
        let entries = self
            .allow
            .iter()
            .map(|e| (&e.name, &e.comment))
            .chain(self.errno.iter().map(|e| (&e.name, &e.comment)));
        for (name, comment) in entries {
            if !seen.insert(name.as_str()) {
                return Err(invalid(name, "listed more than once"));
            }
            if comment.trim().is_empty() {
                return Err(invalid(name, "has no comment saying why"));
            }
        }
        for entry in self.errno.iter().chain(&self.setup_only) {
            errno_value(&entry.errno)?;
        }
        // Without them every clone would fail its setup, far from here.
        for needed in CLONE_SETUP_SYSCALLS {
            let listed = self.setup_only.iter().any(|e| e.name == needed)
                || self
                    .allow
                    .iter()
                    .any(|e| e.name == needed && e.rules.is_none());
            if !listed {
                return Err(invalid(
                    needed,
                    "must be listed in setup_only (or allow): every clone mounts its writable root and enters it with mount and chroot while it sets itself up",
                ));
            }
        }
        for entry in &self.allow {
            if entry
                .rules
                .as_ref()
                .is_some_and(|r| r.is_empty() || r.iter().any(Vec::is_empty))
            {
                return Err(invalid(
                    &entry.name,
                    "empty rule list (omit `rules` to allow unconditionally)",
                ));
            }
        }
        Ok(())
    }

    /// Compiles the profile for `arch` into its two stages.
    pub fn compile(&self, arch: TargetArch) -> Result<Filter, SeccompError> {
        let default_errno = errno_value(&self.default_errno)?;
        let mut allow = Vec::new();
        for entry in self.allow.iter().filter(|e| applies(&e.arches, arch)) {
            match &entry.rules {
                None => allow.push(json!({ "syscall": entry.name })),
                // seccompiler ORs the rules of entries naming the same syscall.
                Some(rules) => allow.extend(
                    rules
                        .iter()
                        .map(|args| json!({ "syscall": entry.name, "args": args })),
                ),
            }
        }
        let clone_stage = self
            .errno
            .iter()
            .chain(&self.setup_only)
            .filter(|e| applies(&e.arches, arch));
        let mut by_errno: BTreeMap<u32, Vec<Value>> = BTreeMap::new();
        for entry in clone_stage {
            by_errno
                .entry(errno_value(&entry.errno)?)
                .or_default()
                .push(json!({ "syscall": entry.name }));
        }
        allow.extend(
            self.setup_only
                .iter()
                .filter(|e| applies(&e.arches, arch))
                .map(|e| json!({ "syscall": e.name })),
        );
        let mut filters = serde_json::Map::new();
        filters.insert(
            "zygote".into(),
            json!({ "mismatch_action": { "errno": default_errno }, "match_action": "allow", "filter": allow }),
        );
        for (errno, rules) in &by_errno {
            filters.insert(
                format!("clone_{errno}"),
                json!({ "mismatch_action": "allow", "match_action": { "errno": errno }, "filter": rules }),
            );
        }
        let text = Value::Object(filters).to_string();
        let name = arch_name(arch);
        let mut compiled = seccompiler::compile_from_json(text.as_bytes(), arch)
            .map_err(|source| SeccompError::Compile { arch: name, source })?;
        let zygote = compiled
            .remove("zygote")
            .expect("the zygote stage was inserted above");
        let clone = by_errno
            .keys()
            .map(|errno| {
                compiled
                    .remove(&format!("clone_{errno}"))
                    .expect("inserted above")
            })
            .collect();
        Ok(Filter { zygote, clone })
    }
}

/// Compiled BPF programs of a profile, ready to install in a zygote and in
/// any number of its clones.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The allow-list plus the setup-only syscalls.
    zygote: BpfProgram,
    /// One small program per errno of the `setup_only` and `errno` entries.
    clone: Vec<BpfProgram>,
}

impl Filter {
    /// Compiles the default profile for the running architecture.
    pub fn default_for_host() -> Result<Filter, SeccompError> {
        Profile::default_profile().compile(host_arch()?)
    }

    /// Number of BPF instructions of the zygote stage, then of each clone
    /// stage program.
    pub fn program_lengths(&self) -> Vec<usize> {
        std::iter::once(self.zygote.len())
            .chain(self.clone.iter().map(Vec::len))
            .collect()
    }

    /// Installs the zygote stage on the calling thread; every process it
    /// forks afterwards inherits it. Sets `no_new_privs`.
    pub fn install_in_zygote(&self) -> Result<(), SeccompError> {
        seccompiler::apply_filter(&self.zygote).map_err(|source| SeccompError::Install { source })
    }

    /// Installs the clone stage on the calling thread (a clone that inherited
    /// the zygote stage, once it no longer needs the setup-only syscalls).
    /// Allocates nothing: fine in a freshly forked child.
    pub fn install_in_clone(&self) -> Result<(), SeccompError> {
        for program in &self.clone {
            seccompiler::apply_filter(program)
                .map_err(|source| SeccompError::Install { source })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_for_every_arch() {
        let profile = Profile::default_profile();
        for arch in [TargetArch::x86_64, TargetArch::aarch64] {
            let filter = profile.compile(arch).unwrap_or_else(|e| panic!("{e}"));
            let lengths = filter.program_lengths();
            assert_eq!(
                lengths.len(),
                3,
                "zygote stage plus an EPERM and an ENOSYS clone program"
            );
            assert!(
                lengths[1..].iter().all(|&n| n < 64),
                "the clone stage must stay tiny: {lengths:?}"
            );
            // The kernel refuses programs over BPF_MAXINSNS (4096).
            assert!(lengths.iter().all(|&n| n < 4096), "{lengths:?}");
        }
    }

    #[test]
    fn default_profile_denies_what_it_must() {
        let profile = Profile::default_profile();
        let allowed: BTreeSet<&str> = profile.allow.iter().map(|e| e.name.as_str()).collect();
        for denied in [
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "unshare",
            "setns",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "reboot",
            "kexec_load",
            "init_module",
            "finit_module",
            "delete_module",
            "swapon",
            "swapoff",
            "acct",
            "settimeofday",
            "clock_settime",
            "open_by_handle_at",
            "name_to_handle_at",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "lookup_dcookie",
            "quotactl",
            "clone3",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
        ] {
            assert!(!allowed.contains(denied), "{denied} must not be allowed");
        }
        let clone3 = profile
            .setup_only
            .iter()
            .find(|e| e.name == "clone3")
            .expect("clone3 is setup-only");
        assert_eq!(clone3.errno, "ENOSYS");
        let setup: BTreeSet<&str> = profile.setup_only.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            setup,
            BTreeSet::from(["clone3", "mount", "chroot", "userfaultfd"])
        );
        // Only the fork server hibernates; a clone is refused.
        let uffd = profile
            .setup_only
            .iter()
            .find(|e| e.name == "userfaultfd")
            .expect("userfaultfd is setup-only");
        assert_eq!(uffd.errno, "EPERM");
        for conditional in [
            "clone",
            "socket",
            "socketpair",
            "mknodat",
            "ioctl",
            "personality",
        ] {
            let entry = profile
                .allow
                .iter()
                .find(|e| e.name == conditional)
                .expect("listed");
            assert!(
                entry.rules.is_some(),
                "{conditional} must be filtered by its arguments"
            );
        }
    }

    #[test]
    fn profile_checks() {
        let dup = r#"{"default_errno":"EPERM","allow":[{"name":"read","comment":"a"},{"name":"read","comment":"b"}]}"#;
        assert!(matches!(
            Profile::parse(dup),
            Err(SeccompError::Invalid { .. })
        ));
        let no_comment = r#"{"default_errno":"EPERM","allow":[{"name":"read","comment":" "}]}"#;
        assert!(Profile::parse(no_comment)
            .unwrap_err()
            .to_string()
            .contains("no comment"));
        let missing = r#"{"default_errno":"EPERM","allow":[{"name":"read"}]}"#;
        assert!(matches!(
            Profile::parse(missing),
            Err(SeccompError::Parse { .. })
        ));
        let errno = r#"{"default_errno":"EWHAT","allow":[]}"#;
        assert!(matches!(
            Profile::parse(errno),
            Err(SeccompError::UnknownErrno { .. })
        ));
        let unknown = r#"{"default_errno":"EPERM","setup_only":[{"name":"mount","errno":"EPERM","comment":"x"},{"name":"chroot","errno":"EPERM","comment":"x"}],"allow":[{"name":"no_such_call","comment":"x"}]}"#;
        let err = Profile::parse(unknown)
            .unwrap()
            .compile(TargetArch::x86_64)
            .unwrap_err();
        assert!(err.to_string().contains("no_such_call"), "{err}");
        // A profile written for clones that pivoted (before chroot).
        let pivoting = r#"{"default_errno":"EPERM","setup_only":[{"name":"mount","errno":"EPERM","comment":"x"},{"name":"pivot_root","errno":"EPERM","comment":"x"}],"allow":[]}"#;
        let err = Profile::parse(pivoting).unwrap_err().to_string();
        assert!(
            err.contains("chroot") && err.contains("setup_only"),
            "{err}"
        );
    }

    /// Installs both stages of the default filter in a forked child (no root
    /// needed: installing sets no_new_privs) and checks verdicts after each.
    #[test]
    fn installed_filter_verdicts() {
        let filter = Filter::default_for_host().unwrap();
        // SAFETY: the child only makes raw syscalls (install allocates
        // nothing) and leaves with _exit; the parent waits for it.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let code = child_verdicts(&filter);
            // SAFETY: leaving the forked child without running any destructor.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "verdict #{} was wrong",
            libc::WEXITSTATUS(status)
        );
    }

    /// Makes a raw syscall and returns its errno (0 if it succeeded).
    fn errno_of(nr: libc::c_long, args: [libc::c_long; 5]) -> i32 {
        // SAFETY: callers pass integers, null pointers, or pointers to
        // NUL-terminated static strings: valid for any syscall reading them.
        let ret = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4]) };
        if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    fn child_verdicts(filter: &Filter) -> i32 {
        use libc::c_long;
        // mount("none", "/nonexistent/fnhost", "tmpfs"): fails on the path
        // if the filter lets it through, harmless either way.
        let mount = [
            c"none".as_ptr() as c_long,
            c"/nonexistent/fnhost".as_ptr() as c_long,
            c"tmpfs".as_ptr() as c_long,
            0,
            0,
        ];
        // userfaultfd(UFFD_USER_MODE_ONLY | an unknown flag): the kernel
        // answers EINVAL if the filter lets it through (and never EPERM:
        // user-mode-only needs no privilege); nothing is created.
        let uffd = [1 | 1 << 30, 0, 0, 0, 0];
        if filter.install_in_zygote().is_err() {
            return 10;
        }
        // The zygote stage lets setup-only syscalls through (a null
        // clone_args is refused by clone3 itself).
        let zygote_checks = [
            (errno_of(libc::SYS_clone3, [0; 5]), libc::EINVAL),
            (errno_of(libc::SYS_mount, mount), libc::ENOENT),
            (errno_of(libc::SYS_userfaultfd, uffd), libc::EINVAL),
            (errno_of(libc::SYS_keyctl, [1, 0, 0, 0, 0]), libc::EPERM),
        ];
        for (i, (got, want)) in zygote_checks.into_iter().enumerate() {
            if got != want {
                return 11 + i as i32;
            }
        }
        if filter.install_in_clone().is_err() {
            return 19;
        }
        let ns_clone = (libc::CLONE_NEWNS | libc::SIGCHLD) as c_long;
        let checks = [
            (errno_of(libc::SYS_clone3, [0; 5]), libc::ENOSYS),
            (errno_of(libc::SYS_mount, mount), libc::EPERM),
            (errno_of(libc::SYS_userfaultfd, uffd), libc::EPERM),
            (
                errno_of(
                    libc::SYS_unshare,
                    [libc::CLONE_NEWUSER as c_long, 0, 0, 0, 0],
                ),
                libc::EPERM,
            ),
            (
                errno_of(
                    libc::SYS_socket,
                    [
                        libc::AF_NETLINK as c_long,
                        libc::SOCK_RAW as c_long,
                        0,
                        0,
                        0,
                    ],
                ),
                libc::EPERM,
            ),
            (
                errno_of(
                    libc::SYS_socket,
                    [
                        libc::AF_INET as c_long,
                        libc::SOCK_RAW as c_long,
                        libc::IPPROTO_ICMP as c_long,
                        0,
                        0,
                    ],
                ),
                libc::EPERM,
            ),
            (errno_of(libc::SYS_keyctl, [1, 0, 0, 0, 0]), libc::EPERM),
            (
                errno_of(libc::SYS_clone, [ns_clone, 0, 0, 0, 0]),
                libc::EPERM,
            ),
            (errno_of(libc::SYS_getpid, [0; 5]), 0),
            (
                errno_of(
                    libc::SYS_socket,
                    [libc::AF_INET as c_long, libc::SOCK_DGRAM as c_long, 0, 0, 0],
                ),
                0,
            ),
        ];
        for (i, (got, want)) in checks.into_iter().enumerate() {
            if got != want {
                return 20 + i as i32;
            }
        }
        0
    }
}
