//! Whether this kernel lets an unprivileged process create a user
//! namespace: every clone needs it (an unprivileged zygote creates each
//! clone with `CLONE_NEWUSER`). Checked once at start, so that a host that
//! forbids it gets one clear error naming the sysctl instead of every
//! clone failing with EPERM.

use std::path::Path;

/// A sysctl that stops unprivileged processes from creating user
/// namespaces, with the value it has and the one fnhost needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name} = {value}: fnhost's zygotes run function code unprivileged and create each sandbox in a \
     user namespace of its own, which this setting forbids; set {name} = {needed} \
     (sysctl -w {name}={needed}; deploy/install.sh writes /etc/sysctl.d/60-fnhost.conf)"
)]
pub struct UsernsForbidden {
    pub name: &'static str,
    pub value: String,
    pub needed: &'static str,
}

/// The sysctls to check: (name, file under `proc_sys`, forbidding value,
/// needed value). The Debian/Ubuntu and AppArmor ones exist only on kernels
/// that carry them.
const SYSCTLS: [(&str, &str, &str, &str); 3] = [
    (
        "user.max_user_namespaces",
        "user/max_user_namespaces",
        "0",
        "a positive number, e.g. 65536",
    ),
    (
        "kernel.unprivileged_userns_clone",
        "kernel/unprivileged_userns_clone",
        "0",
        "1",
    ),
    (
        "kernel.apparmor_restrict_unprivileged_userns",
        "kernel/apparmor_restrict_unprivileged_userns",
        "1",
        "0",
    ),
];

/// Checks the sysctls under `proc_sys` (normally `/proc/sys`).
pub fn check(proc_sys: &Path) -> Result<(), UsernsForbidden> {
    for (name, file, forbidding, needed) in SYSCTLS {
        let Ok(value) = std::fs::read_to_string(proc_sys.join(file)) else {
            continue;
        };
        let value = value.trim();
        if value == forbidding {
            return Err(UsernsForbidden {
                name,
                value: value.to_owned(),
                needed,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysctls(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (file, value) in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, format!("{value}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn each_forbidding_sysctl_is_named_with_the_value_needed() {
        let ok = sysctls(&[("user/max_user_namespaces", "96363")]);
        assert_eq!(check(ok.path()), Ok(()));
        let absent = sysctls(&[]);
        assert_eq!(check(absent.path()), Ok(()));

        let zero = sysctls(&[("user/max_user_namespaces", "0")]);
        let err = check(zero.path()).unwrap_err();
        assert_eq!(err.name, "user.max_user_namespaces");

        let debian = sysctls(&[
            ("user/max_user_namespaces", "96363"),
            ("kernel/unprivileged_userns_clone", "0"),
        ]);
        let err = check(debian.path()).unwrap_err();
        assert_eq!(err.name, "kernel.unprivileged_userns_clone");
        assert!(
            err.to_string()
                .contains("kernel.unprivileged_userns_clone = 1"),
            "{err}"
        );

        let ubuntu = sysctls(&[("kernel/apparmor_restrict_unprivileged_userns", "1")]);
        let err = check(ubuntu.path()).unwrap_err();
        assert_eq!(err.needed, "0");
        assert!(
            err.to_string()
                .contains("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"),
            "{err}"
        );
    }
}
