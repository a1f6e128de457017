//! Hand-written SVG charts of a report: latency CDFs (log time axis; one
//! for the Python no-op and its baselines, one for the Node functions),
//! where the server-side time goes (100% stacked bars per start kind),
//! throughput per concurrency, memory per clone against the target, and
//! hibernation (memory of an idle function, wake-up latency).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::hibernation::{Hibernation, TARGET_WAKE_P50_RATIO, WARM_FN};
use crate::metrics::ZYGOTE_PHASE;
use crate::report::Report;

const PALETTE: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Phases stacked in the breakdown chart, in execution order.
const STACKED_PHASES: &[(&str, &str)] = &[
    ("queue", "queue"),
    (ZYGOTE_PHASE, "runtime start + import"),
    ("clone", "namespaces + fork"),
    ("cgroup_attach", "cgroup"),
    ("mount", "mounts"),
    ("drop_privileges", "drop privileges"),
    ("handler", "handler"),
    ("exchange", "response"),
    ("dispatch", "dispatcher"),
];

struct Svg {
    body: String,
    width: u32,
    height: u32,
}

impl Svg {
    fn new(width: u32, height: u32, title: &str) -> Self {
        let mut svg = Self {
            body: String::new(),
            width,
            height,
        };
        svg.text(f64::from(width) / 2.0, 22.0, title, "middle", 15, "bold");
        svg
    }

