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
