"""Test fixture: one handler per behaviour the integration tests need,
selected by the function's handler name in the test config."""

import os
import socket
import time


def isolation(event, context):
    """Reports what this sandbox sees, then leaves marks behind."""
    if event.get("sleep"):
        time.sleep(event["sleep"])
    report = {
        "pid": os.getpid(),
        "procs": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "tmp_marker_existed": os.path.exists("/tmp/fnhost-marker"),
        "root_marker_existed": os.path.exists("/fnhost-marker"),
        "uid": os.getuid(),
        "hostname": socket.gethostname(),
    }
    with open("/tmp/fnhost-marker", "w") as f:
        f.write(context.aws_request_id)
    with open("/fnhost-marker", "w") as f:
        f.write(context.aws_request_id)
    try:
        with open("/usr/fnhost-marker", "w") as f:
            f.write("x")
        report["usr_writable"] = True
    except OSError:
        report["usr_writable"] = False
    with open("/proc/self/status") as f:
        capeff = [line.split()[1] for line in f if line.startswith("CapEff:")][0]
    report["cap_eff"] = capeff
    return report


def fail(event, context):
    raise ValueError("probe failure: " + str(event.get("why", "asked to")))


def sleep(event, context):
    time.sleep(event.get("seconds", 10))
    return {"slept": True}


def allocate(event, context):
    blocks = [bytearray(1024 * 1024) for _ in range(event.get("mb", 512))]
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])
    return {"allocated_mb": len(blocks)}


def noop(event, context):
    return {}


def burn(event, context):
    """Busy-loops for `seconds` of wall time; reports the CPU time it got."""
    started_wall = time.monotonic()
    started_cpu = time.process_time()
    while time.monotonic() - started_wall < event.get("seconds", 0.6):
        pass
    return {"cpu": time.process_time() - started_cpu, "wall": time.monotonic() - started_wall}


def chatty(event, context):
    """Prints many lines (captured output must be capped by the host)."""
    for i in range(event.get("lines", 20000)):
        print("line", i)
    return {"printed": event.get("lines", 20000)}


def netns(event, context):
    """Reports this sandbox's network namespace and descriptors, tries the
    port an earlier invocation listened on, and leaves a listener behind."""
    started = time.time()
    if event.get("sleep"):
        time.sleep(event["sleep"])
    report = {"net": os.readlink("/proc/self/ns/net"), "started": started, "ended": time.time()}
    others = []
    for fd in os.listdir("/proc/self/fd"):
        if int(fd) > 2:
            try:
                others.append(os.readlink("/proc/self/fd/" + fd))
            except OSError:
                pass  # the directory listing's own descriptor, closed
    report["fds"] = others
    port = event.get("connect")
    if port:
        probe = socket.socket()
        try:
            probe.connect(("127.0.0.1", port))
            report["connected"] = True
        except OSError:
            report["connected"] = False
        probe.close()
    listener = socket.socket()
    listener.bind(("127.0.0.1", event.get("listen", 0)))
    listener.listen()
    report["listening"] = listener.getsockname()[1]
    # Kept open: the clone's exit closes it.
    _LEFT_BEHIND.append(listener)
    return report


_LEFT_BEHIND = []


_CALLS = []


def calls(event, context):
    """Counts its own calls in this process: a clone serves exactly one, so
    anything but 1 means something else (a rehearsal) called the handler."""
    _CALLS.append(context.aws_request_id)
    return {"calls": len(_CALLS)}
