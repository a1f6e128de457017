//! Which cgroup layout the host has, read from `/proc/self/mountinfo`.

use std::path::{Path, PathBuf};

use super::CgroupError;

/// Mount points of the v1 controllers fnhost uses. Two fields may name the
/// same directory when controllers are co-mounted (e.g. `cpu,cpuacct`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mounts {
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub pids: PathBuf,
}

/// How the host's cgroups are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// Pure cgroup v2; the controllers live in the one hierarchy.
    V2 { mount: PathBuf },
    /// v1 controllers plus a (controller-less) cgroup2 hierarchy, which
    /// still offers `cgroup.kill` and `CLONE_INTO_CGROUP`.
    Hybrid { v1: V1Mounts, unified: PathBuf },
    /// Pure cgroup v1.
    V1 { v1: V1Mounts },
}

/// One cgroup or cgroup2 line of mountinfo.
#[derive(Debug)]
struct CgroupMount {
    /// Root of the mount within its hierarchy ("/" unless a subtree is
    /// bind-mounted).
    root: String,
    mount_point: PathBuf,
    v2: bool,
    options: Vec<String>,
}

impl CgroupLayout {
    /// Reads `/proc/self/mountinfo` and classifies it.
    pub fn detect() -> Result<CgroupLayout, CgroupError> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|source| CgroupError::ReadMountinfo { source })?;
        Self::from_mountinfo(&text)
    }

    /// Classifies the cgroup mounts listed in `text` (mountinfo format).
    pub fn from_mountinfo(text: &str) -> Result<CgroupLayout, CgroupError> {
        let mounts: Vec<CgroupMount> = text.lines().filter_map(parse_line).collect();

        let find_v1 = |controller: &str| {
            let mut candidates = mounts
                .iter()
                .filter(|m| !m.v2 && m.options.iter().any(|o| o == controller));
            let first = candidates.next()?;
            // Prefer a mount of the whole hierarchy over a bind of a subtree.
            Some(
                std::iter::once(first)
                    .chain(candidates)
                    .find(|m| m.root == "/")
                    .unwrap_or(first)
                    .mount_point
                    .clone(),
            )
        };
        let (memory, cpu, pids) = (find_v1("memory"), find_v1("cpu"), find_v1("pids"));

        let unified = {
            let v2: Vec<&CgroupMount> = mounts.iter().filter(|m| m.v2).collect();
            v2.iter()
                .find(|m| m.mount_point == Path::new("/sys/fs/cgroup"))
                .or_else(|| {
                    v2.iter()
                        .find(|m| m.mount_point == Path::new("/sys/fs/cgroup/unified"))
                })
                .or_else(|| v2.iter().find(|m| m.root == "/"))
                .or(v2.first())
                .map(|m| m.mount_point.clone())
        };

        match (memory, cpu, pids, unified) {
            (Some(memory), Some(cpu), Some(pids), unified) => {
                let v1 = V1Mounts { memory, cpu, pids };
                Ok(match unified {
                    Some(unified) => CgroupLayout::Hybrid { v1, unified },
                    None => CgroupLayout::V1 { v1 },
                })
            }
            (None, None, None, Some(mount)) => Ok(CgroupLayout::V2 { mount }),
            (None, None, None, None) => Err(CgroupError::UnsupportedLayout {
                reason:
                    "no cgroup or cgroup2 filesystem is mounted (mount cgroup2 at /sys/fs/cgroup)"
                        .to_string(),
            }),
            (memory, cpu, pids, _) => {
                let missing: Vec<&str> = [("memory", memory), ("cpu", cpu), ("pids", pids)]
                    .into_iter()
                    .filter(|(_, m)| m.is_none())
                    .map(|(name, _)| name)
                    .collect();
                Err(CgroupError::UnsupportedLayout {
                    reason: format!(
                        "the v1 controller(s) {} are not mounted while others are; fnhost needs \
                         memory, cpu and pids all in v1 or all in cgroup2",
                        missing.join(", ")
                    ),
                })
            }
        }
    }

    /// The cgroup2 filesystem's mount point, if the host has one.
    pub fn cgroup2_mount(&self) -> Option<&Path> {
        match self {
            CgroupLayout::V2 { mount } => Some(mount),
            CgroupLayout::Hybrid { unified, .. } => Some(unified),
            CgroupLayout::V1 { .. } => None,
        }
    }

    /// A one-line summary for logs and `fnhost check-config`.
    pub fn describe(&self) -> String {
        match self {
            CgroupLayout::V2 { mount } => format!("cgroup v2 at {}", mount.display()),
            CgroupLayout::Hybrid { v1, unified } => format!(
                "hybrid (v1 memory/cpu/pids + cgroup2 at {}){}",
                unified.display(),
                v1.describe_if_unusual()
            ),
            CgroupLayout::V1 { v1 } => format!(
                "cgroup v1 (memory at {}, cpu at {}, pids at {})",
                v1.memory.display(),
                v1.cpu.display(),
                v1.pids.display()
            ),
        }
    }
}

