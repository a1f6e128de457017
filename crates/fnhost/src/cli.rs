//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// fnhost: serverless functions in fresh clones of warm zygote containers.
///
/// Quick start (as root, from the repository root):
///   fnhost serve                      # embedded default config, function `hello`
///   fnhost invoke hello --data '{"name":"x"}'
#[derive(Debug, Parser)]
#[command(name = "fnhost", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the host: HTTP invoke API, /healthz, /metrics.
    Serve(ServeArgs),
    /// Validate a config file and print what it defines.
    CheckConfig(ConfigArgs),
    /// Invoke a function on a running host and print its response.
    Invoke(InvokeArgs),
    /// Internal: PID 1 of a zygote container (started by `serve`).
    #[command(name = "__zygote-init", hide = true)]
    ZygoteInit,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Config file. Without it, the embedded default (config/fnhost.toml),
    /// with relative paths resolved against ./config.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Override server.listen (e.g. 127.0.0.1:0 for a free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Override server.state_dir.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// Function name.
    pub function: String,
    /// JSON payload, or @FILE to read it from a file, or @- for stdin.
    #[arg(long, short, default_value = "{}")]
    pub data: String,
    /// Base URL of the host.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Print the response status and fnhost headers to stderr.
    #[arg(long, short)]
    pub verbose: bool,
}
