//! The hibernation suite's client: polls the admin API until zygotes are
//! asleep (or refilled), invokes, checks `x-fnhost-start`, and reads the
//! memory of a function's processes and cgroups.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use fnhost_sandbox::cgroup::names;
use hyper::{Method, StatusCode};

use super::{
    budget, observations, DaemonCounts, FunctionResult, Hibernation, MemorySample, Settings,
    Subject, WAKE_START,
};
use crate::daemon::Daemon;
use crate::http::{Connection, Endpoint};
use crate::memory::{self, ProcMem};
use crate::metrics::{self, HIBERNATE_PHASE, WAKE_PHASE};
use crate::scenario::{describe_failure, root_cause, SERVER_TIMING_HEADER, START_HEADER};
use crate::stats::{LatencyHistogram, ScenarioStats, NO_START_HEADER};

const PAYLOAD: &[u8] = br#"{"bench":true}"#;
/// Longest wait for a zygote to hibernate or a pool to start.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for a woken pool to have its ready clone again.
const REFILL_LIMIT: Duration = Duration::from_secs(5);
/// How long a cycle waits, once every zygote sleeps, for their snapshots
/// to be back in the page cache (the daemon reads a snapshot back in the
/// background after hibernating; a wake-up meanwhile faults from disk).
const SETTLE_LIMIT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Deadline of one admin API request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries at sampling a hibernating function awake: it may fall asleep again
/// while its processes are being read.
const WARM_ATTEMPTS: u32 = 4;
/// Pause between seeing a woken pool refilled and sampling it.
const SETTLE: Duration = Duration::from_millis(50);

/// `status` of `GET /admin/functions`, per function.
#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Deserialize)]
#[serde(default)]
pub(super) struct PoolStatus {
    pub(super) zygotes: u64,
    pub(super) ready_clones: u64,
    pub(super) hibernated: u64,
    pub(super) snapshot_bytes: u64,
    pub(super) snapshot_cached_bytes: u64,
    pub(super) snapshot_shared_bytes: u64,
    pub(super) memory_bytes: u64,
}

pub(super) type Statuses = BTreeMap<String, PoolStatus>;

fn parse_statuses(body: &[u8]) -> Result<Statuses> {
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(body).context("GET /admin/functions did not answer a JSON list")?;
    let mut out = Statuses::new();
    for entry in list {
        let Some(name) = entry["name"].as_str() else {
            continue;
        };
        let status = serde_json::from_value(entry["status"].clone()).unwrap_or_default();
        out.insert(name.to_owned(), status);
    }
    Ok(out)
}

pub(super) fn status_of(statuses: &Statuses, name: &str) -> PoolStatus {
    statuses.get(name).copied().unwrap_or_default()
}

/// The suite's state while it runs.
pub(super) struct Bench {
    invoke: Connection,
    endpoint: Endpoint,
    admin: Connection,
    admin_endpoint: Endpoint,
    daemon_pid: u32,
    cgroup_root: String,
    timeout: Duration,
    /// Per function: timed invocations and every error.
    stats: BTreeMap<&'static str, ScenarioStats>,
    /// Hibernating functions that never fell asleep within WAIT_LIMIT: not
    /// waited for again.
    given_up: Vec<&'static str>,
    notes: Vec<String>,
}

/// How one invocation went.
enum Outcome {
    Ok {
        elapsed: Duration,
        start: Option<String>,
        timing: Option<String>,
    },
    Failed(String),
}

impl Bench {
    /// A client of `daemon` (started with its admin API) for `subjects`.
    pub(super) fn new(daemon: &Daemon, subjects: &[Subject], timeout: Duration) -> Result<Self> {
        let admin = daemon
            .admin_url()
            .context("the hibernation daemon printed no admin API address")?;
        Ok(Self {
            invoke: Connection::new(Endpoint::parse(daemon.url())?),
            endpoint: Endpoint::parse(daemon.url())?,
            admin: Connection::new(Endpoint::parse(admin)?).with_bearer(daemon.admin_token()),
            admin_endpoint: Endpoint::parse(admin)?,
            daemon_pid: daemon.pid(),
            cgroup_root: daemon.cgroup_root().to_owned(),
            timeout,
            stats: subjects
                .iter()
                .map(|s| (s.name, ScenarioStats::default()))
                .collect(),
            given_up: Vec::new(),
            notes: Vec::new(),
        })
    }

