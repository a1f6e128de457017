//! The Lambda control-plane operations: Create/Get/List/Update/Delete
//! functions and the concurrency settings, on functions kept in the store
//! and served through [`Control`](crate::control::Control). Functions of
//! the config file are visible but read-only.

use std::sync::Arc;

use base64::Engine as _;
use fnhost_config::FunctionSpec;
use fnhost_control::model::{self, arn, check_handler_module, check_name, ConfigChange};
use fnhost_control::{ApiError, FunctionRecord};
use hyper::StatusCode;
use serde_json::{json, Map, Value};

use crate::control::ControlError;
use crate::lambda_control::{now_secs, LambdaControl, Op};

type Outcome = Result<(StatusCode, Option<Value>), ApiError>;
type Body = Result<Map<String, Value>, ApiError>;

fn ok(status: StatusCode, v: Value) -> Outcome {
    Ok((status, Some(v)))
}

/// Runs one operation.
pub async fn serve(lc: &Arc<LambdaControl>, op: Op, query: &str, body: Body) -> Outcome {
    match op {
        Op::Create => create(lc, body?).await,
        Op::List => list(lc, query).await,
        Op::Get(name) => {
            let configuration = configuration(lc, &name).await?;
            let mut out = json!({
                "Configuration": configuration,
                "Code": { "RepositoryType": "FNHOST", "Location": "" },
            });
            if let Some(n) = reserved(lc, &name).await {
                out["Concurrency"] = json!({ "ReservedConcurrentExecutions": n });
            }
            ok(StatusCode::OK, out)
        }
        Op::GetConfiguration(name) => ok(StatusCode::OK, configuration(lc, &name).await?),
        Op::UpdateConfiguration(name) => {
            let body = body?;
            let change = ConfigChange::parse(&body, &lc.runtimes)?;
            modify(lc, &name, &body, move |r, _| {
                change.apply(r);
                Ok(None)
            })
            .await
        }
        Op::UpdateCode(name) => {
            let body = body?;
            refuse_publish(&body)?;
            let zip = zip_file(&body)?;
            modify(lc, &name, &body, move |_, _| Ok(Some(zip))).await
        }
        Op::Delete(name) => delete(lc, &name).await,
        Op::PutConcurrency(name) => {
            let body = body?;
            let n = count(&body, "ReservedConcurrentExecutions", 1, 1_000_000,
                "0 would refuse every invocation; fnhost's max_concurrency is at least 1 (delete the function to stop it)")?;
            modify(lc, &name, &body, move |r, _| {
                r.reserved_concurrency = Some(n);
                Ok(None)
            })
            .await?;
            ok(StatusCode::OK, json!({ "ReservedConcurrentExecutions": n }))
        }
        Op::GetConcurrency(name) => {
            configuration(lc, &name).await?;
            ok(StatusCode::OK, match reserved(lc, &name).await {
                Some(n) => json!({ "ReservedConcurrentExecutions": n }),
                None => json!({}),
            })
        }
        Op::DeleteConcurrency(name) => {
            modify(lc, &name, &Map::new(), |r, _| {
                r.reserved_concurrency = None;
                Ok(None)
            })
            .await?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        Op::PutProvisioned(name) => {
            let body = body?;
            let n = count(&body, "ProvisionedConcurrentExecutions", 1, 1024,
                "at least 1 ready clone; use DeleteProvisionedConcurrencyConfig to keep none")?;
            let record = modify_record(lc, &name, &body, move |r, _| {
                r.provisioned_concurrency = Some(n);
                Ok(None)
            })
            .await?;
            ok(StatusCode::ACCEPTED, provisioned(&record, n))
        }
        Op::GetProvisioned(name) => {
            configuration(lc, &name).await?;
            let records = lc.records.lock().await;
            match records.get(&name).and_then(|r| r.provisioned_concurrency.map(|n| provisioned(r, n))) {
                Some(v) => ok(StatusCode::OK, v),
                None => Err(ApiError::new(404, "ProvisionedConcurrencyConfigNotFoundException",
                    format!("No Provisioned Concurrency Config found for this function: {}", arn(&name)))),
            }
        }
        Op::DeleteProvisioned(name) => {
            modify(lc, &name, &Map::new(), |r, _| {
                r.provisioned_concurrency = None;
                Ok(None)
            })
            .await?;
            Ok((StatusCode::NO_CONTENT, None))
        }
        Op::Unsupported(what) => Err(ApiError::new(
            400,
            "UnsupportedOperationException",
            format!("fnhost does not support {what}; supported: CreateFunction, GetFunction, GetFunctionConfiguration, ListFunctions, UpdateFunctionCode, UpdateFunctionConfiguration, DeleteFunction, Invoke, Put/Get/DeleteFunctionConcurrency, Put/Get/DeleteProvisionedConcurrencyConfig"),
        )),
    }
}

fn provisioned(r: &FunctionRecord, n: u32) -> Value {
    json!({
        "RequestedProvisionedConcurrentExecutions": n,
        "AvailableProvisionedConcurrentExecutions": n,
        "AllocatedProvisionedConcurrentExecutions": n,
        "Status": "READY",
        "LastModified": r.last_modified,
    })
}

fn count(
    body: &Map<String, Value>,
    key: &str,
    min: u64,
    max: u64,
    why_min: &str,
) -> Result<u32, ApiError> {
    let v = body
        .get(key)
        .ok_or_else(|| ApiError::validation(format!("{key} is required")))?;
    let n = v.as_u64().ok_or_else(|| {
        ApiError::invalid(format!("{key} must be a non-negative integer, got {v}"))
    })?;
    if n < min {
        return Err(ApiError::invalid(format!("{key} = {n}: {why_min}")));
    }
    if n > max {
        return Err(ApiError::invalid(format!(
            "{key} = {n} is over fnhost's limit of {max}"
        )));
    }
    Ok(n as u32)
}

fn refuse_publish(body: &Map<String, Value>) -> Result<(), ApiError> {
    if body.get("Publish").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::invalid("Publish: function versions are not supported by fnhost; leave Publish out (every change updates $LATEST)"));
    }
    Ok(())
}