impl V1Mounts {
    /// Mentions the v1 mount points only when they are not the usual ones.
    fn describe_if_unusual(&self) -> String {
        let usual = |p: &Path, names: &[&str]| {
            names
                .iter()
                .any(|n| p == Path::new("/sys/fs/cgroup").join(n))
        };
        if usual(&self.memory, &["memory"])
            && usual(&self.cpu, &["cpu", "cpu,cpuacct", "cpuacct,cpu"])
            && usual(&self.pids, &["pids"])
        {
            String::new()
        } else {
            format!(
                " [memory at {}, cpu at {}, pids at {}]",
                self.memory.display(),
                self.cpu.display(),
                self.pids.display()
            )
        }
    }
}

/// What one hierarchy of the layout carries, as far as fnhost is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// cgroup2 with the memory, cpu and pids controllers (pure v2).
    V2,
    /// cgroup2 without controllers (hybrid): membership, `cgroup.kill`,
    /// `CLONE_INTO_CGROUP`, but no limits.
    Unified,
    /// A v1 hierarchy carrying some of fnhost's controllers.
    V1 { memory: bool, cpu: bool, pids: bool },
}

impl Kind {
    pub(crate) fn is_cgroup2(self) -> bool {
        matches!(self, Kind::V2 | Kind::Unified)
    }
}

/// One mounted hierarchy fnhost keeps a subtree in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    pub(crate) mount: PathBuf,
    pub(crate) kind: Kind,
}

impl CgroupLayout {
    /// The distinct hierarchies of this layout (co-mounted v1 controllers
    /// share one), v1 first.
    pub(crate) fn hierarchies(&self) -> Vec<Hierarchy> {
        let mut out: Vec<Hierarchy> = Vec::new();
        let mut add_v1 = |mount: &Path, memory: bool, cpu: bool, pids: bool| {
            if let Some(h) = out.iter_mut().find(|h| h.mount == mount) {
                if let Kind::V1 {
                    memory: m,
                    cpu: c,
                    pids: p,
                } = &mut h.kind
                {
                    *m |= memory;
                    *c |= cpu;
                    *p |= pids;
                }
            } else {
                out.push(Hierarchy {
                    mount: mount.to_path_buf(),
                    kind: Kind::V1 { memory, cpu, pids },
                });
            }
        };
        let v1 = match self {
            CgroupLayout::V2 { mount } => {
                return vec![Hierarchy {
                    mount: mount.clone(),
                    kind: Kind::V2,
                }];
            }
            CgroupLayout::Hybrid { v1, .. } | CgroupLayout::V1 { v1 } => v1,
        };
        add_v1(&v1.memory, true, false, false);
        add_v1(&v1.cpu, false, true, false);
        add_v1(&v1.pids, false, false, true);
        if let CgroupLayout::Hybrid { unified, .. } = self {
            out.push(Hierarchy {
                mount: unified.clone(),
                kind: Kind::Unified,
            });
        }
        out
    }
}

/// Parses one mountinfo line (proc(5)); `None` unless it is a cgroup mount.
/// The filesystem options (mountinfo's last field) of the cgroup or
/// cgroup2 filesystem mounted at `mount_point`.
pub(super) fn super_options_of(mountinfo: &str, mount_point: &Path) -> Option<Vec<String>> {
    // The last mount at a point is the one in effect.
    mountinfo
        .lines()
        .rev()
        .filter_map(parse_line)
        .find(|m| m.mount_point == mount_point)
        .map(|m| m.options)
}

