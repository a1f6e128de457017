"""fnhost-bench's floor: the cheapest thing that could possibly work.

A bare fork-per-request HTTP/1.1 server: the handler is imported once, the
heap frozen (gc.freeze, as fnhost's zygote shim does), then WORKERS
processes run an accept loop on one listening socket. Per request a worker
reads the request, forks; the child calls handler(event, context), writes
the response and exits; the worker closes its copy of the connection and
reaps the child before accepting the next one. No namespaces, no cgroups,
no mounts; one connection per request (Connection: close).

Usage: python3 -s -B server.py TASK_DIR MODULE.FUNCTION WORKERS
Prints "floor: listening on 127.0.0.1:PORT" once every worker is forked.
"""

import gc
import importlib
import json
import os
import socket
import sys
import time

MAX_HEAD = 64 * 1024


class Context:
    """Enough of the Lambda context object for a handler that looks."""

    def __init__(self, request_id):
        self.function_name = "floor"
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 128
        self.aws_request_id = request_id
        self._deadline_ns = time.monotonic_ns() + 10_000_000_000

    def get_remaining_time_in_millis(self):
        return max(0, (self._deadline_ns - time.monotonic_ns()) // 1_000_000)


def read_request(conn):
    """(method, body) of one request, or None if the peer closed early."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk or len(data) > MAX_HEAD:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    method = lines[0].split(b" ", 1)[0]
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            return None
        body += chunk
    return method, body


def response(status, reason, body):
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def invoke(conn, handler, body, request_id):
    """In the forked child: run the handler, answer, never return."""
    code = 0
    try:
        event = json.loads(body) if body else None
        result = handler(event, Context(request_id))
        conn.sendall(response(200, "OK", json.dumps(result).encode()))
    except BaseException as exc:  # the child must reach os._exit
        code = 1
        try:
            error = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            conn.sendall(response(500, "Internal Server Error", json.dumps(error).encode()))
        except BaseException:
            pass
    finally:
        os._exit(code)


def serve(listener, handler):
    served = 0
    while True:
        conn, _ = listener.accept()
        try:
            request = read_request(conn)
        except OSError:
            request = None
        if request is None:
            conn.close()
            continue
        method, body = request
        if method != b"POST":
            conn.sendall(response(404, "Not Found", b'{"errorType":"NotFound"}'))
            conn.close()
            continue
        served += 1
        pid = os.fork()
        if pid == 0:
            invoke(conn, handler, body, f"{os.getppid()}-{served}")
        conn.close()
        os.waitpid(pid, 0)


def main():
    task_dir, handler_spec, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, task_dir)
    module_name, _, function_name = handler_spec.rpartition(".")
    handler = getattr(importlib.import_module(module_name), function_name)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    gc.collect()
    gc.freeze()
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                serve(listener, handler)
            finally:
                os._exit(1)
        pids.append(pid)
    port = listener.getsockname()[1]
    print(f"floor: listening on 127.0.0.1:{port}", flush=True)
    for pid in pids:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
