//! fnhost: a high-density serverless function host. This binary only wires
//! the crates together: CLI, config loading, telemetry, the host and the
//! HTTP server, and the zygote init entry point.
#![forbid(unsafe_code)]

mod admin;
mod cli;
mod descriptors;
mod image;
mod invoke;
mod serve;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // Must run before anything starts a thread: it forks.
        Command::ZygoteInit => fnhost_zygote::init::run(),
        Command::Serve(args) => serve::run(args),
        Command::CheckConfig(args) => serve::check_config(args),
        Command::Invoke(args) => invoke::run(args),
        Command::Functions { admin, command } => admin::functions(admin, command),
        Command::Reload(args) => admin::reload(args),
        Command::Status(args) => admin::status(args),
        Command::Image { store, command } => image::run(store, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fnhost: error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping a cause whose text the
/// message before it already includes (most messages embed their source).
fn error_chain(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}