    pub(super) async fn measure(
        &mut self,
        subjects: &[Subject],
        settings: Settings,
    ) -> Result<Hibernation> {
        // Every pool up (a zygote, awake or already asleep).
        if let Err(last) = self
            .wait_for(WAIT_LIMIT, |st| {
                subjects.iter().all(|s| status_of(st, s.name).zygotes >= 1)
            })
            .await
        {
            bail!(
                "hibernation: the pools did not start within {} s; last status: {last:?}",
                WAIT_LIMIT.as_secs()
            );
        }
        // One untimed cycle: the first wake-up records the working set that
        // later ones prefetch.
        eprintln!(
            "fnhost-bench: hibernation: 1 untimed and {} timed cycles",
            settings.cycles
        );
        let started = Instant::now();
        self.cycle(subjects, 0, false).await;
        for i in 0..settings.cycles {
            self.cycle(subjects, i as usize, true).await;
        }
        eprintln!(
            "fnhost-bench: hibernation: cycles done in {:.1} s; measuring memory",
            started.elapsed().as_secs_f64()
        );
        let mut samples = BTreeMap::new();
        for subject in subjects {
            let pair = if subject.hibernates() {
                self.sample_hibernating(subject).await
            } else {
                (self.sample_warm_reference(subject).await, None)
            };
            samples.insert(subject.name, pair);
        }
        let text = match metrics::scrape(&self.endpoint).await {
            Ok(text) => text,
            Err(err) => {
                self.note(format!("cannot read /metrics: {err:#}"));
                String::new()
            }
        };
        let phases = metrics::parse(&text);
        let functions: Vec<FunctionResult> = subjects
            .iter()
            .map(|s| {
                let (warm, hibernated) = samples.get(s.name).copied().unwrap_or((None, None));
                let mut invocations = self.stats[s.name].summarize(s.expected_start());
                invocations.function = s.name.to_owned();
                let p = phases.get(s.name);
                let counter = |name: &str, result: Option<&str>| {
                    let mut labels = vec![("function", s.name)];
                    labels.extend(result.map(|r| ("result", r)));
                    metrics::value(&text, name, &labels).map_or(0, |v| v as u64)
                };
                let wake = p.and_then(|p| p.get(WAKE_PHASE));
                FunctionResult {
                    function: s.name.to_owned(),
                    mode: if s.hibernates() {
                        s.hibernate.mode.to_owned()
                    } else {
                        "never".to_owned()
                    },
                    prefetch: s.hibernate.prefetch,
                    heap_mib: s.heap_mib,
                    label: s.label.to_owned(),
                    warm,
                    hibernated,
                    invocations,
                    daemon: DaemonCounts {
                        hibernations_ok: counter("fnhost_hibernations_total", Some("ok")),
                        hibernations_failed: counter("fnhost_hibernations_total", Some("failed")),
                        hibernate_mean_ms: p
                            .and_then(|p| p.get(HIBERNATE_PHASE))
                            .map(|m| m.mean_ms),
                        wakes_ok: counter("fnhost_wakes_total", Some("ok")),
                        wakes_failed: counter("fnhost_wakes_total", Some("failed")),
                        wake_p50_ms: wake.map(|m| m.p50_ms),
                        wake_p99_ms: wake.map(|m| m.p99_ms),
                        wake_faults: counter("fnhost_wake_faults_total", None),
                        wake_prefetched_pages: counter("fnhost_wake_prefetched_pages_total", None),
                        wake_copied_pages: counter("fnhost_wake_copied_pages_total", None),
                    },
                }
            })
            .collect();
        let mut notes = std::mem::take(&mut self.notes);
        notes.extend(observations(&functions));
        Ok(Hibernation {
            cycles: settings.cycles,
            hibernate_after_ms: settings.after_ms,
            budget_mib: settings.budget_mib,
            failure: None,
            budget: budget(&functions, settings.budget_mib),
            functions,
            notes,
            sharing: None,
        })
    }

