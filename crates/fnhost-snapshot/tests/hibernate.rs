//! End-to-end test of hibernation on a real kernel (needs
//! `userfaultfd(2)` with `UFFD_USER_MODE_ONLY`, which needs no privilege;
//! skipped with a reason otherwise, a failure under `CI=true`).
//!
//! No test harness: `main` runs the scenarios one after another in a single
//! thread, and re-executes this binary as the hibernating child (env
//! `FNHOST_SNAPSHOT_TEST_CHILD_FD` set to its socket). Parent and child talk
//! over a `SOCK_SEQPACKET` pair: one message per step, first byte a tag.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use fnhost_sandbox::sys::bare::{close_bare, recv_bare, send_bare};
use fnhost_sandbox::sys::uffd;
use fnhost_snapshot::{
    hibernate, prepare, wake, Region, RestoreError, Sleeper, Snapshot, WakeStats, WorkingSet,
};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::sys::time::{TimeVal, TimeValLike};

const CHILD_ENV: &str = "FNHOST_SNAPSHOT_TEST_CHILD_FD";

/// Parent → child: hibernate (with the snapshot fd; body [`PROBE`] to try a
/// kernel access to a dropped page while hibernated), go, exit.
const HIBERNATE: u8 = b'H';
const PROBE: &[u8] = b"probe";
const GO: u8 = b'G';
/// Like GO, but the child maps its snapshot back itself (the mapped wake-up).
const GO_REMAP: u8 = b'M';
const EXIT: u8 = b'X';
/// Child → parent: prepared (uffd + regions), window done (body: the probe's
/// errno and address, if asked), verified, error.
const PREPARED: u8 = b'P';
const DONE: u8 = b'D';
const VERIFIED: u8 = b'V';
const FAILED: u8 = b'E';

