//! The hibernation suite's Markdown: wake-up latency beside the run's
//! other rows, memory warm → hibernated, the daemon's counters, functions
//! per memory budget, and notes.

use std::fmt::Write as _;

use super::{
    mib, percent, warm_reference, Hibernation, TARGET_MEMORY_RATIO, TARGET_WAKE_P50_RATIO,
    TARGET_WAKE_P99_RATIO, WARM_FN,
};
use crate::metrics::WAKE_PHASE;
use crate::stats::Percentiles;

fn ms(v: f64) -> String {
    format!("{v:.3}")
}

/// `25.1 → 3.2 (13%)`, or what is known.
fn warm_to_hibernated(warm: Option<u64>, hibernated: Option<u64>) -> String {
    match (warm, hibernated) {
        (Some(w), Some(h)) => format!("{:.1} → {:.1} ({:.0}%)", mib(w), mib(h), percent(h, w)),
        (Some(w), None) => format!("{:.1} → -", mib(w)),
        (None, Some(h)) => format!("- → {:.1}", mib(h)),
        (None, None) => "-".to_owned(),
    }
}

/// The Markdown section; `others` are latency rows from the rest of the
/// same run (fnhost warm and cold, crun), shown beside the wake-ups.
pub fn markdown(h: &Hibernation, others: &[(String, Percentiles)]) -> String {
    let mut out = format!(
        "Five copies of the no-op Python function in one daemon, each `zygotes = 1`, \
         `ready_clones = 1`; four hibernate after {} ms idle (`snapshot` keeping a ready clone \
         asleep, the default; `snapshot` woken by the request, with and without prefetch, \
         `hibernate_ready_clones = 0`; `reclaim`), `{WARM_FN}` never does. A cycle waits until \
         the admin API reports every hibernating zygote asleep, its snapshot back in the page \
         cache (the daemon reads it back after hibernating: the state of a function idle for \
         longer than a moment) and the ready clone it keeps asleep forked, then invokes each \
         function once (the order rotates from cycle to cycle); one untimed cycle, then {} \
         timed.{}\n\n",
        h.hibernate_after_ms,
        h.cycles,
        h.functions
            .iter()
            .find(|f| f.heap_mib > 0)
            .map_or(String::new(), |f| format!(
                " Two copies of the import-heavy function ({} MiB built at import) join them: \
                 one hibernates (`snapshot`, a ready clone kept asleep), one is its warm \
                 reference.",
                f.heap_mib
            ))
    );
    if let Some(failure) = &h.failure {
        let _ = writeln!(out, "**The suite failed:** {failure}");
        return out;
    }
    out.push_str(
        "### Wake-up + invoke latency (ms, client side)\n\n\
         | function | served as | n | p50 | p90 | p99 | max | wake, Server-Timing p50 / p99 | \
         wake, /metrics p50 / p99 | errors |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for f in &h.functions {
        let l = &f.invocations.latency;
        let served = if f.hibernates() {
            format!("wake: {}", f.label)
        } else {
            "ready clone (never hibernates)".to_owned()
        };
        let cells = if l.n == 0 {
            vec!["-".to_owned(); 4]
        } else {
            [l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms]
                .into_iter()
                .map(ms)
                .collect()
        };
        let st_wake = f
            .invocations
            .phases
            .0
            .iter()
            .find(|(name, _)| name == WAKE_PHASE)
            .map_or("-".to_owned(), |(_, p)| {
                format!("{} / {}", ms(p.p50_ms), ms(p.p99_ms))
            });
        let metric_wake = match (f.daemon.wake_p50_ms, f.daemon.wake_p99_ms) {
            (Some(p50), Some(p99)) if f.hibernates() => format!("{} / {}", ms(p50), ms(p99)),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {served} | {} | {} | {st_wake} | {metric_wake} | {} |",
            f.function,
            l.n,
            cells.join(" | "),
            f.invocations.error_count()
        );
    }
    for (label, l) in others {
        let _ = writeln!(
            out,
            "| {label} | (same run) | {} | {} | {} | {} | {} | - | - | - |",
            l.n,
            ms(l.p50_ms),
            ms(l.p90_ms),
            ms(l.p99_ms),
            ms(l.max_ms)
        );
    }
    let verdicts: Vec<String> = h
        .functions
        .iter()
        .filter(|f| f.hibernates() && f.invocations.latency.n > 0)
        .filter_map(|f| {
            let warm = warm_reference(&h.functions, f)?.invocations.latency.p50_ms;
            if warm <= 0.0 {
                return None;
            }
            let l = &f.invocations.latency;
            let (r50, r99) = (l.p50_ms / warm, l.p99_ms / warm);
            let met = r50 <= TARGET_WAKE_P50_RATIO && r99 <= TARGET_WAKE_P99_RATIO;
            Some(format!(
                "{} **{}** (p50 {r50:.2}×, p99 {r99:.2}× of {} ms)",
                f.function,
                if met { "met" } else { "missed" },
                ms(warm)
            ))
        })
        .collect();
    if !verdicts.is_empty() {
        let _ = writeln!(
            out,
            "\nTarget wake-up + invoke p50 ≤ {TARGET_WAKE_P50_RATIO}× and p99 ≤ \
             {TARGET_WAKE_P99_RATIO}× the warm reference's p50 (same heap size, same run): {}.",
            verdicts.join(", ")
        );
    }

    out.push_str(
        "\n### Memory of an idle function, warm → hibernated (MiB)\n\n\
         Warm: after an invocation, once the pool has its ready clone again (for the hibernating \
         functions that is after a wake-up: pages never touched since may not be back); \
         hibernated: once the admin API reports the zygote asleep. Zygote memcg: the zygote \
         cgroup's charge, and what the hibernated one holds as anon / page cache; function \
         memcg: the whole function subtree (`status.memory_bytes`: zygote + ready clone); PSS \
         from smaps_rollup of the zygote and its ready clone together, then of the zygote alone \
         with its USS (a warm zygote shares most pages with its clone, so its own PSS and USS \
         grow once the clone is stopped). A hibernating function's own warm figures are taken \
         after a wake-up: its zygote then maps the snapshot, whose page cache is charged to the \
         daemon, so they are lower than the never-hibernating reference's.\n\n\
         Snapshot: its data, and how much of it the page cache holds while asleep (clean, \
         reclaimable without I/O loss, charged to the daemon rather than the function).\n\n\
         | function | zygote memcg | hibernated anon / file | function memcg | PSS, zygote + \
         clone | zygote PSS | zygote USS | snapshot / in page cache | hibernating took (mean) |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for f in &h.functions {
        let (w, a) = (f.warm, f.hibernated);
        let stat = a
            .and_then(|s| s.zygote_cgroup_stat)
            .map_or("-".to_owned(), |s| {
                format!("{:.1} / {:.1}", mib(s.anon_kib), mib(s.file_kib))
            });
        let snapshot = a
            .filter(|_| f.mode == "snapshot")
            .map_or("-".to_owned(), |s| {
                format!(
                    "{:.1} / {:.1}",
                    s.snapshot_bytes as f64 / 1048576.0,
                    s.snapshot_cached_bytes as f64 / 1048576.0
                )
            });
        let took = f
            .daemon
            .hibernate_mean_ms
            .map_or("-".to_owned(), |m| format!("{m:.1} ms"));
        let _ = writeln!(
            out,
            "| {} ({}) | {} | {stat} | {} | {} | {} | {} | {snapshot} | {took} |",
            f.function,
            f.label,
            warm_to_hibernated(
                w.and_then(|s| s.zygote_cgroup_kib),
                a.and_then(|s| s.zygote_cgroup_kib)
            ),
            warm_to_hibernated(
                w.map(|s| s.function_cgroup_kib),
                a.map(|s| s.function_cgroup_kib)
            ),
            warm_to_hibernated(w.map(|s| s.pss_kib()), a.map(|s| s.pss_kib())),
            warm_to_hibernated(w.map(|s| s.zygote.pss_kib), a.map(|s| s.zygote.pss_kib)),
            warm_to_hibernated(w.map(|s| s.zygote.uss_kib), a.map(|s| s.zygote.uss_kib)),
        );
    }
    let verdicts: Vec<String> = h
        .functions
        .iter()
        .filter(|f| f.hibernates())
        .filter_map(|f| {
            // Against the never-hibernating reference: a woken zygote's own
            // warm sample is low, its memory being page cache charged to
            // the daemon until written.
            let w = warm_reference(&h.functions, f)?.warm?.zygote_cgroup_kib?;
            let a = f.hibernated?.zygote_cgroup_kib?;
            let verdict = if (a as f64) <= w as f64 * TARGET_MEMORY_RATIO {
                "met"
            } else {
                "missed"
            };
            Some(format!(
                "{} **{verdict}** ({:.0}%)",
                f.function,
                percent(a, w)
            ))
        })
        .collect();
    if !verdicts.is_empty() {
        let _ = writeln!(
            out,
            "\nTarget hibernated ≤ {:.0}% of warm (zygote memcg, against the never-hibernating \
             reference of the same heap size): {}.",
            TARGET_MEMORY_RATIO * 100.0,
            verdicts.join(", ")
        );
    }

    if let Some(s) = &h.sharing {
        let pct = |n: u64| {
            if s.data_pages == 0 {
                0.0
            } else {
                n as f64 * 100.0 / s.data_pages as f64
            }
        };
        let mib = |b: u64| b as f64 / 1048576.0;
        let data = s.data_pages * 4096;
        let held = s.cached_bytes + s.base_cached_bytes;
        let _ = writeln!(
            out,
            "\n### Sharing across {} copies of the no-op (`hibernate_share_pages = true`)\n\n\
             Saved by the sleeping copies: {:.1} MiB of data; mapped from their group's \
             shared base ({} file): {:.1} MiB ({:.0}%). Page cache held: own snapshots \
             {:.1} MiB + base {:.1} MiB = {:.1} MiB, **{:.1}% of the {:.1} MiB unshared \
             snapshots would hold**.",
            s.copies,
            mib(data),
            s.bases,
            mib(s.shared_bytes),
            if data == 0 {
                0.0
            } else {
                s.shared_bytes as f64 * 100.0 / data as f64
            },
            mib(s.cached_bytes),
            mib(s.base_cached_bytes),
            mib(held),
            if data == 0 {
                0.0
            } else {
                held as f64 * 100.0 / data as f64
            },
            mib(data),
        );
        let _ = writeln!(
            out,
            "\nPage contents of the {} snapshot files: {} data pages; distinct contents {} \
             ({:.0}%: what content-addressed dedup would keep, at any address); pages whose \
             contents occur in ≥ 2 snapshots {} ({:.0}%); contents found in every snapshot {}. \
             The copies start with one address layout and hash seed (see \
             docs/hibernation.md), so most of their pages are identical at the same address.",
            s.snapshots,
            s.data_pages,
            s.distinct_pages,
            pct(s.distinct_pages),
            s.shared_pages,
            pct(s.shared_pages),
            s.in_every_copy,
        );
        if let Some(w) = &s.wake {
            let _ = writeln!(
                out,
                "\nEach copy then woken by a request (no kept clone, no prefetch: as \
                 `hib-snap-noprefetch` above, which shares nothing): wake-up + invoke p50 \
                 {:.3} ms, p99 {:.3} ms over {} copies; {} failed or not served as `wake`.",
                w.p50_ms,
                w.p99_ms,
                w.n,
                s.wake_failures.len()
            );
        }
        if let Some(first) = s.wake_failures.first() {
            let _ = writeln!(out, "\nFirst failed wake-up of a copy: {first}");
        }
    }

    out.push_str(
        "\n### What the daemon counted (/metrics, whole run)\n\n\
         | function | hibernations ok / failed | wake-ups ok / failed | faults per wake-up | \
         prefetched pages per wake-up | copied pages per wake-up |\n|---|--:|--:|--:|--:|--:|\n",
    );
    for f in h.functions.iter().filter(|f| f.hibernates()) {
        let d = &f.daemon;
        let per = |n: u64| {
            if d.wakes_ok == 0 {
                "-".to_owned()
            } else {
                format!("{:.0}", n as f64 / d.wakes_ok as f64)
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} / {} | {} / {} | {} | {} | {} |",
            f.function,
            d.hibernations_ok,
            d.hibernations_failed,
            d.wakes_ok,
            d.wakes_failed,
            per(d.wake_faults),
            per(d.wake_prefetched_pages),
            per(d.wake_copied_pages)
        );
    }

    if !h.budget.is_empty() {
        let _ = write!(
            out,
            "\n### Functions per {} MiB of memory\n\n\
             Warm: `{WARM_FN}` (zygote + ready clone, never hibernating); hibernated: the \
             function asleep. The daemon's own memory is not counted.\n\n\
             | function | basis | per function warm → hibernated (MiB) | functions warm → \
             hibernated | gain |\n|---|---|--:|--:|--:|\n",
            h.budget_mib
        );
        for r in &h.budget {
            let gain = if r.functions_warm == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{:.1}×",
                    r.functions_hibernated as f64 / r.functions_warm as f64
                )
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} → {:.1} | {} → {} | {gain} |",
                r.function,
                r.basis,
                mib(r.warm_kib),
                mib(r.hibernated_kib),
                r.functions_warm,
                r.functions_hibernated
            );
        }
    }

    let mut notes = h.notes.clone();
    for f in &h.functions {
        let errors = f.invocations.error_count();
        if errors > 0 {
            let kinds: Vec<String> = f
                .invocations
                .errors
                .iter()
                .map(|(k, c)| format!("{k}: {c}"))
                .collect();
            notes.push(format!(
                "{}: {errors} error(s) ({})",
                f.function,
                kinds.join(", ")
            ));
        }
        if !f.hibernates() && f.invocations.unexpected_starts() > 0 {
            notes.push(format!(
                "{}: {} of {} requests were not served by a ready clone",
                f.function,
                f.invocations.unexpected_starts(),
                f.invocations.latency.n
            ));
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "- **note:** {note}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hibernation::tests::report;

    #[test]
    fn markdown_shows_targets_ratios_and_notes() {
        let h = report();
        let others = [(
            "fnhost cold".to_owned(),
            Percentiles {
                n: 3,
                p50_ms: 27.0,
                p90_ms: 30.0,
                p99_ms: 31.0,
                max_ms: 31.0,
                mean_ms: 28.0,
            },
        )];
        let md = markdown(&h, &others);
        assert!(
            md.contains("| hib-snap | wake: snapshot | 1 | 2.000 | 2.000 | 2.000 | 2.000 | 1.500 / 1.500 | - | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| fnhost cold | (same run) | 3 | 27.000 |"),
            "{md}"
        );
        assert!(
            md.contains("hib-snap **met** (p50 1.00×, p99 1.00× of 2.000 ms)"),
            "{md}"
        );
        assert!(
            md.contains("| 20.0 → 2.0 (10%) | 1.0 / 1.0 | 30.0 → 4.0 (13%) | 10.0 → 1.0 (10%) |"),
            "{md}"
        );
        assert!(
            md.contains("hib-snap **met** (10%), hib-reclaim **missed** (90%)"),
            "{md}"
        );
        assert!(
            md.contains("| hib-snap | memory cgroup | 30.0 → 4.0 | 34 → 256 | 7.5× |"),
            "{md}"
        );
        assert!(
            md.contains("| hib-snap | 0 / 0 | 2 / 0 | 50 | 0 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "hib-reclaim: the hibernated zygote cgroup still holds 18.0 MiB, 90% of warm"
            ),
            "{md}"
        );
        assert_eq!(h.error_count(), 0);
    }
}