    fn text(&mut self, x: f64, y: f64, s: &str, anchor: &str, size: u32, weight: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}" font-weight="{weight}">{}</text>"#,
            escape(s)
        );
    }

    fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), stroke: &str, dash: bool) {
        let dash = if dash {
            r#" stroke-dasharray="4 3""#
        } else {
            ""
        };
        let _ = writeln!(
            self.body,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{stroke}"{dash}/>"#
        );
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{fill}"/>"#,
            w.max(0.0),
            h.max(0.0)
        );
    }

    fn finish(self) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{}</svg>\n",
            self.body,
            w = self.width,
            h = self.height
        )
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes every chart the report has data for; returns the files written.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut charts = Vec::new();
    let mut series: Vec<(String, &[f64])> = report
        .scenarios
        .0
        .iter()
        .filter(|(_, s)| !s.cdf_ms.is_empty() && s.latency.n > 0)
        .map(|(label, s)| (format!("fnhost {label}"), s.cdf_ms.as_slice()))
        .collect();
    for b in report.baselines.iter().flatten() {
        if !b.cdf_ms.is_empty() {
            series.push((b.name.clone(), b.cdf_ms.as_slice()));
        }
    }
    for s in report.floor.iter().flat_map(|f| &f.servers) {
        if !s.cdf_ms.is_empty() && s.workers == 1 {
            series.push(("floor (fork per request)".to_owned(), s.cdf_ms.as_slice()));
        }
    }
    if !series.is_empty() {
        charts.push((
            "latency-cdf.svg",
            latency_cdf("Latency CDF (log time axis)", &series),
        ));
    }
    if let Some(node) = &report.node {
        let series = node.cdf_series();
        if !series.is_empty() {
            charts.push((
                "node-latency-cdf.svg",
                latency_cdf(
                    "Node.js: fnhost vs crun run and node -e start-to-exit (log time axis)",
                    &series,
                ),
            ));
        }
    }
    if let Some(phases) = &report.phase_metrics {
        let bars: Vec<(String, Vec<f64>)> = report
            .scenarios
            .0
            .iter()
            .filter_map(|(label, s)| {
                let p = phases.get(&s.function)?;
                // A zygote start is per request only for cold starts; for
                // the others it happened once, before the measurement.
                let cold = s.expected_start == "cold-start";
                let values = STACKED_PHASES
                    .iter()
                    .map(|(name, _)| match p.get(*name) {
                        Some(_) if *name == ZYGOTE_PHASE && !cold => 0.0,
                        Some(m) => m.p50_ms,
                        None => 0.0,
                    })
                    .collect();
                Some((label.clone(), values))
            })
            .collect();
        if !bars.is_empty() {
            charts.push(("phases.svg", phase_breakdown(&bars)));
        }
    }
    if let Some(tput) = &report.throughput {
        // The floor's best 2-worker rate of this run, as a reference.
        let floor_peak = report
            .floor
            .as_ref()
            .and_then(|f| f.server(2))
            .and_then(|s| s.throughput.iter().map(|l| l.rps).reduce(f64::max));
        let floor_label = floor_peak.map(|r| format!("floor, 2 workers: {r:.0}/s"));
        let mut refs = vec![(2000.0, "target 2000/s")];
        if let (Some(rps), Some(label)) = (floor_peak, &floor_label) {
            refs.push((rps, label.as_str()));
        }
        let bars: Vec<(String, f64, String)> = tput
            .iter()
            .map(|l| {
                (
                    format!("K={}", l.clients),
                    l.rps,
                    format!(
                        "{:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
                        l.rps, l.latency.p50_ms, l.latency.p99_ms
                    ),
                )
            })
            .collect();
        charts.push((
            "throughput.svg",
            bar_chart(
                "Throughput: isolated invocations per second (closed loop, K connections)",
                &bars,
                &refs,
            ),
        ));
    }
    if let Some(d) = &report.density {
        let mib = |kib: f64| kib / 1024.0;
        let mut bars = vec![
            (
                "clone PSS".to_owned(),
                mib(d.clone_pss_kib_mean),
                String::new(),
            ),
            (
                "clone USS".to_owned(),
                mib(d.clone_uss_kib_mean),
                String::new(),
            ),
        ];
        if let Some(cg) = d.clone_cgroup_kib_mean {
            bars.push(("clone memcg".to_owned(), mib(cg), String::new()));
        }
        bars.push((
            "host per clone".to_owned(),
            mib(d.host_kib_per_clone),
            String::new(),
        ));
        for bar in &mut bars {
            bar.2 = format!("{:.2} MiB", bar.1);
        }
        let title = format!(
            "Memory per idle ready clone, MiB ({} clones; zygote PSS {:.1} MiB)",
            d.clones_live,
            mib(d.zygote_pss_kib as f64)
        );
        charts.push((
            "density.svg",
            bar_chart(&title, &bars, &[(1.5, "target 1.5 MiB")]),
        ));
    }
    if let Some(h) = &report.hibernation {
        charts.extend(hibernation_charts(h));
    }
    let mut written = Vec::new();
    for (name, svg) in charts {
        let path = dir.join(name);
        fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Memory of each function's subtree warm (the reference) and hibernated,
/// and the wake-up + invoke p50 against the target.
fn hibernation_charts(h: &Hibernation) -> Vec<(&'static str, String)> {
    let mut charts = Vec::new();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut memory: Vec<(String, f64, String)> = Vec::new();
    for f in &h.functions {
        let (label, sample) = if f.mode == "never" {
            ("warm (never hibernates)".to_owned(), f.warm)
        } else {
            (f.label.clone(), f.hibernated)
        };
        if let Some(s) = sample {
            let v = mib(s.function_cgroup_kib);
            memory.push((label, v, format!("{v:.1} MiB")));
        }
    }
    // The warm reference first, then the modes asleep.
    memory.sort_by_key(|(label, _, _)| !label.starts_with("warm"));
    if !memory.is_empty() {
        charts.push((
            "hibernation-memory.svg",
            bar_chart(
                "Memory of an idle function (zygote + ready clone cgroups), MiB",
                &memory,
                &[],
            ),
        ));
    }
    let wake: Vec<(String, f64, String)> = h
        .functions
        .iter()
        .filter(|f| f.invocations.latency.n > 0)
        .map(|f| {
            let l = &f.invocations.latency;
            let label = if f.mode == "never" {
                "ready clone (warm)".to_owned()
            } else {
                f.label.clone()
            };
            (
                label,
                l.p50_ms,
                format!("p50 {:.2}, p99 {:.2} ms", l.p50_ms, l.p99_ms),
            )
        })
        .collect();
    // The target line: 3x the no-op warm reference's p50 of this run.
    let warm_p50 = h
        .functions
        .iter()
        .find(|f| f.function == WARM_FN && f.invocations.latency.n > 0)
        .map(|f| f.invocations.latency.p50_ms * TARGET_WAKE_P50_RATIO);
    if !wake.is_empty() {
        let target = format!("target p50 {TARGET_WAKE_P50_RATIO}× warm");
        let lines: Vec<(f64, &str)> = warm_p50.map(|t| (t, target.as_str())).into_iter().collect();
        charts.push((
            "hibernation-wake.svg",
            bar_chart(
                "Wake-up + invoke latency, p50 (ms, client side)",
                &wake,
                &lines,
            ),
        ));
    }
    charts
}

/// Latency CDFs on a log time axis; each series is 101 quantile points.
fn latency_cdf(title: &str, series: &[(String, &[f64])]) -> String {
    let (w, h) = (860.0, 420.0);
    let (left, right, top, bottom) = (60.0, 260.0, 40.0, 50.0);
    let positive = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| *v > 0.0);
    let (min, max) = positive.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo_decade = min.max(0.001).log10().floor();
    let hi_decade = max.max(min * 10.0).log10().ceil();
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let x = |ms: f64| {
        left + (ms.max(10f64.powf(lo_decade)).log10() - lo_decade) / (hi_decade - lo_decade)
            * plot_w
    };
    let y = |q: f64| top + (1.0 - q) * plot_h;
    let mut svg = Svg::new(w as u32, h as u32, title);
    for decade in lo_decade as i32..=hi_decade as i32 {
        let v = 10f64.powi(decade);
        svg.line((x(v), top), (x(v), top + plot_h), "#ddd", false);
        let label = if v >= 1.0 {
            format!("{v:.0} ms")
        } else {
            format!("{v} ms")
        };
        svg.text(x(v), top + plot_h + 18.0, &label, "middle", 11, "normal");
    }
    for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
        svg.line((left, y(q)), (left + plot_w, y(q)), "#eee", q != 0.0);
        // 0.99 sits too close to 1 for a label on the left; it goes right.
        let (x, anchor) = if q == 0.99 {
            (left + plot_w + 4.0, "start")
        } else {
            (left - 6.0, "end")
        };
        svg.text(x, y(q) + 4.0, &format!("{q}"), anchor, 10, "normal");
    }
    svg.line(
        (left, top + plot_h),
        (left + plot_w, top + plot_h),
        "#333",
        false,
    );
    svg.line((left, top), (left, top + plot_h), "#333", false);
    svg.text(
        left + plot_w / 2.0,
        h - 12.0,
        "latency (ms)",
        "middle",
        12,
        "normal",
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(q, ms)| format!("{:.1},{:.1}", x(*ms), y(q as f64 / 100.0)))
            .collect();
        let _ = writeln!(
            svg.body,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = top + 30.0 + i as f64 * 20.0;
        svg.rect(w - right + 32.0, ly - 8.0, 14.0, 10.0, color);
        let p50 = points.get(50).copied().unwrap_or_default();
        svg.text(
            w - right + 52.0,
            ly + 1.0,
            &format!("{name} (p50 {p50:.2})"),
            "start",
            11,
            "normal",
        );
    }
    svg.finish()
}

