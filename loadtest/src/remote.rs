//! `run`: drive a host that is already running.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;

use crate::cli::RunArgs;
use crate::compare::{command_line, run_options, sampled};
use crate::memory;
use crate::report::{Comparison, RunContext, RunReport};
use crate::runner::{self, get_text, Target};
use crate::workload;

pub async fn run(args: &RunArgs, stop: Arc<AtomicBool>) -> anyhow::Result<Comparison> {
    let client = runner::http_client();
    let base = args.url.trim_end_matches('/').to_string();
    let functions = if args.functions.is_empty() {
        let health = get_text(&client, &format!("{base}/healthz"))
            .await
            .context("cannot list the host's functions")?;
        let v: serde_json::Value = serde_json::from_str(&health).context("/healthz is not JSON")?;
        v["functions"]
            .as_array()
            .context("/healthz has no functions list; pass --function")?
            .iter()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect()
    } else {
        args.functions.clone()
    };
    anyhow::ensure!(!functions.is_empty(), "the host defines no function");
    let workload = workload::build(&args.workload, functions.len())?;
    let opts = run_options(&args.client)?;
    eprintln!(
        "fnhost-loadtest: {} against {base} ({})",
        workload.description,
        functions.join(", ")
    );
    let usage = memory::usage_file(Path::new("/sys/fs/cgroup"), &args.cgroup_root);
    if usage.is_none() {
        eprintln!(
            "fnhost-loadtest: no memory usage file for cgroup root '{}'; memory not reported",
            args.cgroup_root
        );
    }
    let target = Target {
        base_url: base.clone(),
        functions,
    };
    let (result, memory) = sampled(
        usage,
        runner::run(&client, &workload.schedule, &target, &opts, stop),
    )
    .await;
    let result = result?;
    let report = RunReport::new(
        &result.recorder,
        RunContext {
            label: base,
            scheduled: workload.schedule.arrivals.len() as u64,
            unsent: result.unsent,
            span: workload.schedule.span,
            wall: result.wall,
            memory,
        },
    );
    Ok(Comparison {
        command: command_line(),
        workload: workload.description,
        runs: vec![report],
    })
}
