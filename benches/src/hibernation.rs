//! Hibernation: one daemon with four copies of the no-op Python function,
//! one zygote and one ready clone each. Three hibernate after a short idle
//! time (snapshot with prefetch, snapshot without, kernel reclaim); the
//! fourth never does and is the warm reference. With `--heavy-mib`, two
//! copies of the import-heavy function join them (one hibernating in
//! snapshot mode, one warm reference), for the same ratio at that size. Measures the memory of an
//! idle function warm and hibernated, wake-up + invoke latency over N
//! cycles (wait until the admin API reports the zygotes asleep, invoke
//! each function once), the daemon's own hibernate/wake metrics, and how
//! many functions a memory budget holds either way.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::daemon::{Daemon, FunctionPool, Hibernate};
use crate::memory::{CgroupStat, ProcMem};
use crate::stats::ScenarioSummary;

mod bench;
mod markdown;
mod sharing;

pub use markdown::markdown;
pub use sharing::Sharing;

/// The suite's functions.
pub const KEPT_FN: &str = "hib-kept";
pub const SNAP_FN: &str = "hib-snap";
pub const NOPREFETCH_FN: &str = "hib-snap-noprefetch";
pub const RECLAIM_FN: &str = "hib-reclaim";
pub const WARM_FN: &str = "hib-warm";
pub const HEAVY_SNAP_FN: &str = "hib-heavy";
pub const HEAVY_WARM_FN: &str = "hib-heavy-warm";

/// `x-fnhost-start` of a request that woke a hibernated zygote.
pub const WAKE_START: &str = "wake";
const READY_START: &str = "ready-clone";

/// Wake-up + invoke p50 and p99 the feature aims for, as multiples of the
/// warm reference's p50 (same heap size, same run).
pub const TARGET_WAKE_P50_RATIO: f64 = 3.0;
pub const TARGET_WAKE_P99_RATIO: f64 = 5.0;
/// The hibernated / warm memory ratio the feature aims for.
pub const TARGET_MEMORY_RATIO: f64 = 0.25;

/// The suite's knobs, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub cycles: u32,
    pub after_ms: u64,
    pub budget_mib: u64,
    pub request_timeout: Duration,
    /// MiB the import-heavy copies build at import; 0 leaves them out.
    pub heavy_mib: u64,
    /// Copies of the no-op whose snapshots are compared page by page; 0
    /// skips the comparison.
    pub share_copies: u32,
}

/// A function of the suite: its name, how it hibernates, how the report
/// calls that.
#[derive(Debug, Clone, Copy)]
struct Subject {
    name: &'static str,
    label: &'static str,
    hibernate: Hibernate,
    heap_mib: u64,
}

impl Subject {
    fn hibernates(&self) -> bool {
        self.hibernate.after_ms > 0
    }

    /// Ready clones its pool keeps while hibernated (reclaim keeps none).
    fn ready_asleep(&self) -> u64 {
        if self.hibernate.mode == "snapshot" {
            u64::from(self.hibernate.ready_asleep)
        } else {
            0
        }
    }

    fn expected_start(&self) -> &'static str {
        if self.hibernates() {
            WAKE_START
        } else {
            READY_START
        }
    }
}

fn subjects(after_ms: u64, heavy_mib: u64) -> Vec<Subject> {
    // `ready_asleep`: 1 keeps a ready clone on the mapped snapshot (the
    // default), 0 leaves the wake-up and the clone to the request.
    let h = |after_ms, mode, prefetch, ready_asleep| Hibernate {
        share_pages: false,
        after_ms,
        mode,
        prefetch,
        ready_asleep,
    };
    let subject = |name, label, hibernate, heap_mib| Subject {
        name,
        label,
        hibernate,
        heap_mib,
    };
    let mut out = vec![
        subject(
            KEPT_FN,
            "snapshot, ready clone kept asleep (default)",
            h(after_ms, "snapshot", false, 1),
            0,
        ),
        subject(
            SNAP_FN,
            "snapshot + prefetch, woken by the request",
            h(after_ms, "snapshot", true, 0),
            0,
        ),
        subject(
            NOPREFETCH_FN,
            "snapshot, woken by the request",
            h(after_ms, "snapshot", false, 0),
            0,
        ),
        subject(RECLAIM_FN, "reclaim", h(after_ms, "reclaim", true, 0), 0),
        subject(
            WARM_FN,
            "warm reference, never hibernates",
            h(0, "snapshot", true, 0),
            0,
        ),
    ];
    if heavy_mib > 0 {
        out.push(subject(
            HEAVY_SNAP_FN,
            "heavy, snapshot, ready clone kept asleep",
            h(after_ms, "snapshot", false, 1),
            heavy_mib,
        ));
        out.push(subject(
            HEAVY_WARM_FN,
            "heavy warm reference, never hibernates",
            h(0, "snapshot", true, 0),
            heavy_mib,
        ));
    }
    out
}