type Scenario = (&'static str, fn(&Path));

fn main() -> ExitCode {
    if let Ok(fd) = std::env::var(CHILD_ENV) {
        child::run(fd.parse().expect("child fd number"));
    }
    // The shared gate: prints why and skips, or panics under CI=true.
    if !fnhost_testkit::require("hibernate", skip_reason()) {
        return ExitCode::SUCCESS;
    }

    let scenarios: [Scenario; 7] = [
        (
            "mapped_wakes_keep_memory_intact_after_the_cache_is_dropped",
            parent::mapped_wakes,
        ),
        (
            "cycles_with_and_without_prefetch",
            parent::with_and_without_prefetch,
        ),
        ("five_cycles_leave_nothing_behind", parent::five_cycles),
        (
            "truncated_snapshot_fails_the_wake",
            parent::truncated_snapshot,
        ),
        (
            "on_demand_faults_feed_the_prefetch",
            parent::on_demand_faults,
        ),
        (
            "faults_while_asleep_are_served_from_the_file",
            parent::served_while_asleep,
        ),
        (
            "kernel_access_to_a_dropped_page_fails_with_efault",
            parent::kernel_access_fails,
        ),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        let dir = tempfile::tempdir().expect("tempdir");
        println!("test {name} ...");
        match panic::catch_unwind(AssertUnwindSafe(|| scenario(dir.path()))) {
            Ok(()) => {
                println!("test {name} ... ok");
                passed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("hibernate: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn skip_reason() -> Option<String> {
    uffd::new_user_mode_only().err().map(|e| {
        format!(
            "userfaultfd(UFFD_USER_MODE_ONLY) failed: {e} \
             (kernel without CONFIG_USERFAULTFD, or older than 5.11?)"
        )
    })
}

/// One SEQPACKET message with optional fds.
fn send(sock: BorrowedFd<'_>, tag: u8, body: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut msg = vec![tag];
    msg.extend_from_slice(body);
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsgs = if raw.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(&msg)],
        &cmsgs,
        MsgFlags::empty(),
        None,
    )
    .expect("sendmsg");
}

/// The next message as (tag, body, fds); tag 0 on EOF.
fn recv(sock: BorrowedFd<'_>) -> (u8, Vec<u8>, Vec<OwnedFd>) {
    let mut buf = vec![0u8; 1 << 16];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .expect("recvmsg (timed out?)");
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: SCM_RIGHTS installed this descriptor for us alone.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let len = msg.bytes;
    if len == 0 {
        return (0, Vec::new(), fds);
    }
    (buf[0], buf[1..len].to_vec(), fds)
}

mod child {
    use super::*;

    const BIG_WORDS: usize = 4 << 20; // 32 MiB
    const ZEROS: usize = 4 << 20;
    const FLIPPING: usize = 2 << 20;
    const BOXES: usize = 20_000;

    /// Distinctive memory: a big patterned buffer, untouched zeros, a buffer
    /// that is zero or patterned depending on the seed, many small boxes.
    #[allow(clippy::vec_box)] // many small heap allocations, on purpose
    struct Memory {
        seed: u64,
        big: Vec<u64>,
        zeros: Vec<u8>,
        flipping: Vec<u8>,
        boxes: Vec<Box<[u64; 4]>>,
    }

    fn word(i: usize, seed: u64) -> u64 {
        (i as u64 ^ (seed << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
    }

    impl Memory {
        fn new() -> Memory {
            let mut mem = Memory {
                seed: 0,
                big: vec![0; BIG_WORDS],
                zeros: vec![0; ZEROS],
                flipping: vec![1; FLIPPING],
                boxes: Vec::new(),
            };
            mem.fill(1);
            mem
        }

        fn fill(&mut self, seed: u64) {
            self.seed = seed;
            for (i, w) in self.big.iter_mut().enumerate() {
                *w = word(i, seed);
            }
            let flip = if seed & 1 == 0 { seed as u8 } else { 0 };
            self.flipping.fill(flip);
            self.boxes = (0..BOXES)
                .map(|i| Box::new([word(i, seed), i as u64, seed, !word(i, seed)]))
                .collect();
        }

        /// Checks everything, last page first (the daemon copies in address
        /// order, so during an early wake this faults on pages not yet
        /// copied): first a saved page, then a zero page, then the rest.
        fn verify(&self) -> Result<(), String> {
            let seed = self.seed;
            let last = BIG_WORDS - 1;
            if self.big[last] != word(last, seed) || self.zeros[ZEROS - 1] != 0 {
                return Err("last pages differ".into());
            }
            for i in (0..self.big.len()).rev() {
                if self.big[i] != word(i, seed) {
                    return Err(format!("big[{i}] = {:#x}", self.big[i]));
                }
            }
            if let Some(i) = self.zeros.iter().rposition(|&b| b != 0) {
                return Err(format!("zeros[{i}] = {}", self.zeros[i]));
            }
            let flip = if seed & 1 == 0 { seed as u8 } else { 0 };
            if let Some(i) = self.flipping.iter().rposition(|&b| b != flip) {
                return Err(format!("flipping[{i}] = {}", self.flipping[i]));
            }
            for (i, b) in self.boxes.iter().enumerate().rev() {
                if **b != [word(i, seed), i as u64, seed, !word(i, seed)] {
                    return Err(format!("box {i} = {b:?}"));
                }
            }
            Ok(())
        }
    }

    /// The snapshot this child last mapped back (for the next `prepare`).
    static WOKEN_FROM: std::sync::Mutex<Option<fnhost_snapshot::FileId>> =
        std::sync::Mutex::new(None);

    /// Forks (as a zygote does for a clone) and checks the memory in the
    /// child: "ok", or why not.
    fn verify_in_a_fork(mem: &Memory) -> String {
        // SAFETY: this process is single-threaded; the child only reads
        // memory and exits.
        match unsafe { libc::fork() } {
            0 => {
                let code = i32::from(mem.verify().is_err());
                // SAFETY: _exit in the forked child.
                unsafe { libc::_exit(code) }
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waiting for the child forked above.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                    "ok".to_owned()
                } else {
                    format!("bad(status {status})")
                }
            }
            _ => format!("failed({})", std::io::Error::last_os_error()),
        }
    }

    pub fn run(fd: RawFd) -> ! {
        // SAFETY: the parent left this descriptor open for us; nothing else
        // in this process owns it.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut mem = Memory::new();
        loop {
            let (tag, body, fds) = recv(sock.as_fd());
            match tag {
                HIBERNATE => cycle(sock.as_fd(), fds, &mut mem, body == PROBE),
                EXIT | 0 => std::process::exit(0),
                other => panic!("child: unexpected message {other}"),
            }
        }
    }

    /// While hibernated (bare syscalls, stack only): `read()` one byte into
    /// `dst`, a dropped page. Returns the errno (0 if the read succeeded).
    fn kernel_read_into(pair: &(UnixStream, UnixStream), dst: *mut u8) -> i32 {
        let byte = [b'k'];
        // SAFETY: raw write(2) from a stack buffer through libc's bare
        // syscall stub, which touches only the stack and errno.
        unsafe { libc::syscall(libc::SYS_write, pair.0.as_raw_fd(), byte.as_ptr(), 1) };
        // SAFETY: as above; `dst` is mapped and writable (only dropped).
        let n = unsafe { libc::syscall(libc::SYS_read, pair.1.as_raw_fd(), dst, 1) };
        if n < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    }

    fn cycle(sock: BorrowedFd<'_>, fds: Vec<OwnedFd>, mem: &mut Memory, probe: bool) {
        let [snapshot]: [OwnedFd; 1] = fds.try_into().expect("one snapshot fd");
        // Set up before the window: nothing may allocate after it.
        let probe = probe.then(|| UnixStream::pair().expect("probe socketpair"));
        let target = mem.big.as_mut_ptr().cast::<u8>();
        let previous = *WOKEN_FROM.lock().expect("woken-from lock");
        let prepared = match prepare(previous.as_slice()) {
            Ok(p) => p,
            Err(err) => return send(sock, FAILED, err.to_string().as_bytes(), &[]),
        };
        let table = prepared.table();
        let regions = serde_json::to_vec(prepared.regions()).expect("regions json");
        send(sock, PREPARED, &regions, &[prepared.uffd()]);
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&nix::sys::signal::SigSet::all()),
            None,
        )
        .expect("block signals");

        // From here until the wake: stack only, raw syscalls only.
        let started = Instant::now();
        let result = hibernate(prepared, snapshot.as_fd());
        let window = started.elapsed();
        // The zygote's own uffd copy stays open until it is awake.
        let (stats, uffd) = match result {
            Ok(slept) => (slept.stats, slept.uffd),
            Err(err) => return send(sock, FAILED, err.to_string().as_bytes(), &[]),
        };
        // The report, built on the stack: [DONE, errno (4 bytes), address (8)].
        let mut done = [0u8; 13];
        done[0] = DONE;
        let len = match &probe {
            None => 1,
            Some(pair) => {
                let errno = kernel_read_into(pair, target);
                done[1..5].copy_from_slice(&errno.to_le_bytes());
                done[5..13].copy_from_slice(&(target as u64).to_le_bytes());
                13
            }
        };
        let mut go = [0u8; 1];
        if send_bare(sock, &done[..len]).is_err() || !matches!(recv_bare(sock, &mut go), Ok(1)) {
            // SAFETY: _exit is async-signal-safe and touches no memory.
            unsafe { libc::_exit(3) };
        }
        let mut forked = String::new();
        if go[0] == GO_REMAP {
            if fnhost_snapshot::remap(&table, snapshot.as_fd()).is_err() {
                // SAFETY: as above; part of the memory may be missing.
                unsafe { libc::_exit(4) };
            }
            drop(uffd);
            *WOKEN_FROM.lock().expect("woken-from lock") =
                Some(fnhost_snapshot::FileId::of(snapshot.as_fd()).expect("fstat snapshot"));
            forked = format!(" fork={}", verify_in_a_fork(mem));
        } else {
            // Copied back by the parent, which closed its copy: closing the
            // last one unregisters every range, so pages never saved (zero)
            // read as zeros rather than waiting for a fault server. Bare:
            // libc's close touches errno, which may be such a page.
            close_bare(uffd);
        }

        let report = match mem.verify() {
            Ok(()) => format!(
                "ok window_us={} pages_written={} bytes_dropped={} not_dropped={}{forked}",
                window.as_micros(),
                stats.pages_written,
                stats.bytes_dropped,
                stats.regions_not_dropped
            ),
            Err(bad) => format!("bad: {bad}"),
        };
        drop(snapshot);
        mem.fill(mem.seed + 1);
        send(sock, VERIFIED, report.as_bytes(), &[]);
    }
}

mod parent {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(30);

    /// A spawned child; killed and reaped on drop, even while unwinding.
    struct Child {
        proc: std::process::Child,
        sock: OwnedFd,
        cycles: u32,
    }

    impl Child {
        fn spawn() -> Child {
            let (sock, theirs) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .expect("socketpair");
            // This process is single-threaded: no other spawn can inherit it.
            nix::fcntl::fcntl(
                theirs.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .expect("clear cloexec");
            setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::seconds(60)).expect("timeout");
            let proc = Command::new(std::env::current_exe().expect("current exe"))
                .env(CHILD_ENV, theirs.as_raw_fd().to_string())
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn child");
            drop(theirs);
            Child {
                proc,
                sock,
                cycles: 0,
            }
        }

        fn pid(&self) -> u32 {
            self.proc.id()
        }

        fn send(&self, tag: u8, fds: &[BorrowedFd<'_>]) {
            send(self.sock.as_fd(), tag, &[], fds);
        }

        fn expect(&self, want: u8) -> (Vec<u8>, Vec<OwnedFd>) {
            let (tag, body, fds) = recv(self.sock.as_fd());
            assert_eq!(
                tag as char,
                want as char,
                "child said: {}",
                String::from_utf8_lossy(&body)
            );
            (body, fds)
        }

        fn exit(mut self) {
            self.send(EXIT, &[]);
            let status = self.proc.wait().expect("wait child");
            assert!(status.success(), "child exited with {status}");
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.proc.kill();
            let _ = self.proc.wait();
        }
    }

    fn anon_rss_kib(pid: u32) -> u64 {
        let text =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
        text.lines()
            .find_map(|l| l.strip_prefix("Anonymous:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("Anonymous: line")
    }

    /// Wait until the child sleeps in a userfault, so a wake has a fault to serve.
    fn wait_for_fault(pid: u32) {
        let until = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
            != "handle_userfault"
        {
            assert!(Instant::now() < until, "child never faulted");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .expect("list fds")
            .count()
    }

    /// A hibernated child, sealed and ready to wake.
    struct Hibernated {
        sleeper: Sleeper,
        path: PathBuf,
        rss_before: u64,
        /// The body of its "window done" report.
        done: Vec<u8>,
    }

    fn hibernate_child(child: &mut Child, dir: &Path) -> Hibernated {
        hibernate_child_with(child, dir, b"")
    }

    fn hibernate_child_with(child: &mut Child, dir: &Path, body: &[u8]) -> Hibernated {
        child.cycles += 1;
        let path = dir.join(format!("zygote-{}-{}.snap", child.pid(), child.cycles));
        let snapshot = Snapshot::create(path.clone()).expect("create snapshot");
        send(child.sock.as_fd(), HIBERNATE, body, &[snapshot.file()]);

        let (body, mut fds) = child.expect(PREPARED);
        let regions: Vec<Region> = serde_json::from_slice(&body).expect("regions");
        let uffd = fds.pop().expect("uffd fd");
        let rss_before = anon_rss_kib(child.pid());
        let mut sleeper = Sleeper::new(uffd, snapshot);
        let started = Instant::now();
        let (done, _) = child.expect(DONE);
        let window = started.elapsed();

        let started = Instant::now();
        let seal = sleeper.snapshot.seal(regions, false).expect("seal");
        let seal_time = started.elapsed();
        let rss_after = anon_rss_kib(child.pid());
        println!(
            "  hibernate: window {window:?} (as seen by the parent), seal {seal_time:?}, \
             data {} KiB of file {} KiB, anon RSS {rss_before} KiB -> {rss_after} KiB",
            seal.data_bytes >> 10,
            seal.file_bytes >> 10
        );
        assert!(
            seal.data_bytes >= 32 << 20,
            "only {} data bytes",
            seal.data_bytes
        );
        assert!(
            rss_after * 4 < rss_before,
            "anon RSS {rss_before} KiB -> {rss_after} KiB"
        );
        Hibernated {
            sleeper,
            path,
            rss_before,
            done,
        }
    }

    /// Wake the child, release it and check its memory; `go_early` lets it
    /// run (and fault) while the wake is still copying.
    fn wake_child(
        child: &Child,
        h: Hibernated,
        ws: &mut WorkingSet,
        prefetch: bool,
        go_early: bool,
    ) -> WakeStats {
        if go_early {
            child.send(GO, &[]);
            wait_for_fault(child.pid());
        }
        let stats = wake(&h.sleeper, ws, prefetch, Instant::now() + DEADLINE).expect("wake");
        drop(h.sleeper);
        assert!(
            !h.path.exists(),
            "snapshot {} left behind",
            h.path.display()
        );
        if !go_early {
            child.send(GO, &[]);
        }
        let (report, _) = child.expect(VERIFIED);
        let report = String::from_utf8_lossy(&report).into_owned();
        assert!(report.starts_with("ok"), "child memory: {report}");
        let rss = anon_rss_kib(child.pid());
        println!(
            "  wake (prefetch {prefetch}, early go {go_early}): {:?}, copied {} pages, prefetched {}, \
             faults {} (zero {}), anon RSS back to {rss} KiB (was {} KiB); child: {report}",
            stats.duration, stats.copied_pages, stats.prefetched_pages, stats.faults, stats.zero_faults, h.rss_before
        );
        stats
    }

    pub fn with_and_without_prefetch(dir: &Path) {
        let mut child = Child::spawn();
        let mut ws = WorkingSet::default();
        let h = hibernate_child(&mut child, dir);
        let plain = wake_child(&child, h, &mut ws, false, false);
        assert_eq!(plain.prefetched_pages, 0);
        assert!(plain.copied_pages >= (32 << 20) / fnhost_snapshot::page_size());
        let h = hibernate_child(&mut child, dir);
        wake_child(&child, h, &mut ws, true, false);
        child.exit();
    }

    /// The mapped wake-up: the child maps its snapshot back itself, after
    /// the snapshot's page cache was dropped, checks its memory and that of
    /// a fork, then writes new contents (copy-on-write into the mapping);
    /// the next cycles hibernate memory that is a mapping of the previous
    /// snapshot.
    pub fn mapped_wakes(dir: &Path) {
        let mut child = Child::spawn();
        for cycle in 0..3 {
            let h = hibernate_child(&mut child, dir);
            // Sized as the daemon does: the layout and a sparse tail.
            let layout = fnhost_snapshot::asleep::layout_len(h.sleeper.snapshot.regions());
            nix::unistd::ftruncate(
                h.sleeper.snapshot.file(),
                (layout + fnhost_snapshot::GROWTH_TAIL) as i64,
            )
            .expect("size snapshot");
            fnhost_sandbox::sys::fd::fadvise_dontneed(h.sleeper.snapshot.file())
                .expect("drop page cache");
            child.send(GO_REMAP, &[]);
            let (report, _) = child.expect(VERIFIED);
            let report = String::from_utf8_lossy(&report).into_owned();
            assert!(
                report.starts_with("ok"),
                "cycle {cycle}: child memory: {report}"
            );
            assert!(
                report.ends_with("fork=ok"),
                "cycle {cycle}: forked child: {report}"
            );
            // Every region is a file mapping now: closing the uffd and
            // unlinking the file change nothing for the child.
            drop(h.sleeper);
            assert!(!h.path.exists());
            println!("  mapped wake {cycle}: child: {report}");
        }
        child.exit();
    }

    pub fn five_cycles(dir: &Path) {
        let fds_before = open_fds();
        let mut child = Child::spawn();
        let mut ws = WorkingSet::default();
        for i in 0..5 {
            let h = hibernate_child(&mut child, dir);
            wake_child(&child, h, &mut ws, i % 2 == 1, false);
        }
        child.exit();
        assert_eq!(open_fds(), fds_before, "fds leaked");
        let left: Vec<_> = std::fs::read_dir(dir).expect("list dir").collect();
        assert!(left.is_empty(), "files left: {left:?}");
    }

    pub fn truncated_snapshot(dir: &Path) {
        let mut child = Child::spawn();
        let h = hibernate_child(&mut child, dir);
        nix::unistd::ftruncate(h.sleeper.snapshot.file(), 0).expect("truncate");
        let started = Instant::now();
        let result = wake(
            &h.sleeper,
            &mut WorkingSet::default(),
            false,
            Instant::now() + DEADLINE,
        );
        println!(
            "  wake of a truncated snapshot after {:?}: {result:?}",
            started.elapsed()
        );
        assert!(
            matches!(result, Err(RestoreError::SnapshotUnreadable { .. })),
            "{result:?}"
        );
        child.proc.kill().expect("kill child");
        let status = child.proc.wait().expect("reap child");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        // With the process gone every copy fails with ESRCH.
        let result = wake(
            &h.sleeper,
            &mut WorkingSet::default(),
            false,
            Instant::now() + DEADLINE,
        );
        assert!(
            matches!(result, Err(RestoreError::ProcessGone)),
            "{result:?}"
        );
        drop(h.sleeper);
        assert!(!h.path.exists());
    }

    /// Without any wake-up: every page the child touches is served by
    /// `asleep::serve_pending` from the snapshot file (as the daemon does
    /// while a zygote sleeps), and its memory checks out.
    pub fn served_while_asleep(dir: &Path) {
        let mut child = Child::spawn();
        let h = hibernate_child(&mut child, dir);
        let file =
            std::fs::File::from(h.sleeper.snapshot.file().try_clone_to_owned().expect("dup"));
        let regions = h.sleeper.snapshot.regions().to_vec();
        file.set_len(fnhost_snapshot::asleep::layout_len(&regions))
            .expect("size");
        let stop = std::sync::atomic::AtomicBool::new(false);
        let served = std::thread::scope(|scope| {
            let server = scope.spawn(|| {
                let mut page = Vec::new();
                let mut served = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    served += fnhost_snapshot::asleep::serve_pending(
                        h.sleeper.uffd.as_fd(),
                        &file,
                        &regions,
                        &mut page,
                    )
                    .expect("serve a fault");
                    std::thread::sleep(Duration::from_micros(50));
                }
                served
            });
            child.send(GO, &[]);
            let (report, _) = child.expect(VERIFIED);
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let report = String::from_utf8_lossy(&report).into_owned();
            assert!(report.starts_with("ok"), "child memory: {report}");
            server.join().expect("server thread")
        });
        println!("  served {served} faults while asleep");
        assert!(served > 1000, "only {served} faults served");
        drop(h.sleeper);
        child.exit();
    }

    pub fn on_demand_faults(dir: &Path) {
        let mut child = Child::spawn();
        let mut ws = WorkingSet::default();
        let h = hibernate_child(&mut child, dir);
        let early = wake_child(&child, h, &mut ws, false, true);
        // The child's first two touches: a saved page, then a zero page.
        assert!(early.faults >= 2, "faults not served on demand: {early:?}");
        assert!(early.zero_faults >= 1, "no zero page served: {early:?}");
        assert!(!ws.is_empty());
        println!("  working set: {} pages", ws.len());
        let h = hibernate_child(&mut child, dir);
        let again = wake_child(&child, h, &mut ws, true, false);
        assert!(again.prefetched_pages > 0, "nothing prefetched: {again:?}");
        child.exit();
    }

    /// The uffd a hibernating process creates is user-mode-only: while it
    /// sleeps, a kernel access to one of its dropped pages (its own
    /// `read()` into it, another process reading `/proc/<pid>/mem`) fails
    /// with an error instead of waiting for the page, and the page keeps
    /// its saved contents. (A uffd that handled kernel faults would leave
    /// the `read()` waiting: the parent's receive would time out.)
    pub fn kernel_access_fails(dir: &Path) {
        let mut child = Child::spawn();
        let mut ws = WorkingSet::default();
        let h = hibernate_child_with(&mut child, dir, PROBE);
        assert_eq!(h.done.len(), 12, "no probe report: {:?}", h.done);
        let errno = i32::from_le_bytes(h.done[..4].try_into().expect("4 bytes"));
        let addr = u64::from_le_bytes(h.done[4..].try_into().expect("8 bytes"));
        println!("  read() into the dropped page at {addr:#x}: errno {errno}");
        assert_eq!(errno, libc::EFAULT, "read() into a dropped page");
        let mem = std::fs::File::open(format!("/proc/{}/mem", child.pid())).expect("open mem");
        let mut word = [0u8; 8];
        let remote = std::os::unix::fs::FileExt::read_at(&mem, &mut word, addr);
        println!("  /proc/<pid>/mem read of it: {remote:?}");
        assert!(remote.is_err(), "read a dropped page remotely: {word:?}");
        // The wake restores the page as saved; the child checks it.
        wake_child(&child, h, &mut ws, false, false);
        child.exit();
    }
}
