//! The probes of the primitives worker, each returning one sample per run
//! in microseconds. They fork, so they run only in the single-threaded
//! worker; every process, mount and cgroup they create is gone when they
//! return (the mounts live in the worker's private mount namespace).

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fnhost_sandbox::cgroup::{CgroupLayout, CgroupLimits, CgroupTree};
use fnhost_sandbox::sys::{self, CloneSpec, Forked};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};

/// The unprivileged identity of the clone probe (`nobody`).
const NOBODY: u32 = 65534;

/// Memory limit of the attach probe's cgroups: fnhost's default function.
const PROBE_MEMORY_BYTES: u64 = 128 << 20;

fn micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Forks a child with `clone3(flags)` that exits at once, and reaps it:
/// the time from the call to the reaped exit.
fn clone_and_reap(flags: u64) -> std::io::Result<u64> {
    let started = Instant::now();
    // SAFETY: the worker (and the unprivileged child calling this) is
    // single-threaded; the child only calls _exit.
    match unsafe {
        sys::clone3(CloneSpec {
            flags,
            cgroup: None,
            exit_signal: libc::SIGCHLD,
        })
    }? {
        Forked::Child => sys::exit_immediately(0),
        Forked::Parent { pidfd, .. } => {
            sys::waitid_pidfd(pidfd.as_fd(), false)?;
            Ok(micros(started))
        }
    }
}

/// `clone3` with `flags` + exit, `runs` times, from a child that has
/// dropped to `nobody` first: the creation of a user namespace by an
/// unprivileged process is what fnhost's zygote pays per clone.
pub fn unprivileged_clone(flags: u64, runs: u64) -> Result<Vec<u64>> {
    let (mut ours, theirs) = UnixStream::pair().context("creating a socket pair")?;
    // SAFETY: the worker is single-threaded, so the child may allocate; it
    // ends in _exit and never returns into the caller.
    match unsafe {
        sys::clone3(CloneSpec {
            flags: 0,
            cgroup: None,
            exit_signal: libc::SIGCHLD,
        })
    }
    .context("forking the unprivileged clone prober")?
    {
        Forked::Child => {
            drop(ours);
            let result = std::panic::catch_unwind(|| clone_as_nobody(flags, runs))
                .unwrap_or_else(|_| Err("the prober panicked".to_owned()));
            let mut theirs = theirs;
            let code = match serde_json::to_vec(&result) {
                Ok(bytes) => i32::from(theirs.write_all(&bytes).is_err()),
                Err(_) => 1,
            };
            sys::exit_immediately(code)
        }
        Forked::Parent { pidfd, pid } => {
            drop(theirs);
            let mut bytes = Vec::new();
            let read = ours.read_to_end(&mut bytes);
            let status = sys::waitid_pidfd(pidfd.as_fd(), false)
                .with_context(|| format!("reaping the clone prober (pid {pid})"))?;
            read.context("reading the clone prober's samples")?;
            if bytes.is_empty() {
                bail!("the clone prober (pid {pid}) sent nothing ({status:?})");
            }
            let result: std::result::Result<Vec<u64>, String> =
                serde_json::from_slice(&bytes).context("parsing the clone prober's samples")?;
            result.map_err(|e| anyhow::anyhow!("{e}"))
        }
    }
}

/// In the forked prober: become `nobody`, then clone and reap.
fn clone_as_nobody(flags: u64, runs: u64) -> std::result::Result<Vec<u64>, String> {
    setgroups(&[]).map_err(|e| format!("setgroups([]): {e}"))?;
    let gid = Gid::from_raw(NOBODY);
    setresgid(gid, gid, gid).map_err(|e| format!("setresgid({NOBODY}): {e}"))?;
    let uid = Uid::from_raw(NOBODY);
    setresuid(uid, uid, uid).map_err(|e| format!("setresuid({NOBODY}): {e}"))?;
    (0..runs)
        .map(|_| {
            clone_and_reap(flags).map_err(|e| {
                format!(
                    "clone3({flags:#x}) as uid {NOBODY}: {e} (are unprivileged user \
                     namespaces allowed? see /proc/sys/user/max_user_namespaces)"
                )
            })
        })
        .collect()
}

/// fork + exit of this process after giving it `heap_kib` of touched
/// anonymous memory (4 KiB pages; no huge-page advice).
pub fn fork_exit(heap_kib: u64, runs: u64) -> Result<Vec<u64>> {
    let len = usize::try_from(heap_kib * 1024).context("heap size")?;
    let mut heap = vec![0u8; len];
    for byte in heap.iter_mut().step_by(4096) {
        *byte = 1;
    }
    let heap = std::hint::black_box(heap);
    let samples = (0..runs)
        .map(|_| clone_and_reap(0).context("fork + exit"))
        .collect();
    drop(heap);
    samples
}