/// The decoded `ZipFile` of a body (CreateFunction has it under `Code`).
fn zip_file(code: &Map<String, Value>) -> Result<Vec<u8>, ApiError> {
    for key in ["S3Bucket", "S3Key", "S3ObjectVersion", "ImageUri"] {
        if code.get(key).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid(format!(
                "{key}: S3 and image code locations are not supported by fnhost; upload the zip itself (ZipFile, e.g. --zip-file fileb://function.zip)"
            )));
        }
    }
    let b64 = code.get("ZipFile").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(
            "ZipFile is required: upload the code as a zip (--zip-file fileb://function.zip)",
        )
    })?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ApiError::invalid(format!("ZipFile is not valid base64: {e}")))
}

fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::Store(e) => ApiError::service(format!("cannot persist the function: {e}")),
        ControlError::Host(e) => ApiError::service(format!("the host refused the change: {e}")),
        other => ApiError::invalid(format!("the function was not changed: {other}")),
    }
}

/// Extracts a zip into the store (off the async threads) and checks the handler.
/// Stores the zip's code and checks that `handler` of Lambda runtime
/// `runtime` is in it.
async fn put_code(
    lc: &Arc<LambdaControl>,
    zip: Vec<u8>,
    runtime: &str,
    handler: &str,
    in_use: &std::collections::BTreeMap<String, FunctionRecord>,
) -> Result<fnhost_control::store::CodeRef, ApiError> {
    if zip.len() as u64 > lc.zip_limits.max_zipped_bytes {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLargeException",
            format!(
                "the zip is {} bytes, over the {}-byte limit (server.max_code_zip_bytes)",
                zip.len(),
                lc.zip_limits.max_zipped_bytes
            ),
        ));
    }
    let (store, limits) = (lc.store.clone(), lc.zip_limits);
    let (code, extracted) = tokio::task::spawn_blocking(move || store.put_code(&zip, &limits))
        .await
        .map_err(|e| ApiError::service(format!("zip extraction failed: {e}")))?
        .map_err(|e| match e {
            fnhost_control::store::StoreError::Zip(z) => {
                ApiError::invalid(format!("Could not unzip uploaded file: {z}"))
            }
            other => ApiError::service(other.to_string()),
        })?;
    let runtime = lc.runtimes.resolve(runtime)?;
    if let Err(e) = check_handler_module(runtime, handler, &code.dir) {
        // Nothing half-created: code extracted just now that no function
        // uses goes again (callers hold the records lock).
        let used = in_use.values().any(|r| r.code_sha256 == code.sha256);
        if extracted.is_some() && !used {
            let _ = std::fs::remove_dir_all(&code.dir);
        }
        return Err(e);
    }
    Ok(code)
}

