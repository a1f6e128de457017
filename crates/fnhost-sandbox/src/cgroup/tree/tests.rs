//! Tests of the parent module.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::cgroup::fake::{FakeCgroupFs, SUPERVISOR_PID};
use crate::cgroup::names;

const ROOT: &str = "fnhost";

fn limits() -> CgroupLimits {
    CgroupLimits::from_cpus(64 << 20, 0.5, 32)
}

fn tree(fake: &Arc<FakeCgroupFs>) -> CgroupTree {
    let fs: Arc<dyn CgroupFs> = fake.clone();
    CgroupTree::with_fs(fake.layout(), ROOT, fs)
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
        .trim()
        .to_string()
}

/// Every file outside `<mount>/fnhost`, with its content.
fn outside_root(fake: &FakeCgroupFs) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, skip: &[PathBuf], out: &mut BTreeMap<PathBuf, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if skip.contains(&path) {
                continue;
            }
            if path.is_dir() {
                out.insert(path.clone(), "<dir>".into());
                walk(&path, skip, out);
            } else {
                out.insert(
                    path.clone(),
                    std::fs::read_to_string(&path).unwrap_or_default(),
                );
            }
        }
    }
    let skip: Vec<PathBuf> = fake.mounts().iter().map(|m| m.join(ROOT)).collect();
    let mut out = BTreeMap::new();
    walk(fake.base(), &skip, &mut out);
    out
}

#[test]
fn v2_create_enables_controllers_and_writes_limits() {
    let fake = Arc::new(FakeCgroupFs::v2());
    let mount = fake.base().join("cgroup");
    let before = outside_root(&fake);
    let cg = tree(&fake).create("hello/s1", &limits()).unwrap();
    assert_eq!(cg.name(), "hello/s1");

    let root = mount.join(ROOT);
    assert_eq!(read(root.join("cgroup.subtree_control")), "memory cpu pids");
    assert_eq!(
        read(root.join("hello/cgroup.subtree_control")),
        "memory cpu pids"
    );
    let leaf = root.join("hello/s1");
    assert_eq!(
        read(leaf.join("cgroup.subtree_control")),
        "",
        "leaves hold processes"
    );
    assert_eq!(read(leaf.join("memory.max")), "67108864");
    assert_eq!(read(leaf.join("memory.swap.max")), "0");
    assert_eq!(read(leaf.join("cpu.max")), "50000 100000");
    assert_eq!(read(leaf.join("pids.max")), "32");
    assert_eq!(
        outside_root(&fake),
        before,
        "nothing outside the root may change"
    );

    // Reuse: same cgroup, new limits; a sibling under the same function.
    let unlimited = CgroupLimits {
        memory_bytes: CgroupLimits::UNLIMITED,
        cpu_quota_us: None,
        cpu_period_us: 100_000,
        pids_max: CgroupLimits::UNLIMITED,
        cpu_weight: Some(10),
    };
    tree(&fake).create("hello/s1", &unlimited).unwrap();
    assert_eq!(read(leaf.join("memory.max")), "max");
    assert_eq!(read(leaf.join("cpu.max")), "max 100000");
    assert_eq!(read(leaf.join("pids.max")), "max");
    assert_eq!(read(leaf.join("cpu.weight")), "10");
    tree(&fake).create("hello/zygote", &limits()).unwrap();
    assert_eq!(read(root.join("hello/zygote/pids.max")), "32");
}

#[test]
fn v2_without_delegated_controllers_fails_and_leaves_nothing() {
    let fake = Arc::new(FakeCgroupFs::v2());
    let mount = fake.base().join("cgroup");
    std::fs::write(mount.join("cgroup.subtree_control"), "cpu\n").unwrap();
    let err = tree(&fake).create("hello/s1", &limits()).unwrap_err();
    match &err {
        CgroupError::ControllersUnavailable { missing, .. } => {
            assert_eq!(missing, "memory, pids")
        }
        other => panic!("expected ControllersUnavailable, got {other}"),
    }
    assert!(err.to_string().contains("never modifies"), "{err}");
    assert!(!mount.join(ROOT).exists());
    assert_eq!(
        read(mount.join("cgroup.subtree_control")),
        "cpu",
        "supervisor's file untouched"
    );
}

