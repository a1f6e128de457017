//! What `/metrics` shows of pools in each labelling, rendered by the
//! Prometheus exporter the daemon uses.

use metrics_exporter_prometheus::PrometheusBuilder;

use super::{Labels, PoolMetrics};

/// Runs `f` with a recorder of its own; returns the exposition text,
/// rendered while what `f` returns (the pools' metrics) is still alive.
fn render<T>(f: impl FnOnce() -> T) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let alive = metrics::with_local_recorder(&recorder, f);
    let text = handle.render();
    drop(alive);
    text
}

fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(name)).collect()
}

#[test]
fn per_function_labels_every_series() {
    let text = render(|| {
        let a = PoolMetrics::new("a", Labels::PerFunction);
        let b = PoolMetrics::new("b", Labels::PerFunction);
        a.zygotes.set(2.0);
        b.zygotes.set(1.0);
        a.cold_starts.increment(1);
        a.phase.handler.record(0.001);
        (a, b)
    });
    assert!(
        text.contains("fnhost_pool_zygotes{function=\"a\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("fnhost_pool_zygotes{function=\"b\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fnhost_cold_starts_total{function=\"a\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fnhost_phase_seconds_count{function=\"a\",phase=\"handler\"} 1"),
        "{text}"
    );
}

#[test]
fn summed_has_no_function_label_and_adds_up() {
    let text = render(|| {
        let pools: Vec<PoolMetrics> = (0..50)
            .map(|i| PoolMetrics::new(&format!("f{i}"), Labels::Summed))
            .collect();
        for (i, pool) in pools.iter().enumerate() {
            pool.zygotes.set(1.0);
            pool.cold_starts.increment(1);
            pool.phase.handler.record(0.001 * i as f64);
            pool.wakes.increment(2);
        }
        // A later set replaces that pool's share, it does not add to it.
        pools[0].zygotes.set(3.0);
        pools[1].zygotes.set(0.0);
        pools
    });
    assert!(!text.contains("function="), "{text}");
    assert_eq!(
        lines_of(&text, "fnhost_pool_zygotes "),
        ["fnhost_pool_zygotes 51"]
    );
    assert_eq!(
        lines_of(&text, "fnhost_cold_starts_total "),
        ["fnhost_cold_starts_total 50"]
    );
    assert!(
        text.contains("fnhost_wakes_total{result=\"ok\"} 100"),
        "{text}"
    );
    assert!(
        text.contains("fnhost_phase_seconds_count{phase=\"handler\"} 50"),
        "{text}"
    );
}

#[test]
fn a_dropped_pool_takes_its_gauge_share_out() {
    let text = render(|| {
        let kept = PoolMetrics::new("kept", Labels::Summed);
        let gone = PoolMetrics::new("gone", Labels::Summed);
        kept.memory.set(100.0);
        gone.memory.set(40.0);
        let clone = gone.clone();
        drop(gone);
        clone.memory.increment(2.0);
        drop(clone);
        kept
    });
    assert_eq!(
        lines_of(&text, "fnhost_function_memory_bytes "),
        ["fnhost_function_memory_bytes 100"]
    );
}

#[test]
fn summed_exposition_does_not_grow_with_functions() {
    let size = |n: usize| {
        render(|| {
            let pools: Vec<PoolMetrics> = (0..n)
                .map(|i| PoolMetrics::new(&format!("f{i:05}"), Labels::Summed))
                .collect();
            for pool in &pools {
                pool.phase.invoke_total.record(0.002);
                pool.zygotes.set(1.0);
            }
            pools
        })
        .len()
    };
    // Only the digits of sums and counts may differ.
    let (small, large) = (size(10), size(2000));
    assert!(
        large < small + 200,
        "{small} bytes at 10 functions, {large} at 2000"
    );
}

#[test]
fn a_detailed_function_keeps_its_labels_on_a_summed_host() {
    assert_eq!(Labels::Summed.for_function(true), Labels::PerFunction);
    assert_eq!(Labels::Summed.for_function(false), Labels::Summed);
    assert_eq!(Labels::PerFunction.for_function(false), Labels::PerFunction);
    let text = render(|| {
        let watched = PoolMetrics::new("watched", Labels::Summed.for_function(true));
        let other = PoolMetrics::new("other", Labels::Summed.for_function(false));
        watched.cold_starts.increment(1);
        other.cold_starts.increment(2);
        (watched, other)
    });
    let cold = lines_of(&text, "fnhost_cold_starts_total");
    assert!(
        cold.contains(&"fnhost_cold_starts_total{function=\"watched\"} 1"),
        "{text}"
    );
    assert!(cold.contains(&"fnhost_cold_starts_total 2"), "{text}");
    assert!(!text.contains("function=\"other\""), "{text}");
}

#[test]
fn labels_follow_the_function_count() {
    assert_eq!(Labels::for_host(100, 100), Labels::PerFunction);
    assert_eq!(Labels::for_host(101, 100), Labels::Summed);
    assert_eq!(Labels::for_host(1, 0), Labels::Summed);
}
