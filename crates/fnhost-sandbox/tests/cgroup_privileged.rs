//! The cgroup module against the real kernel: limits land in the real
//! control files, processes are attached, killed and counted, stale trees
//! are cleaned, and the memory limit is enforced. Needs root; skips with a
//! reason otherwise (a failure under CI=true). Each test uses its own root
//! cgroup, `fnhost-test-cg-<pid>-<test>`, removed on drop even on failure.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fnhost_sandbox::cgroup::{CgroupLayout, CgroupLimits, CgroupTree, StaleReport};

const PYTHON: &str = "/usr/bin/python3";

/// Whether `test` may run: root and every path in `needs` (the shared
/// gate: a skip prints why, and fails under CI=true).
fn can_run(test: &str, needs: &[&str]) -> bool {
    fnhost_testkit::require_root(test)
        && fnhost_testkit::require(
            test,
            needs
                .iter()
                .find(|p| !Path::new(p).exists())
                .map(|p| format!("{p} is missing")),
        )
}

/// A test's cgroup root and children; removed and killed on drop.
struct Fixture {
    root: String,
    tree: CgroupTree,
    children: Vec<Child>,
}

impl Fixture {
    fn new(test: &str) -> Self {
        let root = format!("fnhost-test-cg-{}-{test}", std::process::id());
        let layout = CgroupLayout::detect().expect("detect cgroup layout");
        eprintln!("cgroup layout: {}", layout.describe());
        Fixture {
            tree: CgroupTree::new(layout, &root),
            root,
            children: Vec::new(),
        }
    }

    /// The directories of `<root>/<rel>` in each hierarchy.
    fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        let mounts = match self.tree.layout() {
            CgroupLayout::V2 { mount } => vec![mount.clone()],
            CgroupLayout::Hybrid { v1, unified } => {
                vec![
                    v1.memory.clone(),
                    v1.cpu.clone(),
                    v1.pids.clone(),
                    unified.clone(),
                ]
            }
            CgroupLayout::V1 { v1 } => vec![v1.memory.clone(), v1.cpu.clone(), v1.pids.clone()],
        };
        mounts
            .iter()
            .map(|m| m.join(&self.root).join(rel))
            .collect()
    }

    fn spawn(&mut self, cmd: &mut Command) -> u32 {
        let child = cmd.spawn().expect("spawn child");
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = self.tree.remove_all() {
            eprintln!("cleanup of cgroup root {} failed: {e}", self.root);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "child {} did not exit",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn sleep_cmd() -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("60").stdin(Stdio::null());
    cmd
}

#[test]
fn create_attach_kill_remove() {
    if !can_run("create_attach_kill_remove", &[]) {
        return;
    }
    let mut fx = Fixture::new("lifecycle");
    let limits = CgroupLimits::from_cpus(64 << 20, 0.5, 32);
    let cg = fx.tree.create("hello/s1", &limits).expect("create");
    assert_eq!(cg.name(), "hello/s1");

    // The limits are in the kernel's own files.
    let dirs = fx.dirs("hello/s1");
    match fx.tree.layout() {
        CgroupLayout::V2 { .. } => {
            assert_eq!(read(&dirs[0].join("memory.max")), "67108864");
            assert_eq!(read(&dirs[0].join("cpu.max")), "50000 100000");
            assert_eq!(read(&dirs[0].join("pids.max")), "32");
        }
        CgroupLayout::Hybrid { .. } | CgroupLayout::V1 { .. } => {
            assert_eq!(read(&dirs[0].join("memory.limit_in_bytes")), "67108864");
            let memsw = dirs[0].join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                assert_eq!(read(&memsw), "67108864");
            }
            assert_eq!(read(&dirs[1].join("cpu.cfs_period_us")), "100000");
            assert_eq!(read(&dirs[1].join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read(&dirs[2].join("pids.max")), "32");
        }
    }
    // Page rounding is accepted by the verification.
    cg.set_limits(&CgroupLimits::from_cpus(100_000_001, 1.0, 10))
        .expect("odd memory limit");

    let fd = cg.clone_into_fd().expect("open cgroup2 dir");
    assert_eq!(
        fd.is_some(),
        !matches!(fx.tree.layout(), CgroupLayout::V1 { .. })
    );
    let expected_v1_fds = match fx.tree.layout() {
        CgroupLayout::V2 { .. } => 0,
        _ => 3,
    };
    assert_eq!(
        cg.v1_procs_fds().expect("open v1 procs").len(),
        expected_v1_fds
    );

    assert!(cg.is_empty().unwrap());
    let pid = fx.spawn(&mut sleep_cmd()) as i32;
    cg.attach(pid).expect("attach");
    assert_eq!(cg.pids().unwrap(), vec![pid]);
    assert!(!cg.is_empty().unwrap());
    let own = read(Path::new(&format!("/proc/{pid}/cgroup")));
    assert!(own.contains(&format!("/{}/hello/s1", fx.root)), "{own}");
    assert_eq!(cg.oom_kills().unwrap(), 0);
    cg.memory_current().expect("memory usage readable");

    assert_eq!(cg.kill_all().expect("kill"), 1);
    let status = wait_child(&mut fx.children[0], Duration::from_secs(5));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    wait_until("the cgroup is empty", Duration::from_secs(2), || {
        cg.is_empty().unwrap()
    });

    cg.remove().expect("remove");
    for dir in &dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
        assert!(
            dir.parent().unwrap().is_dir(),
            "the function's cgroup stays"
        );
    }
}