#[test]
fn v1_create_writes_limits_in_each_controller() {
    let fake = Arc::new(FakeCgroupFs::v1());
    let before = outside_root(&fake);
    let cg = tree(&fake).create("hello/s1", &limits()).unwrap();
    let b = fake.base();
    let mem = b.join("memory/fnhost/hello/s1");
    assert_eq!(read(mem.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(read(mem.join("memory.memsw.limit_in_bytes")), "67108864");
    let cpu = b.join("cpu,cpuacct/fnhost/hello/s1");
    assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(b.join("pids/fnhost/hello/s1/pids.max")), "32");
    // Controllers only where they live.
    assert!(!mem.join("pids.max").exists() && !cpu.join("memory.limit_in_bytes").exists());
    assert_eq!(outside_root(&fake), before);

    assert!(cg.clone_into_fd().unwrap().is_none());
    assert_eq!(cg.v1_procs_fds().unwrap().len(), 3);
}

#[test]
fn hybrid_creates_in_all_four_hierarchies() {
    let fake = Arc::new(FakeCgroupFs::hybrid());
    let cg = tree(&fake).create("hello/zygote", &limits()).unwrap();
    let b = fake.base();
    for m in ["memory", "cpu,cpuacct", "pids", "unified"] {
        assert!(b.join(m).join("fnhost/hello/zygote").is_dir(), "{m}");
    }
    assert_eq!(
        read(b.join("memory/fnhost/hello/zygote/memory.limit_in_bytes")),
        "67108864"
    );
    // The unified hierarchy has no controllers: nothing enabled there.
    assert_eq!(read(b.join("unified/fnhost/cgroup.subtree_control")), "");
    let fd = cg.clone_into_fd().unwrap().expect("cgroup2 present");
    assert!(std::fs::File::from(fd).metadata().unwrap().is_dir());
    assert_eq!(cg.v1_procs_fds().unwrap().len(), 3);
}

fn lifecycle(fake: Arc<FakeCgroupFs>) {
    let cg = tree(&fake).create("hello/s1", &limits()).unwrap();
    assert!(cg.is_empty().unwrap());
    cg.attach(5000).unwrap();
    cg.attach(5001).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![5000, 5001]);
    for m in fake.mounts() {
        assert_eq!(read(m.join("fnhost/hello/s1/cgroup.procs")), "5000\n5001");
    }
    assert!(!cg.is_empty().unwrap());
    assert_eq!(cg.oom_kills().unwrap(), 0);
    assert_eq!(cg.memory_current().unwrap(), 0);
    assert!(cg
        .remove()
        .unwrap_err()
        .to_string()
        .contains("still inside"));

    assert_eq!(cg.kill_all().unwrap(), 2);
    let mut killed = fake.killed.lock().unwrap().clone();
    killed.sort();
    assert_eq!(killed, vec![5000, 5001]);
    assert!(cg.is_empty().unwrap());
    assert_eq!(cg.kill_all().unwrap(), 0);

    cg.remove().unwrap();
    cg.remove().unwrap();
    for m in fake.mounts() {
        assert!(!m.join("fnhost/hello/s1").exists());
        assert!(m.join("fnhost/hello").is_dir());
    }
}

#[test]
fn lifecycle_v2() {
    lifecycle(Arc::new(FakeCgroupFs::v2()));
}

#[test]
fn lifecycle_hybrid() {
    lifecycle(Arc::new(FakeCgroupFs::hybrid()));
}

#[test]
fn lifecycle_v1() {
    lifecycle(Arc::new(FakeCgroupFs::v1()));
}