/// The suite's daemon config: each subject with one zygote, one ready clone.
fn pools(subjects: &[Subject]) -> Vec<FunctionPool> {
    subjects
        .iter()
        .map(|s| FunctionPool {
            name: s.name,
            zygotes: 1,
            ready_clones: 1,
            native: false,
            hibernate: Some(s.hibernate),
            heap_mib: s.heap_mib,
        })
        .collect()
}

/// Memory of one function's idle pool at one moment.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MemorySample {
    /// The zygote cgroup's charge (v1 `memory.usage_in_bytes`, v2
    /// `memory.current`), KiB.
    pub zygote_cgroup_kib: Option<u64>,
    /// What that charge is (the cgroup's own `memory.stat`).
    pub zygote_cgroup_stat: Option<CgroupStat>,
    /// The whole function subtree (zygote + sandboxes), admin API
    /// `status.memory_bytes`, KiB.
    pub function_cgroup_kib: u64,
    /// The zygote process(es), from smaps_rollup.
    pub zygote: ProcMem,
    /// The ready clones' processes, summed.
    pub clones: ProcMem,
    pub zygotes: u64,
    pub ready_clones: u64,
    pub hibernated: u64,
    pub snapshot_bytes: u64,
    /// Of those, in the page cache (reclaimable; charged to the daemon,
    /// not to the function), admin API `status.snapshot_cached_bytes`.
    pub snapshot_cached_bytes: u64,
}

impl MemorySample {
    /// PSS of everything the function keeps alive.
    pub fn pss_kib(&self) -> u64 {
        self.zygote.pss_kib + self.clones.pss_kib
    }
}

/// The daemon's own account of a function (`/metrics`).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct DaemonCounts {
    pub hibernations_ok: u64,
    pub hibernations_failed: u64,
    /// Mean of `fnhost_hibernate_seconds`, ms.
    pub hibernate_mean_ms: Option<f64>,
    pub wakes_ok: u64,
    pub wakes_failed: u64,
    /// `fnhost_wake_seconds`, bucket estimates, ms.
    pub wake_p50_ms: Option<f64>,
    pub wake_p99_ms: Option<f64>,
    pub wake_faults: u64,
    pub wake_prefetched_pages: u64,
    pub wake_copied_pages: u64,
}

/// One function's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FunctionResult {
    pub function: String,
    /// `hibernate_mode`, or `never` for the warm reference.
    pub mode: String,
    pub prefetch: bool,
    /// MiB its import builds (0: the no-op).
    pub heap_mib: u64,
    pub label: String,
    /// After an invocation, once the pool had its ready clone again.
    pub warm: Option<MemorySample>,
    /// Once the admin API reported the zygote asleep.
    pub hibernated: Option<MemorySample>,
    /// The timed invocations: latency, `x-fnhost-start` counts, the
    /// Server-Timing phases (`wake` among them), and every error of the
    /// suite for this function (timed or not).
    pub invocations: ScenarioSummary,
    pub daemon: DaemonCounts,
}

impl FunctionResult {
    fn hibernates(&self) -> bool {
        self.mode != "never"
    }
}

/// The warm reference (never hibernates) of the same heap size as `f`.
pub fn warm_reference<'a>(
    functions: &'a [FunctionResult],
    f: &FunctionResult,
) -> Option<&'a FunctionResult> {
    functions
        .iter()
        .find(|w| !w.hibernates() && w.heap_mib == f.heap_mib)
}

