"""The Lambda control plane driven by real clients (boto3 and the aws CLI),
for crates/fnhost/tests/control_plane.rs. Usage:
client.py PHASE ENDPOINT RUNTIME WORKDIR; prints one JSON report."""
import base64, datetime, hashlib, hmac, io, json, os, subprocess, sys, threading, time
import random, urllib.error, urllib.request, zipfile

import boto3, botocore
from botocore.config import Config

PHASE, ENDPOINT, RUNTIME, WORKDIR = sys.argv[1:5]
KEY, SECRET = "AKIDFNHOSTTEST", "fnhost-test-secret"


def client(key=KEY, secret=SECRET):
    return boto3.client("lambda", endpoint_url=ENDPOINT, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}, parameter_validation=False,
                                      read_timeout=120))


def code(version, extra=None):
    src = ("import os, time\n"
           f"def handler(event, context):\n"
           f"    time.sleep(event.get('sleep', 0))\n"
           f"    return {{'version': {version}, 'greeting': os.environ.get('GREETING')}}\n")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        info = zipfile.ZipInfo("app.py", date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, src)
        for info, data in (extra or []):
            z.writestr(info, data)
    return buf.getvalue()


def b64sha(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def error_of(fn):
    try:
        fn()
        return "no error"
    except botocore.exceptions.ClientError as e:
        return {"code": e.response["Error"]["Code"], "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
                "message": e.response["Error"].get("Message", "")}


def invoke(c, name, event=None):
    r = c.invoke(FunctionName=name, Payload=json.dumps(event or {}))
    return {"status": r["StatusCode"], "error": r.get("FunctionError"), "payload": json.loads(r["Payload"].read())}


def raw(method, path, body=b"", date=None, secret=SECRET, key=KEY, tamper=False, sign=True):
    """A request signed here, independently of botocore."""
    host = ENDPOINT.split("//", 1)[1]
    now = date or datetime.datetime.now(datetime.timezone.utc)
    amz = now.strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": host, "x-amz-date": amz, "content-type": "application/json"}
    if sign:
        signed = ";".join(sorted(headers))
        canon = "\n".join([method, path, "", "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed,
                           hashlib.sha256(body).hexdigest()])
        scope = f"{amz[:8]}/us-east-1/lambda/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canon.encode()).hexdigest()])
        k = ("AWS4" + secret).encode()
        for part in (amz[:8], "us-east-1", "lambda", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        if tamper:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        headers["authorization"] = f"AWS4-HMAC-SHA256 Credential={key}/{scope}, SignedHeaders={signed}, Signature={sig}"
    req = urllib.request.Request(ENDPOINT + path, data=body if method != "GET" else None, method=method,
                                 headers={k: v for k, v in headers.items() if k != "host"})
    try:
        with urllib.request.urlopen(req) as r:
            return {"status": r.status, "type": None}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "type": (e.headers.get("x-amzn-errortype") or "").split(":")[0],
                "message": json.loads(e.read() or b"{}").get("message")}


def deploy():
    c = client()
    out = {}
    v1 = code(1)
    r = c.create_function(FunctionName="api-fn", Runtime=RUNTIME, Role="arn:aws:iam::000000000000:role/x",
                          Handler="app.handler", Code={"ZipFile": v1}, MemorySize=128, Timeout=5,
                          Description="made by boto3", Environment={"Variables": {"GREETING": "hi"}})
    out["create"] = {k: r.get(k) for k in ("FunctionName", "State", "CodeSha256", "CodeSize", "Runtime", "Version")}
    out["v1_sha"] = b64sha(v1)
    c.get_waiter("function_active_v2").wait(FunctionName="api-fn")
    out["invoke_v1"] = invoke(c, "api-fn")
    g = c.get_function(FunctionName="api-fn")
    out["get"] = {"name": g["Configuration"]["FunctionName"], "memory": g["Configuration"]["MemorySize"],
                  "description": g["Configuration"]["Description"], "state": g["Configuration"]["State"]}
    out["get_file_fn"] = c.get_function_configuration(FunctionName="hello")["FunctionName"]
    for n in ("api-b", "api-c", "api-d"):
        c.create_function(FunctionName=n, Runtime=RUNTIME, Role="r", Handler="app.handler", Code={"ZipFile": v1})
    pages = c.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2})
    names, page_count = [], 0
    for p in pages:
        page_count += 1
        names += [f["FunctionName"] for f in p["Functions"]]
    out["list"] = {"names": names, "pages": page_count}
    r = c.update_function_configuration(FunctionName="api-fn", MemorySize=256, Timeout=10,
                                        Environment={"Variables": {"GREETING": "hi2"}})
    c.get_waiter("function_updated_v2").wait(FunctionName="api-fn")
    out["update_config"] = {"memory": r["MemorySize"], "status": r["LastUpdateStatus"]}
    out["invoke_config"] = invoke(c, "api-fn")
    c.put_function_concurrency(FunctionName="api-fn", ReservedConcurrentExecutions=5)
    out["concurrency"] = c.get_function_concurrency(FunctionName="api-fn").get("ReservedConcurrentExecutions")
    p = c.put_provisioned_concurrency_config(FunctionName="api-fn", Qualifier="$LATEST",
                                             ProvisionedConcurrentExecutions=1)
    out["provisioned"] = p["RequestedProvisionedConcurrentExecutions"]
    out["provisioned_get"] = c.get_provisioned_concurrency_config(
        FunctionName="api-fn", Qualifier="$LATEST")["Status"]

    # Update while invocations are in flight: a slow one started on v1
    # finishes on v1; none fails; each sees one version.
    results, lock = [], threading.Lock()

    def hammer(event, n):
        c2 = client()
        for _ in range(n):
            try:
                r = invoke(c2, "api-fn", event)
                r["slow"] = bool(event)
                with lock:
                    results.append(r)
            except Exception as e:  # noqa: BLE001 - reported, the test fails on it
                with lock:
                    results.append({"exception": repr(e)})
    slow = threading.Thread(target=hammer, args=({"sleep": 1.5}, 1))
    slow.start()
    time.sleep(0.5)
    fast = [threading.Thread(target=hammer, args=({}, 15)) for _ in range(3)]
    for t in fast:
        t.start()
    v2 = code(2)
    r = c.update_function_code(FunctionName="api-fn", ZipFile=v2)
    c.get_waiter("function_updated_v2").wait(FunctionName="api-fn")
    out["v2_sha"] = b64sha(v2)
    out["update_code_sha"] = r["CodeSha256"]
    after = invoke(c, "api-fn")
    slow.join()
    for t in fast:
        t.join()
    out["slow"] = [r for r in results if r.get("slow")]
    out["in_flight"] = results
    out["after_update"] = after
    out["delete_d"] = c.delete_function(FunctionName="api-d")["ResponseMetadata"]["HTTPStatusCode"]
    out["deleted_get"] = error_of(lambda: c.get_function(FunctionName="api-d"))
    return out


