"""Test fixture: hostile handlers for the adversarial suite (one per attack
the suite drives from Python), and a `sanity` handler checking that
ordinary Python still works under the sandbox's seccomp filter.

`probe` runs the fnhost-probe binary the test copies next to this file."""

import ctypes
import errno
import json
import os
import random
import socket
import subprocess
import threading
import time


def probe(event, context):
    """Runs fnhost-probe and returns its JSON report."""
    argv = [os.path.join(os.environ.get("LAMBDA_TASK_ROOT", "/var/task"), "fnhost-probe")]
    if event.get("pids"):
        argv += ["--pids", ",".join(str(p) for p in event["pids"])]
    if event.get("port"):
        argv += ["--port", str(event["port"])]
    done = subprocess.run(argv, capture_output=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"probe exited {done.returncode}: {done.stderr.decode(errors='replace')}")
    return json.loads(done.stdout)


def sanity(event, context):
    """Ordinary things a function does; each must work under the filter."""
    out = {}
    out["json"] = json.loads(json.dumps({"a": [1, 2]})) == {"a": [1, 2]}
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(i * i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["threads"] = sorted(results) == [0, 1, 4, 9]
    out["subprocess"] = subprocess.run(["/bin/echo", "hi"], capture_output=True).stdout == b"hi\n"
    out["subprocess_shell"] = subprocess.run("echo $((6*7))", shell=True, capture_output=True).stdout == b"42\n"
    out["cpu_count"] = os.cpu_count()
    out["time"] = time.time() > 1.6e9 and time.monotonic() > 0
    out["random"] = len(os.urandom(16)) == 16 and 0 <= random.random() < 1
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    client.sendall(b"ping")
    out["socket_loopback"] = conn.recv(4) == b"ping"
    for s in (client, conn, server):
        s.close()
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.close()
    out["socket_inet6_udp"] = True
    a, b = socket.socketpair()
    a.sendall(b"x")
    out["socketpair"] = b.recv(1) == b"x"
    a.close()
    b.close()
    os.mkfifo("/tmp/fifo")
    out["mkfifo"] = os.path.exists("/tmp/fifo")
    with open("/tmp/file", "w") as f:
        f.write("x")
    out["tmp_write"] = open("/tmp/file").read() == "x"
    # clone3 must answer ENOSYS (so glibc falls back to clone), not EPERM.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(435, None, 0)
    out["clone3_errno"] = errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno())) if ret < 0 else "none"
    with open("/proc/self/status") as f:
        out["seccomp_mode"] = [line.split()[1] for line in f if line.startswith("Seccomp:")][0]
    return out


def forkbomb(event, context):
    """Forks until the pids limit refuses; the children keep forking."""
    parent = os.getpid()
    forked, error = 0, None
    deadline = time.monotonic() + event.get("seconds", 2)
    while time.monotonic() < deadline:
        try:
            pid = os.fork()
        except OSError as exc:
            if os.getpid() == parent:
                error = errno.errorcode.get(exc.errno, str(exc.errno))
                break
            time.sleep(0.01)
            continue
        if pid == 0:
            continue  # the child bombs too
        if os.getpid() == parent:
            forked += 1
    if os.getpid() != parent:
        time.sleep(60)
        os._exit(0)
    return {"forked": forked, "error": error}


def allocate(event, context):
    blocks = [bytearray(1024 * 1024) for _ in range(event.get("mb", 512))]
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])
    return {"allocated_mb": len(blocks)}


def diskfill(event, context):
    """Writes until the writable layer is full."""
    written, error = 0, None
    chunk = b"\0" * (1024 * 1024)
    try:
        with open(event.get("path", "/tmp/fill"), "wb") as f:
            for _ in range(event.get("mb", 100)):
                f.write(chunk)
                f.flush()
                written += 1
            os.fsync(f.fileno())
    except OSError as exc:
        error = errno.errorcode.get(exc.errno, str(exc.errno))
    return {"written_mb": written, "error": error}


def spin(event, context):
    while True:
        pass


def tmp(event, context):
    """Lists /tmp, then leaves a secret there (optionally staying alive)."""
    seen = sorted(os.listdir("/tmp"))
    with open(f"/tmp/secret-{context.aws_request_id}", "w") as f:
        f.write(event.get("secret", "s3cr3t"))
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"seen": seen, "pid": os.getpid()}


def environ(event, context):
    """What the sandbox can learn about its zygote's environment."""
    out = {"os_environ": sorted(os.environ)}
    for path in ("/proc/1/environ", "/proc/self/environ"):
        try:
            with open(path, "rb") as f:
                out[path] = [v.decode(errors="replace") for v in f.read().split(b"\0") if v]
        except OSError as exc:
            out[path] = f"error: {exc}"
    return out


def cgroup(event, context):
    """Whether any cgroup filesystem is reachable."""
    out = {
        "sys_entries": sorted(os.listdir("/sys")) if os.path.isdir("/sys") else [],
        "sys_fs_cgroup_exists": os.path.exists("/sys/fs/cgroup"),
    }
    with open("/proc/self/cgroup") as f:
        out["proc_self_cgroup"] = f.read()
    with open("/proc/self/mountinfo") as f:
        out["cgroup_mounts"] = [line for line in f if "cgroup" in line.split(" - ")[-1].split()[0]]
    return out


def write_base(event, context):
    """Tries to modify every read-only layer: host binds, code, runtime."""
    out = {}
    for path in ("/usr/lib/fnhost-x", "/usr/bin/python3", "/var/task/handler.py", "/var/task/new-file",
                 "/.fnhost/runtime/fnhost_shim.py", "/etc/passwd", "/dev/null-x"):
        try:
            with open(path, "ab") as f:
                f.write(b"\n# tampered\n")
            out[path] = "written"
        except OSError as exc:
            out[path] = errno.errorcode.get(exc.errno, str(exc.errno))
    return out