/// How many functions a memory budget holds, one way of counting.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BudgetRow {
    pub function: String,
    /// `memory cgroup` (the function subtree's charge) or `PSS` (zygote +
    /// ready clones).
    pub basis: String,
    /// Per function, never hibernating (the warm reference), KiB.
    pub warm_kib: u64,
    /// Per function, hibernated, KiB.
    pub hibernated_kib: u64,
    pub functions_warm: u64,
    pub functions_hibernated: u64,
}

/// The suite's result (also its JSON form).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hibernation {
    pub cycles: u32,
    pub hibernate_after_ms: u64,
    pub budget_mib: u64,
    /// Why the suite stopped early, when it did.
    pub failure: Option<String>,
    pub functions: Vec<FunctionResult>,
    pub budget: Vec<BudgetRow>,
    /// Anything that makes the numbers mean less than they say.
    pub notes: Vec<String>,
    /// Page sharing across copies of one function, when measured.
    pub sharing: Option<Sharing>,
}

impl Hibernation {
    /// A suite that could not run at all.
    pub fn failed(settings: &Settings, err: &anyhow::Error) -> Self {
        Self {
            cycles: settings.cycles,
            hibernate_after_ms: settings.after_ms,
            budget_mib: settings.budget_mib,
            failure: Some(format!("{err:#}")),
            functions: Vec::new(),
            budget: Vec::new(),
            notes: Vec::new(),
            sharing: None,
        }
    }

    /// Failed wake-ups, wrong start kinds, zygotes that never slept, and
    /// the suite itself failing.
    pub fn error_count(&self) -> u64 {
        u64::from(self.failure.is_some())
            + self
                .functions
                .iter()
                .map(|f| f.invocations.error_count())
                .sum::<u64>()
    }
}

/// Starts the suite's daemon, runs the cycles, measures, stops it.
pub async fn run(fnhost: &Path, settings: Settings) -> Result<Hibernation> {
    let subjects = subjects(settings.after_ms, settings.heavy_mib);
    eprintln!(
        "fnhost-bench: hibernation: starting a daemon with {} functions (hibernate_after_ms = {})",
        subjects.len(),
        settings.after_ms
    );
    let daemon = Daemon::start_with(fnhost, &pools(&subjects), true).await?;
    let mut result = match bench::Bench::new(&daemon, &subjects, settings.request_timeout) {
        Ok(mut bench) => bench.measure(&subjects, settings).await,
        Err(err) => Err(err),
    };
    if let Ok(h) = &mut result {
        if h.error_count() > 0 || h.functions.iter().any(|f| f.daemon.hibernations_failed > 0) {
            h.notes.extend(daemon_log(&daemon.stderr_warnings()));
        }
    }
    drop(daemon);
    if let (Ok(h), true) = (&mut result, settings.share_copies > 0) {
        match sharing::run(
            fnhost,
            settings.share_copies,
            settings.after_ms,
            settings.request_timeout,
        )
        .await
        {
            Ok(s) => h.sharing = Some(s),
            Err(err) => h
                .notes
                .push(format!("sharing across copies not measured: {err:#}")),
        }
    }
    result
}

/// The daemon's last warnings about hibernation and wake-ups (at most
/// five), quoted for the notes.
fn daemon_log(warnings: &[String]) -> Vec<String> {
    let relevant: Vec<&String> = warnings
        .iter()
        .filter(|l| l.contains("hibernat") || l.contains("wake") || l.contains("snapshot"))
        .collect();
    relevant[relevant.len().saturating_sub(5)..]
        .iter()
        .map(|l| format!("daemon log: `{}`", l.trim().replace('`', "'")))
        .collect()
}

