//! Logging (tracing to stderr) and the Prometheus metrics recorder.

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber: `FNHOST_LOG` (or `RUST_LOG`) filters,
/// default `info`.
pub fn init_logging() {
    let filter = std::env::var("FNHOST_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Installs the metrics recorder; histograms get buckets from 25 µs to 30 s.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    const BUCKETS: &[f64] = &[
        0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
        0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    // Page faults of one clone: a handful to tens of thousands, finer where
    // a no-op's fall (~20 per invocation, ~400 before it).
    const FAULT_BUCKETS: &[f64] = &[
        5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0,
        400.0, 450.0, 500.0, 600.0, 800.0, 1000.0, 2000.0, 5000.0, 10000.0, 50000.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), BUCKETS)
        .context("invalid histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full("fnhost_clone_page_faults".to_string()),
            FAULT_BUCKETS,
        )
        .context("invalid histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")
}
