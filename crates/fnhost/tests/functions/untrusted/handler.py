"""Handlers for the untrusted-client and untrusted-function tests."""
import sys
import time


def ok(event, context):
    return {"ok": True}


def sleep(event, context):
    time.sleep(float(event.get("s", 1)))
    return {"slept": event.get("s", 1)}


def flood(event, context):
    """Writes `mib` MiB to stdout without a single newline, then answers."""
    chunk = "x" * (1 << 20)
    for _ in range(int(event.get("mib", 1))):
        sys.stdout.write(chunk)
    sys.stdout.flush()
    return {"wrote_mib": event.get("mib", 1)}


def net(event, context):
    """`listen`: a TCP port and an abstract Unix socket, held for `s`
    seconds; `reach`: try to connect to both."""
    import socket

    port, name = int(event["port"]), "\0" + event["name"]
    if event["op"] == "listen":
        tcp = socket.socket()
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", port))
        tcp.listen(1)
        uds = socket.socket(socket.AF_UNIX)
        uds.bind(name)
        uds.listen(1)
        print("listening " + event["name"], flush=True)
        time.sleep(float(event.get("s", 5)))
        return {"listened": True}
    out = {}
    for kind, family, address in (
        ("tcp", socket.AF_INET, ("127.0.0.1", port)),
        ("unix", socket.AF_UNIX, name),
    ):
        s = socket.socket(family)
        s.settimeout(2)
        try:
            s.connect(address)
            out[kind] = "connected"
        except OSError as e:
            out[kind] = type(e).__name__
        finally:
            s.close()
    return out