async fn apply(lc: &Arc<LambdaControl>, record: &FunctionRecord) -> Result<(), ApiError> {
    let runtime = lc.runtimes.resolve(&record.runtime)?;
    let entry = record.config_entry(runtime, &lc.store.code_dir(&record.code_sha256));
    let store = lc.store.clone();
    lc.control
        .change_api_function(&record.name, Some(entry), || store.save(record))
        .await
        .map(|_| ())
        .map_err(control_error)
}

async fn read_only(lc: &Arc<LambdaControl>, name: &str) -> Result<(), ApiError> {
    if lc.control.source_defines(name).await {
        return Err(ApiError::conflict(format!(
            "function {name} is defined in the config file (or through the admin API) and is read-only through the Lambda API; change it there"
        )));
    }
    Ok(())
}

async fn create(lc: &Arc<LambdaControl>, body: Map<String, Value>) -> Outcome {
    let name = body
        .get("FunctionName")
        .and_then(Value::as_str)
        .map(|n| crate::lambda::function_name(n).to_string())
        .ok_or_else(|| ApiError::validation("FunctionName is required"))?;
    check_name(&name)?;
    refuse_publish(&body)?;
    if body.get("PackageType").and_then(Value::as_str) == Some("Image") {
        return Err(ApiError::invalid(
            "PackageType Image: container images are not supported by fnhost; deploy a zip",
        ));
    }
    let change = ConfigChange::parse(&body, &lc.runtimes)?;
    let (Some(runtime), Some(handler)) = (change.runtime.clone(), change.handler.clone()) else {
        return Err(ApiError::invalid(
            "Runtime and Handler are required for a zip deployment",
        ));
    };
    let code = body
        .get("Code")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::validation("Code is required"))?;
    let zip = zip_file(code)?;
    let mut records = lc.records.lock().await;
    if records.contains_key(&name) {
        return Err(ApiError::conflict(format!(
            "Function already exist: {name}"
        )));
    }
    if lc.control.source_defines(&name).await {
        return Err(ApiError::conflict(format!("Function already exist: {name} (defined in the config file, read-only through the Lambda API)")));
    }
    let code = put_code(lc, zip, &runtime, &handler, &records).await?;
    let mut record = FunctionRecord {
        name: name.clone(),
        runtime,
        handler,
        role: String::new(),
        description: String::new(),
        memory_size: 128,
        timeout: 3,
        environment: Default::default(),
        code_sha256: code.sha256,
        code_size: code.zip_size,
        last_modified: String::new(),
        revision_id: String::new(),
        reserved_concurrency: None,
        provisioned_concurrency: None,
    };
    change.apply(&mut record);
    record.touch(now_secs());
    apply(lc, &record).await?;
    let out = record.configuration();
    records.insert(name, record);
    ok(StatusCode::CREATED, out)
}

/// Changes an API function: `f` edits the record and may return new code.
async fn modify_record(
    lc: &Arc<LambdaControl>,
    name: &str,
    body: &Map<String, Value>,
    f: impl FnOnce(&mut FunctionRecord, ()) -> Result<Option<Vec<u8>>, ApiError>,
) -> Result<FunctionRecord, ApiError> {
    // A stored function the file shadows is the file's: read-only.
    read_only(lc, name).await?;
    let mut records = lc.records.lock().await;
    let Some(current) = records.get(name) else {
        read_only(lc, name).await?;
        return Err(ApiError::not_found(name));
    };
    if let Some(rev) = body.get("RevisionId").and_then(Value::as_str) {
        if rev != current.revision_id {
            return Err(ApiError::new(412, "PreconditionFailedException", format!(
                "The Revision Id provided does not match the latest Revision Id ({}). Call GetFunction to get the latest Revision Id", current.revision_id)));
        }
    }
    let mut record = current.clone();
    if let Some(zip) = f(&mut record, ())? {
        let code = put_code(lc, zip, &record.runtime, &record.handler, &records).await?;
        record.code_sha256 = code.sha256;
        record.code_size = code.zip_size;
    } else if record.handler != current.handler || record.runtime != current.runtime {
        let runtime = lc.runtimes.resolve(&record.runtime)?;
        let code = lc.store.code_dir(&record.code_sha256);
        check_handler_module(runtime, &record.handler, &code)?;
    }
    record.touch(now_secs());
    apply(lc, &record).await?;
    records.insert(name.to_string(), record.clone());
    Ok(record)
}