/// Functions per budget for each hibernating function, against the warm
/// reference, by memory-cgroup charge and by PSS.
fn budget(functions: &[FunctionResult], budget_mib: u64) -> Vec<BudgetRow> {
    let budget_kib = budget_mib * 1024;
    let fit = |per: u64| budget_kib.checked_div(per).unwrap_or(0);
    let mut rows = Vec::new();
    for f in functions.iter().filter(|f| f.hibernates()) {
        let (Some(asleep), Some(warm)) = (
            f.hibernated,
            warm_reference(functions, f).and_then(|w| w.warm),
        ) else {
            continue;
        };
        let bases = [
            (
                "memory cgroup",
                warm.function_cgroup_kib,
                asleep.function_cgroup_kib,
            ),
            ("PSS", warm.pss_kib(), asleep.pss_kib()),
        ];
        for (basis, warm_kib, hibernated_kib) in bases {
            rows.push(BudgetRow {
                function: f.function.clone(),
                basis: basis.to_owned(),
                warm_kib,
                hibernated_kib,
                functions_warm: fit(warm_kib),
                functions_hibernated: fit(hibernated_kib),
            });
        }
    }
    rows
}

/// Notes on what the daemon did that it should not have.
fn observations(functions: &[FunctionResult]) -> Vec<String> {
    let mut notes = Vec::new();
    for f in functions.iter().filter(|f| f.hibernates()) {
        let d = &f.daemon;
        if d.hibernations_failed > 0 {
            notes.push(format!(
                "{}: {} hibernation(s) failed (fnhost_hibernations_total{{result=\"failed\"}}); \
                 see the daemon's log",
                f.function, d.hibernations_failed
            ));
        }
        if d.wakes_failed > 0 {
            notes.push(format!(
                "{}: {} wake-up(s) failed (fnhost_wakes_total{{result=\"failed\"}})",
                f.function, d.wakes_failed
            ));
        }
        let reference = warm_reference(functions, f).and_then(|w| w.warm);
        if let (Some(warm), Some(asleep)) = (reference, f.hibernated) {
            if let (Some(w), Some(h)) = (warm.zygote_cgroup_kib, asleep.zygote_cgroup_kib) {
                if w > 0 && h as f64 > w as f64 * TARGET_MEMORY_RATIO {
                    let file = asleep.zygote_cgroup_stat.map_or(0, |s| s.file_kib);
                    notes.push(format!(
                        "{}: the hibernated zygote cgroup still holds {:.1} MiB, {:.0}% of warm \
                         ({:.1} MiB of it page cache)",
                        f.function,
                        mib(h),
                        percent(h, w),
                        mib(file)
                    ));
                }
            }
            if f.mode == "snapshot" && asleep.snapshot_bytes == 0 {
                notes.push(format!(
                    "{}: hibernated in snapshot mode but status.snapshot_bytes is 0",
                    f.function
                ));
            }
        }
    }
    notes
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::stats::ScenarioStats;

    #[test]
    fn config_has_the_five_functions() {
        let s = subjects(300, 0);
        let toml =
            crate::daemon::config_toml(Path::new("/s"), Path::new("/c"), "r", &pools(&s), true);
        for name in [KEPT_FN, SNAP_FN, NOPREFETCH_FN, RECLAIM_FN, WARM_FN] {
            assert!(toml.contains(&format!("name = \"{name}\"")), "{toml}");
        }
        assert_eq!(toml.matches("hibernate_after_ms = 300").count(), 4);
        assert_eq!(toml.matches("hibernate_after_ms = 0").count(), 1);
        assert_eq!(toml.matches("hibernate_mode = \"reclaim\"").count(), 1);
        assert_eq!(toml.matches("hibernate_prefetch = false").count(), 2);
        assert_eq!(toml.matches("hibernate_ready_clones = 1").count(), 1);
        assert_eq!(toml.matches("\nready_clones = 1\n").count(), 5);
        let with_heavy = subjects(300, 64);
        assert_eq!(with_heavy.len(), 7);
        assert!(with_heavy
            .iter()
            .any(|s| s.name == HEAVY_SNAP_FN && s.heap_mib == 64 && s.hibernates()));
        assert!(with_heavy
            .iter()
            .any(|s| s.name == HEAVY_WARM_FN && s.heap_mib == 64 && !s.hibernates()));
    }

    fn sample(zygote_kib: u64, function_kib: u64, pss: u64) -> MemorySample {
        MemorySample {
            zygote_cgroup_kib: Some(zygote_kib),
            zygote_cgroup_stat: Some(CgroupStat {
                anon_kib: zygote_kib / 2,
                file_kib: zygote_kib / 2,
            }),
            function_cgroup_kib: function_kib,
            zygote: ProcMem {
                rss_kib: pss * 2,
                pss_kib: pss,
                uss_kib: pss,
            },
            clones: ProcMem::default(),
            zygotes: 1,
            ready_clones: 1,
            hibernated: 0,
            snapshot_bytes: 0,
            snapshot_cached_bytes: 0,
        }
    }

    fn result(
        name: &str,
        mode: &str,
        warm: MemorySample,
        asleep: Option<MemorySample>,
    ) -> FunctionResult {
        let mut stats = ScenarioStats::default();
        stats.record_success(
            Duration::from_micros(2000),
            Some(WAKE_START),
            Some("queue;dur=0.01, wake;dur=1.5, total;dur=1.9"),
        );
        let mut invocations = stats.summarize(WAKE_START);
        invocations.function = name.to_owned();
        FunctionResult {
            function: name.to_owned(),
            mode: mode.to_owned(),
            prefetch: true,
            heap_mib: 0,
            label: mode.to_owned(),
            warm: Some(warm),
            hibernated: asleep,
            invocations,
            daemon: DaemonCounts {
                wakes_ok: 2,
                wake_faults: 100,
                ..DaemonCounts::default()
            },
        }
    }

    /// A small result: snapshot and reclaim asleep, and the reference.
    pub fn report() -> Hibernation {
        let warm_ref = result(
            WARM_FN,
            "never",
            sample(20 * 1024, 30 * 1024, 10 * 1024),
            None,
        );
        let mut asleep = sample(2048, 4096, 1024);
        asleep.snapshot_bytes = 20 << 20;
        let snap = result(
            SNAP_FN,
            "snapshot",
            sample(20 * 1024, 30 * 1024, 10 * 1024),
            Some(asleep),
        );
        let reclaim = result(
            RECLAIM_FN,
            "reclaim",
            sample(20 * 1024, 30 * 1024, 10 * 1024),
            Some(sample(18 * 1024, 20 * 1024, 9 * 1024)),
        );
        let functions = vec![snap, reclaim, warm_ref];
        Hibernation {
            cycles: 2,
            hibernate_after_ms: 300,
            budget_mib: 1024,
            failure: None,
            budget: budget(&functions, 1024),
            notes: observations(&functions),
            functions,
            sharing: None,
        }
    }

    #[test]
    fn budget_counts_functions_against_the_warm_reference() {
        let h = report();
        let rows: Vec<(&str, &str, u64, u64)> = h
            .budget
            .iter()
            .map(|r| {
                (
                    r.function.as_str(),
                    r.basis.as_str(),
                    r.functions_warm,
                    r.functions_hibernated,
                )
            })
            .collect();
        // 1 GiB / 30 MiB = 34, / 4 MiB = 256; PSS 10 MiB → 102, 1 MiB → 1024.
        assert_eq!(
            rows,
            [
                (SNAP_FN, "memory cgroup", 34, 256),
                (SNAP_FN, "PSS", 102, 1024),
                (RECLAIM_FN, "memory cgroup", 34, 51),
                (RECLAIM_FN, "PSS", 102, 113),
            ]
        );
    }

    #[test]
    fn errors_and_failure_are_counted() {
        let mut h = report();
        h.functions[0]
            .invocations
            .errors
            .insert("x-fnhost-start: ready-clone (expected wake)".to_owned(), 2);
        assert_eq!(h.error_count(), 2);
        let md = markdown(&h, &[]);
        assert!(
            md.contains("hib-snap: 2 error(s) (x-fnhost-start: ready-clone (expected wake): 2)"),
            "{md}"
        );
        let settings = Settings {
            cycles: 2,
            after_ms: 300,
            budget_mib: 1024,
            request_timeout: Duration::from_secs(1),
            heavy_mib: 0,
            share_copies: 0,
        };
        let failed = Hibernation::failed(&settings, &anyhow::anyhow!("no userfaultfd"));
        assert_eq!(failed.error_count(), 1);
        assert!(markdown(&failed, &[]).contains("**The suite failed:** no userfaultfd"));
    }
}
