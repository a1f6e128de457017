//! The AWS Lambda Invoke API, driven by a real client (boto3, installed
//! into .venv/ by scripts/install-deps.sh).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn python_with_boto3() -> PathBuf {
    if let Some(p) = std::env::var_os("FNHOST_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")
}

const CLIENT: &str = r#"
import json, sys, boto3, botocore
client = boto3.client("lambda", endpoint_url=sys.argv[1], region_name="us-east-1",
                      aws_access_key_id="fnhost", aws_secret_access_key="fnhost",
                      config=botocore.config.Config(retries={"max_attempts": 1}))
out = {}
r = client.invoke(FunctionName="hello", Payload=json.dumps({"name": "boto"}))
out["ok"] = {"status": r["StatusCode"], "payload": json.loads(r["Payload"].read()),
             "function_error": r.get("FunctionError"), "version": r.get("ExecutedVersion")}
r = client.invoke(FunctionName="arn:aws:lambda:us-east-1:123456789012:function:fail", Payload=b"{}")
out["fail"] = {"status": r["StatusCode"], "function_error": r.get("FunctionError"),
               "payload": json.loads(r["Payload"].read())}
try:
    client.invoke(FunctionName="missing", Payload=b"{}")
    out["missing"] = "no error"
except botocore.exceptions.ClientError as e:
    out["missing"] = {"code": e.response["Error"]["Code"], "status": e.response["ResponseMetadata"]["HTTPStatusCode"]}
r = client.invoke(FunctionName="hello", InvocationType="Event", Payload=b"{}")
out["event"] = r["StatusCode"]
r = client.invoke(FunctionName="hello", InvocationType="DryRun", Payload=b"{}")
out["dryrun"] = r["StatusCode"]
print(json.dumps(out))
"#;

#[test]
fn boto3_invokes_through_the_lambda_api() {
    if !require_root("boto3_invokes_through_the_lambda_api") {
        return;
    }
    let python = python_with_boto3();
    assert!(
        python.exists(),
        "{} missing: run scripts/install-deps.sh (it installs boto3 into .venv/)",
        python.display()
    );
    let functions = format!(
        "[[functions]]\nname = \"hello\"\nruntime = \"python3\"\ncode = \"{}\"\nhandler = \"handler.handler\"\n\n\
         [[functions]]\nname = \"fail\"\nruntime = \"python3\"\ncode = \"{}\"\nhandler = \"handler.fail\"\n",
        hello_code().display(),
        probe_code().display()
    );
    let daemon = Daemon::start(&functions);
    let out = Command::new(&python)
        .args(["-c", CLIENT, &format!("http://{}", daemon.addr)])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.stderr()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("client report");

    assert_eq!(report["ok"]["status"], 200, "{report}");
    assert_eq!(report["ok"]["payload"]["message"], "hello, boto");
    assert!(report["ok"]["function_error"].is_null(), "{report}");
    assert_eq!(report["ok"]["version"], "$LATEST");

    assert_eq!(report["fail"]["status"], 200, "{report}");
    assert_eq!(report["fail"]["function_error"], "Unhandled");
    assert_eq!(report["fail"]["payload"]["errorType"], "ValueError");
    assert!(report["fail"]["payload"]["stackTrace"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));

    assert_eq!(
        report["missing"]["code"], "ResourceNotFoundException",
        "{report}"
    );
    assert_eq!(report["missing"]["status"], 404);
    assert_eq!(report["event"], 202);
    assert_eq!(report["dryrun"], 204);
}
