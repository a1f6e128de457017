//! fnhost-probe: runs inside a sandbox, tries every escape and privileged
//! operation it knows, and prints a JSON report
//! `{attack: {"denied": bool, "detail": "..."}}` on stdout. The isolation
//! tests assert on that report; nothing here asserts anything itself.
//!
//! Usage: `fnhost-probe [--pids PID,PID,...] [--port PORT]` where `--pids`
//! are host pids the sandbox must not be able to see or touch (the daemon,
//! zygotes, other clones) and `--port` a host loopback port it must not
//! reach.
//!
//! Every attempt is chosen so that, should it unexpectedly succeed, it does
//! no harm outside the probe: nothing is ever written to a kernel knob that
//! opened, reboot is asked for an invalid-in-a-pid-namespace command, the
//! clock is "set" on a clock that cannot be set, and so on.

mod kernel;
mod mounts;
mod namespaces;
mod network;
mod outcome;
mod privileges;
mod processes;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use outcome::Outcome;

fn parse_args() -> (Vec<i32>, Option<u16>) {
    let mut pids = Vec::new();
    let mut port = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--pids" => {
                pids = args
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|p| p.trim().parse().ok())
                    .collect()
            }
            "--port" => port = args.next().and_then(|p| p.parse().ok()),
            other => {
                eprintln!("fnhost-probe: unknown argument {other:?}; usage: fnhost-probe [--pids P,P] [--port N]");
                std::process::exit(2);
            }
        }
    }
    (pids, port)
}

fn main() {
    let (pids, port) = parse_args();
    let mut report: BTreeMap<&'static str, Outcome> = BTreeMap::new();
    for group in [
        mounts::mounts(),
        namespaces::namespaces(),
        processes::processes(&pids),
        kernel::kernel_interfaces(),
        network::sockets(port),
        mounts::filesystem(),
        privileges::privileges(),
    ] {
        report.extend(group);
    }
    let json: serde_json::Map<String, Value> = report
        .into_iter()
        .map(|(name, o)| {
            (
                name.to_string(),
                json!({ "denied": o.denied, "detail": o.detail }),
            )
        })
        .collect();
    println!("{}", Value::Object(json));
}