/// Moves the worker into a mount namespace of its own, with every mount
/// private, so that the overlay probe's mounts never reach the host.
pub fn private_mounts() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS) (needs root)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making every mount private")
}

/// Overlay mounts over a fresh upper and work dir on a tmpfs (as a clone's
/// root: one lower dir, a writable tmpfs upper), each unmounted again:
/// (mount samples, unmount samples).
pub fn overlay(runs: u64) -> Result<(Vec<u64>, Vec<u64>)> {
    let base = tempfile::Builder::new()
        .prefix("fnhost-bench-floor-overlay-")
        .tempdir()
        .context("creating the overlay probe's directory")?;
    let (lower, scratch, merged) = (
        base.path().join("lower"),
        base.path().join("scratch"),
        base.path().join("merged"),
    );
    for dir in [&lower, &scratch, &merged] {
        fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(lower.join("handler.py"), crate::daemon::NOOP_HANDLER)?;
    mount(
        Some("tmpfs"),
        &scratch,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("size=16m,mode=0755"),
    )
    .with_context(|| format!("mounting a tmpfs on {}", scratch.display()))?;
    let result = overlay_runs(&lower, &scratch, &merged, runs);
    let _ = umount2(&merged, MntFlags::MNT_DETACH);
    umount2(&scratch, MntFlags::MNT_DETACH)
        .with_context(|| format!("unmounting {}", scratch.display()))?;
    result
}

fn overlay_runs(
    lower: &Path,
    scratch: &Path,
    merged: &Path,
    runs: u64,
) -> Result<(Vec<u64>, Vec<u64>)> {
    let (mut mounts, mut umounts) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (upper, work) = (scratch.join(format!("u{i}")), scratch.join(format!("w{i}")));
        fs::create_dir(&upper).context("creating an upper dir")?;
        fs::create_dir(&work).context("creating a work dir")?;
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let started = Instant::now();
        mount(
            Some("overlay"),
            merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .with_context(|| format!("mounting an overlay on {} ({options})", merged.display()))?;
        mounts.push(micros(started));
        let started = Instant::now();
        umount2(merged, MntFlags::empty())
            .with_context(|| format!("unmounting the overlay on {}", merged.display()))?;
        umounts.push(micros(started));
        fs::remove_dir_all(&upper).context("removing an upper dir")?;
        fs::remove_dir_all(&work).context("removing a work dir")?;
    }
    Ok((mounts, umounts))
}

/// Removes the probe's cgroup root (and kills what is left in it) on drop.
struct TreeGuard(CgroupTree);

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if let Err(err) = self.0.remove_all() {
            eprintln!("fnhost-bench: floor: removing the test cgroups: {err}");
        }
    }
}

/// Kills and reaps the process to attach on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a sleeping process's pid to `cgroup.procs` of two test cgroups
/// under `<root>/floor/` in turn (every hierarchy of the layout, as the
/// daemon attaches a clone): back to back, then after `idle` each time.
pub fn cgroup_attach(root: &str, runs: u64, idle: Duration) -> Result<(Vec<u64>, Vec<u64>)> {
    let layout = CgroupLayout::detect().context("detecting the cgroup layout")?;
    let tree = TreeGuard(CgroupTree::new(layout, root));
    let limits = CgroupLimits::from_cpus(PROBE_MEMORY_BYTES, 0.0, CgroupLimits::UNLIMITED);
    let groups = [
        tree.0.create("floor/s0", &limits)?,
        tree.0.create("floor/s1", &limits)?,
    ];
    // Declared after the tree: dropped (killed) before the cgroups go.
    let child = ChildGuard(
        Command::new("sleep")
            .arg("3600")
            .stdin(Stdio::null())
            .spawn()
            .context("starting a process to attach (sleep)")?,
    );
    let pid = i32::try_from(child.0.id()).context("pid")?;
    let mut attach = |i: u64| -> Result<u64> {
        let group = &groups[(i % 2) as usize];
        let started = Instant::now();
        group.attach(pid)?;
        Ok(micros(started))
    };
    let busy = (0..runs).map(&mut attach).collect::<Result<Vec<_>>>()?;
    let idle = (0..runs)
        .map(|i| {
            std::thread::sleep(idle);
            attach(i)
        })
        .collect::<Result<Vec<_>>>()?;
    drop(child);
    Ok((busy, idle))
}
