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
    /// List, show, create/update or delete functions on a running host.
    Functions {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: FunctionsCommand,
    },
    /// Make a running host re-read its config file (like SIGHUP).
    Reload(AdminArgs),
    /// Show a running host's memory budget and pools.
    Status(AdminArgs),
    /// Import container images into the layer store, or list them.
    Image {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        command: ImageCommand,
    },
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

/// How to reach the admin API.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of the admin API (server.admin_listen).
    #[arg(long, global = true, default_value = "http://127.0.0.1:8081")]
    pub admin_url: String,
    /// Bearer token (server.admin_token); default: $FNHOST_ADMIN_TOKEN, else
    /// the token the host generated in --token-file.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Token file a host without server.admin_token writes at start
    /// (<server.state_dir>/admin.token; root only).
    #[arg(long, global = true, default_value_os_t = default_token_file())]
    pub token_file: std::path::PathBuf,
}

/// The token file of a host on the default `server.state_dir`.
fn default_token_file() -> std::path::PathBuf {
    fnhost_config::ServerConfig::default()
        .state_dir
        .join(fnhost_dispatch::admin_auth::TOKEN_FILE)
}

/// Where the layer store is: `<state_dir>/layers`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Config file whose server.state_dir holds the store (default: the
    /// embedded default config).
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Override server.state_dir.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an image: an OCI image layout (directory or tar), a `docker
    /// save` archive, a rootfs tarball (plain, gzip or zstd) or a directory.
    /// Functions then use it with image = "NAME:TAG".
    Import {
        /// The image file or directory.
        path: PathBuf,
        /// Name and tag to record it under, e.g. python:3.11.
        #[arg(long)]
        name: String,
    },
    /// List imported images with their layers.
    List,
}

#[derive(Debug, Subcommand)]
pub enum FunctionsCommand {
    /// List functions with their pool status.
    List,
    /// Show one function.
    Get { name: String },
    /// Create or update a function from a JSON object of config keys
    /// (e.g. {"runtime":"python3","code":"/srv/fn","handler":"app.handler"}).
    Put {
        name: String,
        /// JSON file, or - for stdin.
        #[arg(long, short)]
        file: String,
    },
    /// Delete a function (in-flight invocations finish first).
    Delete { name: String },
}
