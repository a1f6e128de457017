//! The admin API, on its own listener: list, create-or-update and delete
//! functions, pool status, config reload. Who may call it is decided by
//! [`crate::admin_auth`].

use std::sync::Arc;

use fnhost_config::FunctionSpec;
use fnhost_pool::ReloadReport;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

use crate::admin_auth::{AdminAuth, Refusal};
use crate::control::{Control, ControlError};
use crate::response::{self, Body};

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 1 << 20;

/// What the admin handlers share.
pub struct Admin {
    pub control: Arc<Control>,
    pub auth: AdminAuth,
}

fn describe(spec: &FunctionSpec, status: Option<fnhost_pool::PoolStatus>) -> serde_json::Value {
    let p = spec.pool;
    let l = spec.limits;
    serde_json::json!({
        "name": spec.name,
        "runtime": spec.runtime.as_str(),
        "code": spec.code,
        "handler": spec.handler,
        "memory_mb": l.memory_mb, "cpu": l.cpu, "pids": l.pids, "timeout_ms": l.timeout_ms,
        "writable_layer_mb": l.writable_layer_mb,
        "zygotes": p.zygotes, "ready_clones": p.ready_clones, "max_concurrency": p.max_concurrency,
        "queue_timeout_ms": p.queue_timeout_ms, "idle_ttl_ms": p.idle_ttl_ms, "prewarm": p.prewarm, "burst": p.burst,
        "hibernate_after_ms": p.hibernate_after_ms, "hibernate_mode": p.hibernate_mode.as_str(),
        "hibernate_prefetch": p.hibernate_prefetch,
        "hibernate_ready_clones": p.hibernate_ready_clones,
        "hibernate_share_pages": p.hibernate_share_pages,
        "detailed_metrics": spec.detailed_metrics,
        "env": spec.env,
        "status": status,
    })
}

fn report(r: ReloadReport) -> Response<Body> {
    response::json(
        StatusCode::OK,
        serde_json::to_string(&r).unwrap_or_default(),
    )
}

fn refused(e: ControlError) -> Response<Body> {
    let status = match &e {
        ControlError::Edit(fnhost_config::edit::EditError::NotFound(_)) => StatusCode::NOT_FOUND,
        ControlError::Host(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    };
    response::error(
        status,
        "ConfigRefused",
        format!("{e}; the running config is unchanged"),
    )
}

/// Routes one admin request.
pub async fn handle(
    admin: Arc<Admin>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    if let Err(refusal) = admin.auth.check(req.headers()) {
        let message = admin.auth.explain(refusal);
        let r = match refusal {
            Refusal::Token => {
                let mut r = response::error(StatusCode::UNAUTHORIZED, "Unauthorized", message);
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            Refusal::Host => response::error(StatusCode::FORBIDDEN, "HostNotAllowed", message),
        };
        return Ok(r);
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let host = admin.control.host.clone();
    let r = match (req.method(), segments.as_slice()) {
        (&Method::GET, ["admin", "functions"]) => {
            let status = host.status();
            let list: Vec<serde_json::Value> = host
                .function_names()
                .iter()
                .filter_map(|n| host.pool(n))
                .map(|pool| describe(&pool.spec, status.get(pool.name()).copied()))
                .collect();
            response::json(StatusCode::OK, serde_json::Value::Array(list).to_string())
        }
        (&Method::GET, ["admin", "functions", name]) => match host.pool(name) {
            Some(pool) => response::json(StatusCode::OK, describe(&pool.spec, Some(pool.status())).to_string()),
            None => response::error(StatusCode::NOT_FOUND, "FunctionNotFound", format!("function '{name}' is not defined")),
        },
        (&Method::PUT, ["admin", "functions", name]) => {
            let name = name.to_string();
            let body = match Limited::new(req.into_body(), MAX_ADMIN_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return Ok(response::error(StatusCode::BAD_REQUEST, "InvalidRequestContent", format!("cannot read body: {e}"))),
            };
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(entry) => match admin.control.upsert_function(&name, &entry).await {
                    Ok(r) => report(r),
                    Err(e) => refused(e),
                },
                Err(e) => response::error(StatusCode::BAD_REQUEST, "InvalidRequestContent", format!("body is not JSON: {e}")),
            }
        }
        (&Method::DELETE, ["admin", "functions", name]) => match admin.control.delete_function(name).await {
            Ok(r) => report(r),
            Err(e) => refused(e),
        },
        (&Method::POST, ["admin", "reload"]) => match admin.control.reload().await {
            Ok(r) => report(r),
            Err(e) => refused(e),
        },
        (&Method::GET, ["admin", "status"]) => {
            let (budget, used) = host.memory();
            let body = serde_json::json!({
                "memory": { "budget_bytes": budget, "used_bytes": used },
                "cgroups": host.cgroup_layout(),
                "pools": host.status(),
            });
            response::json(StatusCode::OK, body.to_string())
        }
        _ => response::error(
            StatusCode::NOT_FOUND,
            "RouteNotFound",
            format!("no admin route for {} {path}; see GET /admin/functions, /admin/status, POST /admin/reload", req.method()),
        ),
    };
    Ok(r)
}