/// One 100%-stacked horizontal bar per start kind (p50 of each phase).
fn phase_breakdown(bars: &[(String, Vec<f64>)]) -> String {
    let (w, left, right, top) = (760.0, 90.0, 30.0, 40.0);
    let bar_h = 34.0;
    let legend_top = top + bars.len() as f64 * (bar_h + 16.0) + 10.0;
    let h = legend_top + 75.0;
    let plot_w = w - left - right;
    let mut svg = Svg::new(
        w as u32,
        h as u32,
        "Where the server-side time goes (share of summed phase p50s)",
    );
    for (i, (label, values)) in bars.iter().enumerate() {
        let total: f64 = values.iter().sum();
        let y = top + i as f64 * (bar_h + 16.0);
        svg.text(left - 8.0, y + bar_h / 2.0 + 4.0, label, "end", 12, "bold");
        if total <= 0.0 {
            continue;
        }
        let mut x = left;
        for (j, v) in values.iter().enumerate() {
            let width = v / total * plot_w;
            svg.rect(x, y, width, bar_h, PALETTE[j % PALETTE.len()]);
            if width > 40.0 {
                svg.text(
                    x + width / 2.0,
                    y + bar_h / 2.0 + 4.0,
                    &format!("{v:.2}"),
                    "middle",
                    10,
                    "normal",
                );
            }
            x += width;
        }
        svg.text(
            left + plot_w,
            y + bar_h + 12.0,
            &format!("sum of p50s {total:.2} ms"),
            "end",
            10,
            "normal",
        );
    }
    for (j, (_, name)) in STACKED_PHASES.iter().enumerate() {
        let (col, row) = (j % 4, j / 4);
        let x = left + col as f64 * 165.0;
        let y = legend_top + row as f64 * 22.0;
        svg.rect(x, y, 12.0, 10.0, PALETTE[j % PALETTE.len()]);
        svg.text(x + 16.0, y + 9.0, name, "start", 11, "normal");
    }
    svg.finish()
}

