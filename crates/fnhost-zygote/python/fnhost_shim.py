"""fnhost zygote shim for Python functions (AWS Lambda handler contract).

Runs as a zygote's runtime: imports the function once, freezes the heap
(gc.freeze, so clones do not dirty inherited objects), then hands control to
fnhost's native fork server (libfnhost_shim.so). That call returns only in a
freshly cloned, already isolated sandbox, which serves exactly one
invocation and exits.

Wire format of the invocation socket (see fnhost-zygote/src/protocol.rs):
u32 LE length | u8 kind | u32 LE meta length | meta JSON | body.
"""

import ctypes
import gc
import importlib
import json
import os
import resource
import socket
import struct
import sys
import time
import traceback

CONTROL_FD = 3
FRAME_INVOKE = 2
FRAME_RESULT = 3
FRAME_ERROR = 4
HEADER = struct.Struct("<IBI")


class LambdaContext:
    """The `context` argument of a Lambda handler."""

    def __init__(self, meta, deadline_ns):
        name = meta["function"]
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{name}"
        self.memory_limit_in_mb = int(meta["memory_mb"])
        self.aws_request_id = meta["request_id"]
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = f"fnhost/{meta['request_id']}"
        self.identity = None
        self.client_context = None
        self._deadline_ns = deadline_ns

    def get_remaining_time_in_millis(self):
        return max(0, (self._deadline_ns - time.monotonic_ns()) // 1_000_000)


def _recv_exact(sock, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("invocation socket closed")
        got += k
    return bytes(buf)


def _read_frame(sock):
    length, kind, meta_len = HEADER.unpack(_recv_exact(sock, HEADER.size))
    rest = _recv_exact(sock, length - 5)
    return kind, rest[:meta_len], rest[meta_len:]


def _send_frame(sock, kind, meta, body):
    sock.sendall(HEADER.pack(1 + 4 + len(meta) + len(body), kind, len(meta)) + meta + body)


def _error_object(exc, error_type=None):
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def _page_faults():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


def _rehearse():
    """Runs the invocation path once on a made-up request, without the
    handler, while the clone waits for its real one. Each page the path
    writes (reference counts, allocator free lists, buffers) is copied from
    the zygote now rather than on the request path: measured ~100 faults
    fewer between a no-op's request and its handler."""
    meta = json.loads(b'{"function":"f","memory_mb":128,"request_id":"r","remaining_ms":1000}')
    context = LambdaContext(meta, time.monotonic_ns() + int(meta["remaining_ms"]) * 1_000_000)
    started = time.perf_counter_ns()
    event = json.loads(b"{}")
    out = json.dumps({"result": [1, "x", None, True]}).encode()
    handler_us = (time.perf_counter_ns() - started) // 1000
    reply = json.dumps({"handler_us": handler_us, "page_faults": {"ready": 0, "invocation": 0}})
    frame = HEADER.pack(1 + 4 + len(reply) + len(out), FRAME_RESULT, len(reply)) + reply.encode() + out
    view = memoryview(bytearray(HEADER.size))
    view[: HEADER.size] = frame[: HEADER.size]
    return context, event, _page_faults()


def _serve_one(fd, handler):
    sock = socket.socket(fileno=fd)
    _rehearse()
    ready = _page_faults()
    kind, meta, body = _read_frame(sock)
    if kind != FRAME_INVOKE:
        os._exit(3)
    meta = json.loads(meta)
    context = LambdaContext(meta, time.monotonic_ns() + int(meta["remaining_ms"]) * 1_000_000)
    started = time.perf_counter_ns()
    try:
        event = json.loads(body) if body else {}
        result = handler(event, context)
        kind = FRAME_RESULT
        try:
            out = json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            kind, out = FRAME_ERROR, json.dumps(_error_object(exc, "Runtime.MarshalError")).encode()
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are function errors too
        kind, out = FRAME_ERROR, json.dumps(_error_object(exc)).encode()
    handler_us = (time.perf_counter_ns() - started) // 1000
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    page_faults = {"ready": ready, "invocation": _page_faults() - ready}
    reply = json.dumps({"handler_us": handler_us, "page_faults": page_faults}).encode()
    _send_frame(sock, kind, reply, out)
    os._exit(0)


class _ArenaAllocator(ctypes.Structure):
    """CPython's PyObjectArenaAllocator."""

    _fields_ = [("ctx", ctypes.c_void_p), ("alloc", ctypes.c_void_p), ("free", ctypes.c_void_p)]


def _use_huge_page_arenas(lib):
    """Puts the heap the import builds on transparent huge pages, so forking
    the zygote costs one page-table entry per 2 MiB rather than 512 (see
    fnhost-zygote/src/arenas.rs). Interpreters without the hook keep theirs."""
    try:
        install = ctypes.pythonapi.PyObject_SetArenaAllocator
    except AttributeError:
        return
    install.argtypes = [ctypes.POINTER(_ArenaAllocator)]
    install.restype = None
    address = lambda f: ctypes.cast(f, ctypes.c_void_p).value
    # CPython copies the struct: it need not outlive the call.
    install(ctypes.byref(_ArenaAllocator(None, address(lib.fnhost_arena_alloc), address(lib.fnhost_arena_free))))


def _report_init_failure(lib, stage, exc):
    failure = _error_object(exc)
    failure["stage"] = stage
    data = json.dumps(failure).encode()
    lib.fnhost_zygote_init_failed(CONTROL_FD, data, len(data))
    traceback.print_exception(exc)
    os._exit(1)


def main():
    started = time.perf_counter_ns()
    handler_spec = os.environ.pop("FNHOST_HANDLER")
    lib = ctypes.CDLL(os.environ.pop("FNHOST_SHIM_LIB"))
    lib.fnhost_zygote_serve.argtypes = [ctypes.c_int, ctypes.c_uint64]
    lib.fnhost_zygote_serve.restype = ctypes.c_int
    lib.fnhost_zygote_init_failed.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    lib.fnhost_zygote_init_failed.restype = ctypes.c_int
    after_fork_child = ctypes.pythonapi.PyOS_AfterFork_Child
    after_fork_child.argtypes = []
    after_fork_child.restype = None
    _use_huge_page_arenas(lib)

    try:
        sys.path.insert(0, os.environ.get("LAMBDA_TASK_ROOT", "/var/task"))
        module_name, _, function_name = handler_spec.rpartition(".")
        module = importlib.import_module(module_name)
        handler = getattr(module, function_name)
        if not callable(handler):
            raise TypeError(f"handler {handler_spec} is not callable")
    except BaseException as exc:
        _report_init_failure(lib, "import", exc)

    # Clones inherit the imported heap copy-on-write; freezing it keeps the
    # collector from touching (and so copying) inherited objects.
    gc.collect()
    gc.freeze()
    import_us = (time.perf_counter_ns() - started) // 1000

    # Returns only in a fresh clone (in its own namespaces, cgroup and
    # writable root, privileges dropped); the zygote stays inside.
    fd = lib.fnhost_zygote_serve(CONTROL_FD, import_us)
    if fd < 0:
        os._exit(2)
    # Same bookkeeping os.fork() does in a child (locks, random seeds, at-fork hooks).
    after_fork_child()
    # The fork server read (and unset) its own settings in the zygote;
    # os.environ is a snapshot from interpreter start, so drop them here too.
    for name in [k for k in os.environ if k.startswith("FNHOST_")]:
        del os.environ[name]
    # The clone's pivot left it at "/"; Lambda handlers run in the task root.
    try:
        os.chdir(os.environ.get("LAMBDA_TASK_ROOT", "/var/task"))
    except OSError:
        pass
    _serve_one(fd, handler)


if __name__ == "__main__":
    main()