async fn modify(
    lc: &Arc<LambdaControl>,
    name: &str,
    body: &Map<String, Value>,
    f: impl FnOnce(&mut FunctionRecord, ()) -> Result<Option<Vec<u8>>, ApiError>,
) -> Outcome {
    let record = modify_record(lc, name, body, f).await?;
    ok(StatusCode::OK, record.configuration())
}

async fn delete(lc: &Arc<LambdaControl>, name: &str) -> Outcome {
    read_only(lc, name).await?;
    let mut records = lc.records.lock().await;
    if !records.contains_key(name) {
        read_only(lc, name).await?;
        return Err(ApiError::not_found(name));
    }
    let store = lc.store.clone();
    lc.control
        .change_api_function(name, None, || store.remove(name))
        .await
        .map_err(control_error)?;
    records.remove(name);
    Ok((StatusCode::NO_CONTENT, None))
}

async fn reserved(lc: &Arc<LambdaControl>, name: &str) -> Option<u32> {
    lc.records
        .lock()
        .await
        .get(name)
        .and_then(|r| r.reserved_concurrency)
}

/// The configuration of an API function, or of a file-defined one.
async fn configuration(lc: &Arc<LambdaControl>, name: &str) -> Result<Value, ApiError> {
    if let Some(r) = lc.records.lock().await.get(name) {
        if !lc.control.source_defines(name).await {
            return Ok(r.configuration());
        }
    }
    match lc.control.host.pool(name) {
        Some(pool) => Ok(file_configuration(lc, &pool.spec)),
        None => Err(ApiError::not_found(name)),
    }
}

fn file_configuration(lc: &LambdaControl, spec: &FunctionSpec) -> Value {
    let runtime = lc
        .runtimes
        .lambda_name(spec.runtime.as_str())
        .unwrap_or_else(|| format!("fnhost-{}", spec.runtime.as_str()));
    json!({
        "FunctionName": spec.name,
        "FunctionArn": arn(&spec.name),
        "Runtime": runtime,
        "Handler": spec.handler,
        "CodeSize": 0,
        "CodeSha256": "",
        "Description": "defined in the fnhost config file: read-only through the Lambda API",
        "Timeout": spec.limits.timeout_ms.div_ceil(1000),
        "MemorySize": spec.limits.memory_mb,
        "Environment": { "Variables": spec.env },
        "Version": "$LATEST",
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "LastModified": model::last_modified(0),
    })
}

async fn list(lc: &Arc<LambdaControl>, query: &str) -> Outcome {
    let mut marker = None;
    let mut max = 50usize;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = crate::routes::percent_decode(v);
        match k {
            "Marker" => marker = Some(v),
            "MaxItems" => {
                max = v.parse::<usize>().ok().filter(|n| (1..=10_000).contains(n)).ok_or_else(|| {
                    ApiError::validation(format!("1 validation error detected: Value '{v}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 10000"))
                })?;
            }
            _ => {}
        }
    }
    let mut names = lc.control.host.function_names();
    names.sort();
    let start = match &marker {
        Some(m) => names.iter().position(|n| n > m).unwrap_or(names.len()),
        None => 0,
    };
    let page: Vec<&String> = names[start..].iter().take(max).collect();
    let mut functions = Vec::with_capacity(page.len());
    for name in &page {
        if let Ok(c) = configuration(lc, name).await {
            functions.push(c);
        }
    }
    let mut out = json!({ "Functions": functions });
    if start + page.len() < names.len() {
        if let Some(last) = page.last() {
            out["NextMarker"] = json!(last);
        }
    }
    ok(StatusCode::OK, out)
}