#[test]
fn remove_stale_cleans_a_leftover_tree() {
    if !can_run("remove_stale_cleans_a_leftover_tree", &[]) {
        return;
    }
    let my_cgroups = read(Path::new("/proc/self/cgroup"));
    let mut fx = Fixture::new("stale");
    let limits = CgroupLimits::from_cpus(64 << 20, 1.0, 64);
    {
        // "A previous run": a zygote and a sandbox, one with a live process.
        let s1 = fx.tree.create("fn/s1", &limits).expect("create s1");
        fx.tree.create("fn/zygote", &limits).expect("create zygote");
        let pid = fx.spawn(&mut sleep_cmd());
        s1.attach(pid as i32).expect("attach");
    }

    let restarted = CgroupTree::new(CgroupLayout::detect().unwrap(), &fx.root);
    let report = restarted.remove_stale().expect("remove_stale");
    assert_eq!(
        report,
        StaleReport {
            cgroups_removed: 3,
            processes_killed: 1
        }
    );
    let status = wait_child(&mut fx.children[0], Duration::from_secs(5));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    for dir in fx.dirs("") {
        assert!(dir.is_dir(), "remove_stale keeps the root");
        assert!(!dir.join("fn").exists());
    }

    let report = restarted.remove_all().expect("remove_all");
    assert_eq!(
        report,
        StaleReport {
            cgroups_removed: 1,
            processes_killed: 0
        }
    );
    for dir in fx.dirs("") {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    assert_eq!(
        read(Path::new("/proc/self/cgroup")),
        my_cgroups,
        "our own cgroups untouched"
    );
}

#[test]
fn memory_limit_is_enforced() {
    if !can_run("memory_limit_is_enforced", &[PYTHON]) {
        return;
    }
    let mut fx = Fixture::new("oom");
    let cg = fx
        .tree
        .create("fn/s1", &CgroupLimits::from_cpus(64 << 20, 1.0, 64))
        .expect("create");
    assert_eq!(cg.oom_kills().unwrap(), 0);

    // The shell waits for a line so it is attached before python starts.
    let script = format!("read x; exec {PYTHON} -c 'b = bytearray(200*1024*1024); import time'");
    let pid = fx.spawn(
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    cg.attach(pid as i32).expect("attach");
    let mut stdin = fx.children[0].stdin.take().expect("piped stdin");
    stdin.write_all(b"go\n").expect("release the child");
    drop(stdin);

    let status = wait_child(&mut fx.children[0], Duration::from_secs(30));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "python should be OOM-killed: {status:?}"
    );
    assert!(cg.oom_kills().unwrap() >= 1);
    wait_until("the cgroup is empty", Duration::from_secs(2), || {
        cg.is_empty().unwrap()
    });
    cg.remove().expect("remove");
}

/// `favordynmods` on the real cgroup2 mount: set by a remount that keeps
/// the mount's other options, then found set. The mount's previous state
/// is put back afterwards, even on failure.
#[test]
fn favordynmods_is_set_by_a_remount_that_keeps_other_options() {
    use fnhost_sandbox::cgroup::favordynmods::{
        favor_dynmods, is_set, mount_options, FavorDynmods,
    };
    use fnhost_sandbox::syscall::{LinuxSyscall, Syscall};
    use nix::mount::MsFlags;

    if !can_run(
        "favordynmods_is_set_by_a_remount_that_keeps_other_options",
        &[],
    ) {
        return;
    }
    let layout = CgroupLayout::detect().expect("detect cgroup layout");
    let Some(mount) = layout.cgroup2_mount().map(Path::to_path_buf) else {
        eprintln!("no cgroup2 mount: favor_dynmods has nothing to do here");
        return;
    };
    let mountinfo = || std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let options = |text: &str| mount_options(text, &mount).expect("the cgroup2 mount's line");
    let remount_with = |opts: &[String]| {
        let data: Vec<&str> = opts
            .iter()
            .map(String::as_str)
            .filter(|o| *o != "rw" && *o != "ro" && !o.is_empty())
            .collect();
        LinuxSyscall
            .mount(
                None,
                &mount,
                Some("cgroup2"),
                MsFlags::MS_REMOUNT,
                Some(&data.join(",")),
            )
            .expect("remount cgroup2");
    };
    /// Puts the mount's options back as they were, on every exit.
    struct Restore<F: Fn()>(F);
    impl<F: Fn()> Drop for Restore<F> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    let before = options(&mountinfo());
    let _restore = Restore(|| remount_with(&before));
    let without: Vec<String> = before
        .iter()
        .filter(|o| *o != "favordynmods")
        .cloned()
        .collect();
    remount_with(&without);
    let cleared = mountinfo();
    assert!(!is_set(&cleared, &mount), "{:?}", options(&cleared));

    let done = favor_dynmods(&layout, &cleared, &LinuxSyscall).expect("remount with favordynmods");
    assert_eq!(done, FavorDynmods::Enabled);
    let after = mountinfo();
    assert!(is_set(&after, &mount), "{:?}", options(&after));
    // Every other option of the mount survived.
    let kept: Vec<String> = options(&after)
        .into_iter()
        .filter(|o| o != "favordynmods")
        .collect();
    assert_eq!(kept, without);
    assert_eq!(
        favor_dynmods(&layout, &after, &LinuxSyscall).expect("nothing to do"),
        FavorDynmods::AlreadySet
    );
}
