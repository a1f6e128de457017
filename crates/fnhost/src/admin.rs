//! Admin CLI verbs: thin clients of the admin API (`fnhost functions …`,
//! `fnhost reload`, `fnhost status`).

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::cli::{AdminArgs, FunctionsCommand};

async fn request(
    args: &AdminArgs,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}{path}", args.admin_url.trim_end_matches('/'));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(&url)
        .header("content-type", "application/json");
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("FNHOST_ADMIN_TOKEN").ok())
        .or_else(|| fnhost_dispatch::admin_auth::read_token_file(&args.token_file).ok());
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let response = client
        .request(
            builder
                .body(Full::new(Bytes::from(body)))
                .context("invalid request")?,
        )
        .await
        .with_context(|| {
            format!("cannot reach the admin API at {url} (server.admin_listen; --admin-url)")
        })?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("cannot read the response")?
        .to_bytes();
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let message = value["errorMessage"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        bail!("{method} {url}: {status}: {message}");
    }
    Ok(value)
}

fn print(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

pub fn functions(args: AdminArgs, command: FunctionsCommand) -> anyhow::Result<()> {
    run(async move {
        let value = match command {
            FunctionsCommand::List => request(&args, "GET", "/admin/functions", Vec::new()).await?,
            FunctionsCommand::Get { name } => {
                request(
                    &args,
                    "GET",
                    &format!("/admin/functions/{name}"),
                    Vec::new(),
                )
                .await?
            }
            FunctionsCommand::Put { name, file } => {
                let body = if file == "-" {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                        .context("cannot read stdin")?;
                    buf
                } else {
                    std::fs::read(&file).with_context(|| format!("cannot read {file}"))?
                };
                request(&args, "PUT", &format!("/admin/functions/{name}"), body).await?
            }
            FunctionsCommand::Delete { name } => {
                request(
                    &args,
                    "DELETE",
                    &format!("/admin/functions/{name}"),
                    Vec::new(),
                )
                .await?
            }
        };
        print(&value);
        Ok(())
    })
}

pub fn reload(args: AdminArgs) -> anyhow::Result<()> {
    run(async move {
        print(&request(&args, "POST", "/admin/reload", Vec::new()).await?);
        Ok(())
    })
}

pub fn status(args: AdminArgs) -> anyhow::Result<()> {
    run(async move {
        print(&request(&args, "GET", "/admin/status", Vec::new()).await?);
        Ok(())
    })
}

fn run(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}