fn parse_line(line: &str) -> Option<CgroupMount> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let mut post = post.split(' ');
    let fstype = post.next()?;
    let _source = post.next()?;
    let super_options = post.next().unwrap_or("");
    let v2 = match fstype {
        "cgroup2" => true,
        "cgroup" => false,
        _ => return None,
    };
    Some(CgroupMount {
        root: unescape(pre.get(3)?),
        mount_point: PathBuf::from(unescape(pre.get(4)?)),
        v2,
        options: super_options.split(',').map(str::to_string).collect(),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for space, `\134` for `\`, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                let value = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(value as u8);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's cgroup lines (kernel 6.18 VM).
    const HYBRID: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd host (Debian 12) in unified mode.
    const PURE_V2: &str = "\
26 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
27 26 0:25 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
30 27 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
31 27 0:28 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:5 - pstore pstore rw
";

    /// CentOS 7: pure v1, cpu co-mounted with cpuacct, systemd's named hierarchy.
    const PURE_V1: &str = "\
18 61 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
28 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
29 24 0:25 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
30 24 0:26 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,pids
31 24 0:27 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpuset
";

    #[test]
    fn parses_this_machines_hybrid_layout() {
        let layout = CgroupLayout::from_mountinfo(HYBRID).unwrap();
        assert_eq!(
            layout,
            CgroupLayout::Hybrid {
                v1: V1Mounts {
                    memory: "/sys/fs/cgroup/memory".into(),
                    cpu: "/sys/fs/cgroup/cpu".into(),
                    pids: "/sys/fs/cgroup/pids".into(),
                },
                unified: "/sys/fs/cgroup/unified".into(),
            }
        );
        assert_eq!(
            layout.describe(),
            "hybrid (v1 memory/cpu/pids + cgroup2 at /sys/fs/cgroup/unified)"
        );
    }

    #[test]
    fn parses_pure_v2() {
        let layout = CgroupLayout::from_mountinfo(PURE_V2).unwrap();
        assert_eq!(
            layout,
            CgroupLayout::V2 {
                mount: "/sys/fs/cgroup".into()
            }
        );
        assert_eq!(layout.describe(), "cgroup v2 at /sys/fs/cgroup");
    }

    #[test]
    fn parses_pure_v1_with_comounted_cpu() {
        let layout = CgroupLayout::from_mountinfo(PURE_V1).unwrap();
        assert_eq!(
            layout,
            CgroupLayout::V1 {
                v1: V1Mounts {
                    memory: "/sys/fs/cgroup/memory".into(),
                    cpu: "/sys/fs/cgroup/cpu,cpuacct".into(),
                    pids: "/sys/fs/cgroup/pids".into(),
                },
            }
        );
        assert!(layout
            .describe()
            .starts_with("cgroup v1 (memory at /sys/fs/cgroup/memory"));
    }

    #[test]
    fn named_systemd_hierarchy_is_not_a_controller() {
        // name=systemd alone must not count as any controller.
        let only_systemd = PURE_V1
            .lines()
            .filter(|l| l.contains("name=systemd") || !l.contains(" cgroup "))
            .collect::<Vec<_>>()
            .join("\n");
        let err = CgroupLayout::from_mountinfo(&only_systemd).unwrap_err();
        assert!(
            matches!(err, CgroupError::UnsupportedLayout { .. }),
            "{err}"
        );
    }

    #[test]
    fn partial_v1_is_rejected_with_the_missing_controller() {
        let no_pids: String = HYBRID
            .lines()
            .filter(|l| !l.contains("rw,pids"))
            .collect::<Vec<_>>()
            .join("\n");
        let err = CgroupLayout::from_mountinfo(&no_pids)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pids"), "{err}");
    }

    #[test]
    fn no_cgroups_at_all() {
        let err = CgroupLayout::from_mountinfo("22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no cgroup"), "{err}");
    }

    #[test]
    fn unescapes_mount_points_and_prefers_whole_hierarchy() {
        let text = "\
40 30 0:27 /fnhost /mnt/cg\\040bind rw - cgroup2 cgroup2 rw
41 30 0:27 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            CgroupLayout::from_mountinfo(text).unwrap(),
            CgroupLayout::V2 {
                mount: "/mnt/cg two".into()
            }
        );
        assert_eq!(unescape("a\\134b\\011c"), "a\\b\tc");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn unusual_v1_mounts_are_described() {
        let layout = CgroupLayout::Hybrid {
            v1: V1Mounts {
                memory: "/cg/memory".into(),
                cpu: "/sys/fs/cgroup/cpu".into(),
                pids: "/sys/fs/cgroup/pids".into(),
            },
            unified: "/cg/unified".into(),
        };
        assert!(
            layout.describe().contains("memory at /cg/memory"),
            "{}",
            layout.describe()
        );
    }

    #[test]
    fn hierarchies_merge_comounted_controllers() {
        let v1 = V1Mounts {
            memory: "/cg/memory".into(),
            cpu: "/cg/cpu,cpuacct".into(),
            pids: "/cg/memory".into(),
        };
        let hs = CgroupLayout::Hybrid {
            v1,
            unified: "/cg/unified".into(),
        }
        .hierarchies();
        assert_eq!(
            hs,
            vec![
                Hierarchy {
                    mount: "/cg/memory".into(),
                    kind: Kind::V1 {
                        memory: true,
                        cpu: false,
                        pids: true
                    }
                },
                Hierarchy {
                    mount: "/cg/cpu,cpuacct".into(),
                    kind: Kind::V1 {
                        memory: false,
                        cpu: true,
                        pids: false
                    }
                },
                Hierarchy {
                    mount: "/cg/unified".into(),
                    kind: Kind::Unified
                },
            ]
        );
        let v2 = CgroupLayout::V2 {
            mount: "/cg".into(),
        }
        .hierarchies();
        assert_eq!(
            v2,
            vec![Hierarchy {
                mount: "/cg".into(),
                kind: Kind::V2
            }]
        );
    }
}