#[test]
fn oom_counters_are_read_per_layout() {
    let fake = Arc::new(FakeCgroupFs::v2());
    let cg = tree(&fake).create("f/s1", &limits()).unwrap();
    let events = fake.base().join("cgroup/fnhost/f/s1/memory.events");
    std::fs::write(
        &events,
        "low 0\nhigh 0\nmax 9\noom 3\noom_kill 3\noom_group_kill 0\n",
    )
    .unwrap();
    std::fs::write(events.with_file_name("memory.current"), "123456\n").unwrap();
    assert_eq!(cg.oom_kills().unwrap(), 3);
    assert_eq!(cg.memory_current().unwrap(), 123456);

    let fake = Arc::new(FakeCgroupFs::hybrid());
    let cg = tree(&fake).create("f/s1", &limits()).unwrap();
    let oom = fake.base().join("memory/fnhost/f/s1/memory.oom_control");
    std::fs::write(&oom, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
    assert_eq!(cg.oom_kills().unwrap(), 2);
}

#[test]
fn migration_lock_is_primed_only_where_clones_migrate() {
    let fake = Arc::new(FakeCgroupFs::hybrid());
    let cg = tree(&fake).create("f/zygote", &limits()).unwrap();
    assert!(cg.prime_migration_lock(42).unwrap());
    let procs = fake.base().join("memory/fnhost/f/zygote/cgroup.procs");
    assert!(std::fs::read_to_string(procs).unwrap().contains("42"));

    let fake = Arc::new(FakeCgroupFs::v2());
    let cg = tree(&fake).create("f/zygote", &limits()).unwrap();
    assert!(!cg.prime_migration_lock(42).unwrap());
}

#[test]
fn reclaim_writes_the_layouts_own_file() {
    let fake = Arc::new(FakeCgroupFs::v2());
    let cg = tree(&fake).create("f/zygote", &limits()).unwrap();
    let dir = fake.base().join("cgroup/fnhost/f/zygote");
    std::fs::write(dir.join("memory.current"), "8192\n").unwrap();
    std::fs::write(dir.join("memory.reclaim"), "").unwrap();
    cg.reclaim().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("memory.reclaim")).unwrap(),
        "8192"
    );

    let fake = Arc::new(FakeCgroupFs::hybrid());
    let cg = tree(&fake).create("f/zygote", &limits()).unwrap();
    let file = fake
        .base()
        .join("memory/fnhost/f/zygote/memory.force_empty");
    std::fs::write(&file, "").unwrap();
    cg.reclaim().unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "0");
}

#[test]
fn v2_write_that_does_not_stick_is_caught() {
    let fake = Arc::new(FakeCgroupFs::v2());
    let cg = tree(&fake).create("f/s1", &limits()).unwrap();
    let memory_max = fake.base().join("cgroup/fnhost/f/s1/memory.max");
    std::fs::remove_file(&memory_max).unwrap();
    std::os::unix::fs::symlink("/dev/null", &memory_max).unwrap();
    match cg.set_limits(&limits()).unwrap_err() {
        CgroupError::VerifyLimit { path, expected, .. } => {
            assert_eq!(path, memory_max);
            assert_eq!(expected, "67108864");
        }
        other => panic!("expected VerifyLimit, got {other}"),
    }
}

#[test]
fn v2_missing_control_file_fails_loudly() {
    let fake = Arc::new(FakeCgroupFs::v2());
    let cg = tree(&fake).create("f/s1", &limits()).unwrap();
    std::fs::remove_file(fake.base().join("cgroup/fnhost/f/s1/pids.max")).unwrap();
    let err = cg.set_limits(&limits()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CgroupError::WriteLimit { .. }), "{msg}");
    assert!(msg.contains("pids.max") && msg.contains("\"32\""), "{msg}");
}

#[test]
fn v1_write_that_does_not_stick_is_caught_through_the_tree() {
    let fake = Arc::new(FakeCgroupFs::hybrid());
    let cg = tree(&fake).create("f/s1", &limits()).unwrap();
    let limit = fake.base().join("memory/fnhost/f/s1/memory.limit_in_bytes");
    std::fs::remove_file(&limit).unwrap();
    std::os::unix::fs::symlink("/dev/null", &limit).unwrap();
    let err = cg.set_limits(&limits()).unwrap_err();
    assert!(
        matches!(&err, CgroupError::VerifyLimit { path, .. } if *path == limit),
        "{err}"
    );
}