/// Vertical bars with value labels and dashed reference lines (a target,
/// the floor) labelled at their right end.
fn bar_chart(title: &str, bars: &[(String, f64, String)], refs: &[(f64, &str)]) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 380.0, 60.0, 30.0, 50.0, 60.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = bars
        .iter()
        .map(|b| b.1)
        .chain(refs.iter().map(|r| r.0))
        .fold(0.0f64, f64::max)
        * 1.15;
    let max = if max > 0.0 { max } else { 1.0 };
    let y = |v: f64| top + plot_h - v / max * plot_h;
    let mut svg = Svg::new(w as u32, h as u32, title);
    svg.line(
        (left, top + plot_h),
        (left + plot_w, top + plot_h),
        "#333",
        false,
    );
    let slot = plot_w / bars.len().max(1) as f64;
    for (i, (label, value, text)) in bars.iter().enumerate() {
        let x = left + i as f64 * slot + slot * 0.15;
        svg.rect(
            x,
            y(*value),
            slot * 0.7,
            top + plot_h - y(*value),
            PALETTE[0],
        );
        svg.text(
            x + slot * 0.35,
            y(*value) - 6.0,
            text,
            "middle",
            10,
            "normal",
        );
        svg.text(
            x + slot * 0.35,
            top + plot_h + 18.0,
            label,
            "middle",
            11,
            "normal",
        );
    }
    for (i, (value, label)) in refs.iter().enumerate() {
        let colour = if i == 0 { "#d62728" } else { "#7f7f7f" };
        svg.line((left, y(*value)), (left + plot_w, y(*value)), colour, true);
        svg.text(left + plot_w, y(*value) - 4.0, label, "end", 11, "normal");
    }
    svg.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed() {
        let cdf: Vec<f64> = (0..=100).map(|i| 0.5 + f64::from(i) * 0.01).collect();
        let svg = latency_cdf("CDF", &[("fnhost <warm>".to_owned(), &cdf)]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("fnhost &lt;warm&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        let bars = phase_breakdown(&[("warm".to_owned(), vec![0.1; STACKED_PHASES.len()])]);
        assert_eq!(bars.matches("<rect").count(), 1 + 2 * STACKED_PHASES.len());
        let chart = bar_chart("t", &[("a".to_owned(), 1.0, "1".to_owned())], &[(2.0, "x")]);
        assert!(chart.contains("stroke-dasharray"));
    }

    #[test]
    fn node_suite_gets_its_own_cdf_chart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut report = Report::new(
            "x".to_owned(),
            crate::report::Machine::detect(),
            "t".to_owned(),
        );
        report.node = Some(crate::node::tests::bench());
        let written = write_all(&report, dir.path()).expect("charts written");
        assert_eq!(written, [dir.path().join("node-latency-cdf.svg")]);
        let svg = fs::read_to_string(&written[0]).expect("readable");
        assert_eq!(svg.matches("<polyline").count(), 8, "{svg}");
        assert!(svg.contains("crun run, heavy"), "{svg}");
    }

    #[test]
    fn hibernation_charts_have_the_reference_first() {
        let charts = hibernation_charts(&crate::hibernation::tests::report());
        let names: Vec<&str> = charts.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["hibernation-memory.svg", "hibernation-wake.svg"]);
        let memory = &charts[0].1;
        let warm = memory
            .find("warm (never hibernates)")
            .expect("reference bar");
        let snap = memory.find(">snapshot<").expect("snapshot bar");
        assert!(warm < snap, "{memory}");
        assert!(charts[1].1.contains("target p50 3× warm"));
    }
}