    /// One cycle: wait until every hibernating function sleeps (so that no
    /// zygote is going to sleep while another wakes), then invoke each
    /// function in turn, letting a woken pool refill before the next. The
    /// order rotates with `index`, so that whatever the first request after
    /// the idle wait pays does not always fall on the same function.
    /// `timed`: record latencies (errors always count).
    async fn cycle(&mut self, subjects: &[Subject], index: usize, timed: bool) {
        let sleepers: Vec<&'static str> = subjects
            .iter()
            .filter(|s| s.hibernates() && !self.given_up.contains(&s.name))
            .map(|s| s.name)
            .collect();
        let kept: Vec<(&'static str, u64)> = subjects
            .iter()
            .filter(|s| sleepers.contains(&s.name))
            .map(|s| (s.name, s.ready_asleep()))
            .collect();
        let asleep = match self
            .wait_for(WAIT_LIMIT, |st| {
                sleepers.iter().all(|f| status_of(st, f).hibernated >= 1)
            })
            .await
        {
            Ok(st) => st,
            Err(last) => {
                for f in sleepers
                    .iter()
                    .filter(|f| status_of(&last, f).hibernated == 0)
                {
                    self.record_error(
                        f,
                        format!("not hibernated within {} s", WAIT_LIMIT.as_secs()),
                    );
                    self.note(format!(
                        "{f}: its zygote did not hibernate within {} s (last status: {:?}); \
                         its remaining cycles were skipped",
                        WAIT_LIMIT.as_secs(),
                        status_of(&last, f)
                    ));
                    self.given_up.push(f);
                }
                last
            }
        };
        // An idle function's steady state: asleep, its snapshot read back
        // and the ready clones it keeps asleep forked. (Only the first
        // ~100 ms after hibernating lack it; a request then faults from
        // disk or makes its clone.) Bounded: the kernel may evict the cache.
        let settled = self
            .wait_for(SETTLE_LIMIT, |st| {
                kept.iter().all(|(f, ready)| {
                    let s = status_of(st, f);
                    s.hibernated == 0
                        || (s.snapshot_cached_bytes >= s.snapshot_bytes && s.ready_clones >= *ready)
                })
            })
            .await;
        if settled.is_err() && timed {
            self.note(format!(
                "in some cycles not every snapshot was back in the page cache (or the ready \
                 clone kept asleep forked) within {} s; their wake-ups may have read from disk",
                SETTLE_LIMIT.as_secs()
            ));
        }
        let first = index % subjects.len().max(1);
        for subject in subjects[first..].iter().chain(&subjects[..first]) {
            let f = subject.name;
            if subject.hibernates() && status_of(&asleep, f).hibernated == 0 {
                continue;
            }
            let outcome = self.invoke(f).await;
            self.record(subject, outcome, timed);
            if subject.hibernates() {
                let refilled = self
                    .wait_for(REFILL_LIMIT, |st| status_of(st, f).ready_clones >= 1)
                    .await;
                if refilled.is_err() && timed {
                    self.note(format!(
                        "{f}: no ready clone within {} s of a wake-up; the next wake-up overlapped \
                         its refill",
                        REFILL_LIMIT.as_secs()
                    ));
                }
            }
        }
    }

    /// Hibernated, then warm: waits for the zygote to sleep and samples;
    /// wakes it, waits for the ready clone and samples again, retrying when
    /// the function fell asleep while being read.
    async fn sample_hibernating(
        &mut self,
        subject: &Subject,
    ) -> (Option<MemorySample>, Option<MemorySample>) {
        let f = subject.name;
        if self.given_up.contains(&f) {
            return (None, None);
        }
        let mut hibernated = None;
        for _ in 0..WARM_ATTEMPTS {
            let ready = subject.ready_asleep();
            let asleep = match self
                .wait_for(WAIT_LIMIT, |st| {
                    let s = status_of(st, f);
                    s.hibernated >= 1 && s.ready_clones >= ready
                })
                .await
            {
                Ok(st) => st,
                Err(last) => {
                    self.record_error(
                        f,
                        format!(
                            "not hibernated within {} s (memory sample)",
                            WAIT_LIMIT.as_secs()
                        ),
                    );
                    self.note(format!(
                        "{f}: did not hibernate for the memory sample (last status: {:?})",
                        status_of(&last, f)
                    ));
                    return (None, hibernated);
                }
            };
            if hibernated.is_none() {
                hibernated = Some(self.sample(f, status_of(&asleep, f)));
            }
            let outcome = self.invoke(f).await;
            self.record(subject, outcome, false);
            if self
                .wait_for(REFILL_LIMIT, |st| {
                    let s = status_of(st, f);
                    s.ready_clones >= 1 && s.hibernated == 0
                })
                .await
                .is_err()
            {
                continue;
            }
            // Let the invoked sandbox's teardown finish: it would count as
            // a clone. The pool stays idle for hibernate_after_ms first.
            tokio::time::sleep(SETTLE).await;
            match self.sample_awake(f).await {
                Some(warm) => return (Some(warm), hibernated),
                None => continue,
            }
        }
        self.note(format!(
            "{f}: could not sample it awake in {WARM_ATTEMPTS} tries (it fell asleep again \
             while being read)"
        ));
        (None, hibernated)
    }

    /// The reference: invoked, then sampled with its ready clone back.
    async fn sample_warm_reference(&mut self, subject: &Subject) -> Option<MemorySample> {
        let f = subject.name;
        let outcome = self.invoke(f).await;
        self.record(subject, outcome, false);
        if let Err(last) = self
            .wait_for(REFILL_LIMIT, |st| status_of(st, f).ready_clones >= 1)
            .await
        {
            self.note(format!(
                "{f}: no ready clone for the memory sample (last status: {:?})",
                status_of(&last, f)
            ));
            return None;
        }
        tokio::time::sleep(SETTLE).await;
        let sample = self.sample_awake(f).await;
        if sample.is_none() {
            self.note(format!(
                "{f}: could not read its status for the memory sample"
            ));
        }
        sample
    }

    /// Samples the function, then checks that it was awake throughout and
    /// takes the subtree's charge from that moment; `None` if it fell
    /// asleep meanwhile (or the admin API did not answer).
    async fn sample_awake(&mut self, f: &str) -> Option<MemorySample> {
        let sample = self.sample(f, PoolStatus::default());
        let st = self.statuses().await.ok()?;
        let status = status_of(&st, f);
        (status.hibernated == 0 && status.zygotes >= 1).then_some(MemorySample {
            function_cgroup_kib: status.memory_bytes / 1024,
            zygotes: status.zygotes,
            ready_clones: status.ready_clones,
            ..sample
        })
    }

    /// Reads the function's processes and cgroups now.
    fn sample(&self, function: &str, status: PoolStatus) -> MemorySample {
        let groups = memory::by_cgroup(self.daemon_pid);
        let mut zygote = ProcMem::default();
        let mut clones = ProcMem::default();
        let mut zygote_cgroup = None;
        for (cgroup, mem) in &groups {
            if memory::is_zygote_cgroup_of(cgroup, function) {
                zygote = add(zygote, *mem);
                zygote_cgroup.get_or_insert_with(|| cgroup.clone());
            } else if memory::is_clone_cgroup_of(cgroup, function) {
                clones = add(clones, *mem);
            }
        }
        let zygote_cgroup = zygote_cgroup
            .unwrap_or_else(|| format!("/{}/{}", self.cgroup_root, names::zygote(function)));
        MemorySample {
            zygote_cgroup_kib: memory::cgroup_usage_kib(&zygote_cgroup),
            zygote_cgroup_stat: memory::cgroup_stat(&zygote_cgroup),
            function_cgroup_kib: status.memory_bytes / 1024,
            zygote,
            clones,
            zygotes: status.zygotes,
            ready_clones: status.ready_clones,
            hibernated: status.hibernated,
            snapshot_bytes: status.snapshot_bytes,
            snapshot_cached_bytes: status.snapshot_cached_bytes,
        }
    }

    async fn invoke(&mut self, function: &str) -> Outcome {
        let path = self.endpoint.invoke_path(function);
        match self
            .invoke
            .send(
                Method::POST,
                &path,
                Bytes::from_static(PAYLOAD),
                self.timeout,
            )
            .await
        {
            Ok(reply) if reply.status == StatusCode::OK => Outcome::Ok {
                elapsed: reply.elapsed,
                start: reply.header(START_HEADER).map(str::to_owned),
                timing: reply.header(SERVER_TIMING_HEADER).map(str::to_owned),
            },
            Ok(reply) => Outcome::Failed(describe_failure(&reply)),
            Err(err) => Outcome::Failed(format!("transport: {}", root_cause(&err))),
        }
    }

    /// Invokes each of `subjects` once, in order, while they sleep: the
    /// latency of each answer served as `wake`, and the failures (any other
    /// answer) described.
    pub(super) async fn wake_each(
        &mut self,
        subjects: &[Subject],
    ) -> (LatencyHistogram, Vec<String>) {
        let mut woken = LatencyHistogram::default();
        let mut failures = Vec::new();
        for subject in subjects {
            match self.invoke(subject.name).await {
                Outcome::Ok { elapsed, start, .. } if start.as_deref() == Some(WAKE_START) => {
                    woken.record(elapsed)
                }
                Outcome::Ok { start, .. } => failures.push(format!(
                    "{}: {START_HEADER}: {}",
                    subject.name,
                    start.as_deref().unwrap_or(NO_START_HEADER)
                )),
                Outcome::Failed(kind) => failures.push(format!("{}: {kind}", subject.name)),
            }
        }
        (woken, failures)
    }

    /// Records an invocation. A hibernating function's answer must say
    /// `x-fnhost-start: wake` (it was asleep when it was sent); anything
    /// else is an error, never a latency. The warm reference's start kind
    /// is only counted (the report notes unexpected ones).
    fn record(&mut self, subject: &Subject, outcome: Outcome, timed: bool) {
        let f = subject.name;
        let prefix = if timed { "" } else { "untimed: " };
        match outcome {
            Outcome::Failed(kind) => self.record_error(f, format!("{prefix}{kind}")),
            Outcome::Ok { start, .. }
                if subject.hibernates() && start.as_deref() != Some(WAKE_START) =>
            {
                let got = start.as_deref().unwrap_or(NO_START_HEADER);
                self.record_error(
                    f,
                    format!("{prefix}{START_HEADER}: {got} (expected {WAKE_START})"),
                );
            }
            Outcome::Ok {
                elapsed,
                start,
                timing,
            } => {
                if timed {
                    self.stats
                        .get_mut(f)
                        .expect("every subject has stats")
                        .record_success(elapsed, start.as_deref(), timing.as_deref());
                }
            }
        }
    }

    /// Adds a note to the report, once.
    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    fn record_error(&mut self, function: &str, kind: String) {
        if let Some(stats) = self.stats.get_mut(function) {
            if stats.errors.is_empty() {
                eprintln!("fnhost-bench: hibernation: {function}: {kind}");
            }
            stats.record_error(kind);
        }
    }

    async fn statuses(&mut self) -> Result<Statuses> {
        let path = self.admin_endpoint.path("/admin/functions");
        let reply = self
            .admin
            .send(Method::GET, &path, Bytes::new(), ADMIN_TIMEOUT)
            .await?;
        if reply.status != StatusCode::OK {
            bail!("GET {path} answered {}", describe_failure(&reply));
        }
        parse_statuses(&reply.body)
    }

    /// Polls the admin API until `done` holds (`Ok` with that status) or
    /// `limit` passes (`Err` with the last status read).
    pub(super) async fn wait_for(
        &mut self,
        limit: Duration,
        done: impl Fn(&Statuses) -> bool,
    ) -> std::result::Result<Statuses, Statuses> {
        let deadline = Instant::now() + limit;
        let mut last = Statuses::new();
        loop {
            match self.statuses().await {
                Ok(st) if done(&st) => return Ok(st),
                Ok(st) => last = st,
                Err(err) => {
                    if Instant::now() >= deadline {
                        self.notes
                            .push(format!("admin API unreadable while waiting: {err:#}"));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

fn add(a: ProcMem, b: ProcMem) -> ProcMem {
    ProcMem {
        rss_kib: a.rss_kib + b.rss_kib,
        pss_kib: a.pss_kib + b.pss_kib,
        uss_kib: a.uss_kib + b.uss_kib,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_admin_statuses() {
        let body = br#"[{"name":"a","status":{"zygotes":1,"ready_clones":0,"hibernated":1,
            "snapshot_bytes":4096,"memory_bytes":8192,"queued":0}},{"name":"b","status":null},
            {"status":{}}]"#;
        let st = parse_statuses(body).expect("valid");
        assert_eq!(
            status_of(&st, "a"),
            PoolStatus {
                zygotes: 1,
                ready_clones: 0,
                hibernated: 1,
                snapshot_bytes: 4096,
                snapshot_cached_bytes: 0,
                snapshot_shared_bytes: 0,
                memory_bytes: 8192
            }
        );
        assert_eq!(status_of(&st, "b"), PoolStatus::default());
        assert_eq!(st.len(), 2);
        assert!(parse_statuses(b"{}").is_err());
    }
}