def bad_inputs():
    c = client()
    role = "arn:aws:iam::000000000000:role/x"

    def create(name="bad", runtime=RUNTIME, handler="app.handler", zipdata=None, **kw):
        return error_of(lambda: c.create_function(FunctionName=name, Runtime=runtime, Role=role, Handler=handler,
                                                  Code={"ZipFile": zipdata if zipdata is not None else code(1)}, **kw))
    link = zipfile.ZipInfo("link.py")
    link.external_attr = (0o120777 << 16)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("app.py", "def handler(e, c):\n    return 1\n")
        z.writestr("zeros.bin", b"\0" * (10 << 20))
    large = io.BytesIO()
    with zipfile.ZipFile(large, "w", zipfile.ZIP_STORED) as z:
        z.writestr("app.py", "def handler(e, c):\n    return 1\n")
        z.writestr("noise.bin", os.urandom(int(2.5 * (1 << 20))))
    unzipped = io.BytesIO()
    rnd = random.Random(7)
    with zipfile.ZipFile(unzipped, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("app.py", "def handler(e, c):\n    return 1\n")
        z.writestr("dna.txt", "".join(rnd.choice("ACGT") for _ in range(int(3.5 * (1 << 20)))))
    before = sorted(f["FunctionName"] for f in c.list_functions()["Functions"])
    out = {
        "not_a_zip": create(zipdata=b"this is not a zip"),
        "dotdot": create(zipdata=code(1, [("../evil.py", "x")])),
        "absolute": create(zipdata=code(1, [(zipfile.ZipInfo("/abs/evil.py"), "x")])),
        "symlink": create(zipdata=code(1, [(link, "/etc/passwd")])),
        "bomb": create(zipdata=bomb.getvalue()),
        "too_large": create(zipdata=large.getvalue()),
        "too_large_unzipped": create(zipdata=unzipped.getvalue()),
        "missing_module": create(handler="nomodule.handler", zipdata=code(1, [("other.py", "x = 1")])),
        "runtime_other_python": create(runtime="python3.99"),
        "runtime_node": create(runtime="nodejs99.x"),
        "duplicate": create(name="api-fn"),
        "file_name": create(name="hello"),
        "bad_name": create(name="bad name!"),
        "upper_name": create(name="UpperCase"),
        "memory_low": create(MemorySize=64),
        "memory_high": create(MemorySize=20000),
        "timeout_high": create(Timeout=901),
        "layers": create(Layers=["arn:aws:lambda:us-east-1:1:layer:x:1"]),
        "s3": error_of(lambda: c.create_function(FunctionName="bad", Runtime=RUNTIME, Role=role,
                                                 Handler="app.handler", Code={"S3Bucket": "b", "S3Key": "k"})),
        "publish_version": error_of(lambda: c.publish_version(FunctionName="api-fn")),
        "aliases": error_of(lambda: c.list_aliases(FunctionName="api-fn")),
        "update_file_fn": error_of(lambda: c.update_function_code(FunctionName="hello", ZipFile=code(1))),
        "delete_file_fn": error_of(lambda: c.delete_function(FunctionName="hello")),
        "missing": error_of(lambda: c.get_function(FunctionName="nope")),
        "update_bad_zip": error_of(lambda: c.update_function_code(FunctionName="api-fn", ZipFile=b"PK nope")),
        "concurrency_zero": error_of(lambda: c.put_function_concurrency(FunctionName="api-fn",
                                                                        ReservedConcurrentExecutions=0)),
    }
    out["after_bad"] = sorted(f["FunctionName"] for f in c.list_functions()["Functions"])
    out["before_bad"] = before
    out["still_v2"] = invoke(c, "api-fn")["payload"]
    return out


def auth():
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    return {
        "wrong_secret": error_of(lambda: client(secret="not-the-secret").list_functions()),
        "unknown_key": error_of(lambda: client(key="AKIDUNKNOWN").list_functions()),
        "raw_ok": raw("GET", "/2015-03-31/functions/"),
        "raw_tampered": raw("GET", "/2015-03-31/functions/", tamper=True),
        "raw_expired": raw("GET", "/2015-03-31/functions/", date=past),
        "raw_unsigned": raw("GET", "/2015-03-31/functions/", sign=False),
        "raw_invoke_unsigned": raw("POST", "/2015-03-31/functions/api-fn/invocations", b"{}", sign=False),
        "raw_invoke_signed": raw("POST", "/2015-03-31/functions/api-fn/invocations", b"{}"),
    }


def awscli():
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent")
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    zpath = os.path.join(WORKDIR, "cli.zip")
    with open(zpath, "wb") as f:
        f.write(code(7))

    def run(*args):
        p = subprocess.run([aws, "--endpoint-url", ENDPOINT, "lambda", *args], env=env,
                           capture_output=True, text=True)
        return {"rc": p.returncode, "out": p.stdout, "err": p.stderr[-500:]}
    out = {}
    out["create"] = run("create-function", "--function-name", "cli-fn", "--runtime", RUNTIME, "--role", "r",
                        "--handler", "app.handler", "--zip-file", "fileb://" + zpath, "--memory-size", "128")
    out["wait"] = run("wait", "function-active-v2", "--function-name", "cli-fn")
    outfile = os.path.join(WORKDIR, "cli-out.json")
    out["invoke"] = run("invoke", "--function-name", "cli-fn", "--payload", "{}", outfile)
    out["invoke_payload"] = json.load(open(outfile)) if os.path.exists(outfile) else None
    out["list"] = run("list-functions")
    out["concurrency"] = run("put-function-concurrency", "--function-name", "cli-fn",
                             "--reserved-concurrent-executions", "3")
    out["delete"] = run("delete-function", "--function-name", "cli-fn")
    out["get_deleted"] = run("get-function", "--function-name", "cli-fn")
    return out


def after_restart():
    c = client()
    cfg = c.get_function_configuration(FunctionName="api-fn")
    return {"invoke": invoke(c, "api-fn"), "memory": cfg["MemorySize"], "sha": cfg["CodeSha256"],
            "concurrency": c.get_function_concurrency(FunctionName="api-fn").get("ReservedConcurrentExecutions"),
            "names": sorted(f["FunctionName"] for f in c.list_functions()["Functions"])}


def shadow():
    c = client()
    cfg = c.get_function_configuration(FunctionName="api-b")
    return {"description": cfg["Description"],
            "update": error_of(lambda: c.update_function_code(FunctionName="api-b", ZipFile=code(9))),
            "invoke": invoke(c, "api-b")}


def update_v3():
    # 1 MiB of noise: extraction takes long enough for the kill to land in it.
    noise = zipfile.ZipInfo("noise.bin", date_time=(2020, 1, 1, 0, 0, 0))
    v3 = code(3, [(noise, random.Random(3).randbytes(1 << 20))])
    print(json.dumps({"v3_sha": b64sha(v3)}), flush=True)
    try:
        client().update_function_code(FunctionName="api-fn", ZipFile=v3)
    except Exception:  # noqa: BLE001 - the daemon is killed meanwhile
        pass


def node():
    """A Node.js function through the same API: the host's node version."""
    c = client()
    major = subprocess.run(["/usr/bin/node", "--version"], capture_output=True, text=True,
                           check=True).stdout.strip().lstrip("v").split(".")[0]
    runtime = f"nodejs{major}.x"

    def js(version):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("src/index.mjs", "let count = 0;\n"
                       f"export const handler = async (event, context) => ({{ version: {version}, "
                       "count: ++count, name: context.functionName, greeting: process.env.GREETING, "
                       "echo: event.echo });\n")
        return buf.getvalue()

    created = c.create_function(FunctionName="node-fn", Runtime=runtime, Role="r", Handler="src/index.handler",
                                Code={"ZipFile": js(1)}, Environment={"Variables": {"GREETING": "hej"}})
    c.get_waiter("function_active_v2").wait(FunctionName="node-fn")
    first = invoke(c, "node-fn", {"echo": "a"})
    second = invoke(c, "node-fn", {"echo": "b"})
    c.update_function_code(FunctionName="node-fn", ZipFile=js(2))
    c.get_waiter("function_updated_v2").wait(FunctionName="node-fn")
    updated = invoke(c, "node-fn")
    cfg = c.get_function_configuration(FunctionName="node-fn")
    missing = error_of(lambda: c.create_function(FunctionName="node-missing", Runtime=runtime, Role="r",
                                                 Handler="index.handler", Code={"ZipFile": js(1)}))
    python_handler_for_node = error_of(lambda: c.update_function_configuration(
        FunctionName="node-fn", Runtime=RUNTIME))
    c.delete_function(FunctionName="node-fn")
    return {"runtime": runtime, "created_runtime": created["Runtime"], "state": cfg["State"],
            "first": first, "second": second, "updated": updated, "missing": missing,
            "python_for_node_code": python_handler_for_node,
            "names": sorted(f["FunctionName"] for f in c.list_functions()["Functions"])}


if PHASE == "update-v3":
    update_v3()
else:
    print(json.dumps({"deploy": deploy, "bad": bad_inputs, "auth": auth, "awscli": awscli,
                      "after-restart": after_restart, "shadow": shadow, "node": node}[PHASE]()))