fn stale_cleanup(fake: Arc<FakeCgroupFs>) {
    {
        let t = tree(&fake);
        let s1 = t.create("hello/s1", &limits()).unwrap();
        let zygote = t.create("hello/zygote", &limits()).unwrap();
        t.create("world/s1", &limits()).unwrap();
        s1.attach(7001).unwrap();
        zygote.attach(7002).unwrap();
    }
    // A supervisor cgroup whose name starts like ours, with a process.
    for m in fake.mounts() {
        fake.mkdir(&m.join("fnhost-other")).unwrap();
        std::fs::write(m.join("fnhost-other/cgroup.procs"), "8000\n").unwrap();
    }
    let before = outside_root(&fake);

    // A new run.
    let report = tree(&fake).remove_stale().unwrap();
    assert_eq!(
        report,
        StaleReport {
            cgroups_removed: 5,
            processes_killed: 2
        }
    );
    let mut killed = fake.killed.lock().unwrap().clone();
    killed.sort();
    killed.dedup();
    assert_eq!(killed, vec![7001, 7002]);
    assert!(!killed.contains(&SUPERVISOR_PID) && !killed.contains(&8000));
    for m in fake.mounts() {
        let root = m.join(ROOT);
        assert!(root.is_dir());
        assert!(std::fs::read_dir(&root)
            .unwrap()
            .all(|e| !e.unwrap().path().is_dir()));
    }
    assert_eq!(outside_root(&fake), before, "supervisor cgroups untouched");

    // Nothing left: a second pass is a no-op.
    assert_eq!(tree(&fake).remove_stale().unwrap(), StaleReport::default());

    // Shutdown removes the root as well.
    tree(&fake)
        .create("hello/s2", &limits())
        .unwrap()
        .attach(7003)
        .unwrap();
    let report = tree(&fake).remove_all().unwrap();
    assert_eq!(
        report,
        StaleReport {
            cgroups_removed: 3,
            processes_killed: 1
        }
    );
    for m in fake.mounts() {
        assert!(!m.join(ROOT).exists());
    }
    assert_eq!(outside_root(&fake), before);
    assert_eq!(tree(&fake).remove_all().unwrap(), StaleReport::default());
}

#[test]
fn stale_cleanup_v2() {
    stale_cleanup(Arc::new(FakeCgroupFs::v2()));
}

#[test]
fn stale_cleanup_hybrid() {
    stale_cleanup(Arc::new(FakeCgroupFs::hybrid()));
}

#[test]
fn stale_cleanup_v1() {
    stale_cleanup(Arc::new(FakeCgroupFs::v1()));
}

#[test]
fn refuses_to_kill_its_own_process() {
    let fake = Arc::new(FakeCgroupFs::v2());
    let me = std::process::id() as i32;
    tree(&fake)
        .create("f/s1", &limits())
        .unwrap()
        .attach(me)
        .unwrap();
    let err = tree(&fake).remove_stale().unwrap_err();
    assert!(matches!(err, CgroupError::SelfInside { .. }), "{err}");
    assert!(fake.killed.lock().unwrap().is_empty());
}

#[test]
fn names_that_could_escape_the_root_are_rejected() {
    let fake = Arc::new(FakeCgroupFs::v2());
    let before = outside_root(&fake);
    for rel in [
        "",
        "/abs",
        "a//b",
        "a/",
        "../system.slice",
        "f/./s1",
        "f/..",
    ] {
        let err = tree(&fake).create(rel, &limits()).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{rel:?}: {err}"
        );
    }
    for root in ["", ".", "..", "/", "a/../.."] {
        let fs: Arc<dyn CgroupFs> = fake.clone();
        let t = CgroupTree::with_fs(fake.layout(), root, fs);
        assert!(
            matches!(t.remove_all(), Err(CgroupError::InvalidName { .. })),
            "{root:?}"
        );
        assert!(matches!(
            t.create("f/s1", &limits()),
            Err(CgroupError::InvalidName { .. })
        ));
    }
    assert_eq!(outside_root(&fake), before);
    assert!(fake.killed.lock().unwrap().is_empty());
}

#[test]
fn nested_root_needs_an_existing_parent() {
    let fake = Arc::new(FakeCgroupFs::v2());
    let fs: Arc<dyn CgroupFs> = fake.clone();
    let t = CgroupTree::with_fs(fake.layout(), "fnhost.slice/fnhost", fs);
    let err = t.create("f/s1", &limits()).unwrap_err();
    assert!(matches!(err, CgroupError::Create { .. }), "{err}");
    assert!(!fake.base().join("cgroup/fnhost.slice").exists());
}

#[test]
fn a_function_leaves_nothing_once_its_cgroups_are_removed() {
    let fake = Arc::new(FakeCgroupFs::hybrid());
    let tree = tree(&fake);
    let zygote = tree.create(&names::zygote("hello"), &limits()).unwrap();
    let slot = tree.create(&names::slot("hello", 1), &limits()).unwrap();
    for m in fake.mounts() {
        // One level: no directory per function.
        assert!(m.join("fnhost/hello.zygote").is_dir(), "{}", m.display());
        assert!(m.join("fnhost/hello.s1").is_dir(), "{}", m.display());
        assert!(!m.join("fnhost/hello").exists(), "{}", m.display());
    }
    zygote.remove().unwrap();
    slot.remove().unwrap();
    for m in fake.mounts() {
        let left: Vec<_> = std::fs::read_dir(m.join("fnhost"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{}: {left:?}", m.display());
    }
}
