//! The cgroup2 `favordynmods` mount option: cheap task migrations.
//!
//! Moving a task between cgroups takes the kernel's cgroup threadgroup
//! lock for writing. Without `favordynmods` that lock is a global
//! percpu rwsem whose writer, after the lock has been idle for a moment,
//! waits for a full RCU grace period (8–24 ms measured on our hosts). fnhost
//! migrates a task on every cold start, every on-demand clone and every
//! wake-up of a hibernated function (on cgroup v1 and hybrid hosts, each
//! clone attaches itself by pid), so at low request rates each of those
//! pays the grace period. With the option set, migrations stop waiting
//! (0.25 ms after idle, was 14 ms, same host); since Linux 6.18 it also
//! moves `cgroup.procs` writes to a per-threadgroup lock, and the kernel
//! keeps that mode until reboot even if the option is removed. The option
//! is global (one lock for every hierarchy), set by remounting the cgroup2
//! filesystem; hence `server.cgroup_favordynmods` decides whether fnhost
//! may do so.

use std::path::Path;

use nix::mount::MsFlags;

use super::detect::super_options_of;
use super::{CgroupError, CgroupLayout};
use crate::syscall::Syscall;

/// The mount option.
pub const OPTION: &str = "favordynmods";

/// What [`favor_dynmods`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FavorDynmods {
    /// The cgroup2 filesystem already had the option.
    AlreadySet,
    /// fnhost remounted it with the option.
    Enabled,
    /// No cgroup2 filesystem is mounted (pure v1 host).
    NoCgroup2,
}

/// Sets `favordynmods` on the layout's cgroup2 mount unless it is there,
/// keeping every other option of the mount (a remount drops the ones it is
/// not given).
pub fn favor_dynmods(
    layout: &CgroupLayout,
    mountinfo: &str,
    sys: &dyn Syscall,
) -> Result<FavorDynmods, CgroupError> {
    let Some(mount) = layout.cgroup2_mount() else {
        return Ok(FavorDynmods::NoCgroup2);
    };
    let options = super_options_of(mountinfo, mount).unwrap_or_default();
    if options.iter().any(|o| o == OPTION) {
        return Ok(FavorDynmods::AlreadySet);
    }
    let data = remount_data(&options);
    sys.mount(
        None,
        mount,
        Some("cgroup2"),
        MsFlags::MS_REMOUNT,
        Some(&data),
    )
    .map_err(|source| CgroupError::FavorDynmods {
        path: mount.to_path_buf(),
        source,
    })?;
    Ok(FavorDynmods::Enabled)
}

/// The mount's own options plus `favordynmods` (`rw`/`ro` are flags of the
/// mount, not of the filesystem, and stay as they are).
fn remount_data(options: &[String]) -> String {
    options
        .iter()
        .map(String::as_str)
        .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
        .chain(std::iter::once(OPTION))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether the cgroup2 filesystem at `mount` has the option, per `mountinfo`.
pub fn is_set(mountinfo: &str, mount: &Path) -> bool {
    mount_options(mountinfo, mount).is_some_and(|o| o.iter().any(|o| o == OPTION))
}

/// The filesystem options of the cgroup filesystem at `mount`, per `mountinfo`.
pub fn mount_options(mountinfo: &str, mount: &Path) -> Option<Vec<String>> {
    super_options_of(mountinfo, mount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Recorder;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
38 35 0:33 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
39 35 0:34 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu
40 35 0:35 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
";

    fn layout(text: &str) -> CgroupLayout {
        CgroupLayout::from_mountinfo(text).expect("layout")
    }

    #[test]
    fn remounts_keeping_the_mounts_own_options() {
        let sys = Recorder::default();
        let done = favor_dynmods(&layout(HYBRID), HYBRID, &sys).expect("remount");
        assert_eq!(done, FavorDynmods::Enabled);
        let calls = sys.into_calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(calls[0].contains("/sys/fs/cgroup/unified"), "{calls:?}");
        assert!(calls[0].contains("MS_REMOUNT"), "{calls:?}");
        assert!(
            calls[0].contains("nsdelegate,memory_recursiveprot,favordynmods"),
            "{calls:?}"
        );
        assert!(!is_set(HYBRID, Path::new("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn leaves_a_mount_that_has_it_alone() {
        let text = HYBRID.replace(
            "memory_recursiveprot\n",
            "memory_recursiveprot,favordynmods\n",
        );
        let sys = Recorder::default();
        let done = favor_dynmods(&layout(&text), &text, &sys).expect("nothing to do");
        assert_eq!(done, FavorDynmods::AlreadySet);
        assert!(sys.into_calls().is_empty());
        assert!(is_set(&text, Path::new("/sys/fs/cgroup/unified")));
    }

    #[test]
    fn a_pure_v1_host_has_no_cgroup2_to_remount() {
        let text: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        let sys = Recorder::default();
        assert_eq!(
            favor_dynmods(&layout(&text), &text, &sys).expect("v1"),
            FavorDynmods::NoCgroup2
        );
        assert!(sys.into_calls().is_empty());
    }

    #[test]
    fn a_refused_remount_names_the_mount() {
        let sys = Recorder::failing_on("MS_REMOUNT");
        let err = favor_dynmods(&layout(HYBRID), HYBRID, &sys).expect_err("refused");
        let text = err.to_string();
        assert!(text.contains("/sys/fs/cgroup/unified"), "{text}");
        assert!(text.contains("server.cgroup_favordynmods"), "{text}");
    }
}
