//! `fnhost invoke`: a small HTTP client for the invoke API.

use std::io::Read;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::cli::InvokeArgs;

fn payload(data: &str) -> anyhow::Result<Vec<u8>> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the payload from stdin")?;
            Ok(buf)
        }
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read the payload from {path}"))
        }
        None => Ok(data.as_bytes().to_vec()),
    }
}

pub fn run(args: InvokeArgs) -> anyhow::Result<()> {
    let body = payload(&args.data)?;
    let url = format!(
        "{}/v1/functions/{}/invoke",
        args.url.trim_end_matches('/'),
        args.function
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = hyper::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .context("invalid request")?;
        let response = client
            .request(request)
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        if args.verbose {
            eprintln!("{status}");
            for (name, value) in response.headers() {
                if name.as_str().starts_with("x-fnhost") || name == "server-timing" {
                    eprintln!("{name}: {}", value.to_str().unwrap_or("?"));
                }
            }
        }
        let body = response
            .into_body()
            .collect()
            .await
            .context("cannot read the response")?
            .to_bytes();
        println!("{}", String::from_utf8_lossy(&body));
        if !status.is_success() {
            bail!("{url} answered {status}");
        }
        Ok(())
    })
}
