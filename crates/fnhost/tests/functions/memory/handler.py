"""Test fixture for hibernation: the zygote builds distinctive state at
import (tens of MiB of patterned bytes and many small objects); every
invocation recomputes its digest, so a clone of a woken zygote proves the
zygote's memory came back intact."""

import hashlib

# 24 MiB of bytes that differ page by page (a zero page would hide a bug).
BLOCK = bytearray(24 * 1024 * 1024)
for page in range(len(BLOCK) // 4096):
    BLOCK[page * 4096:(page + 1) * 4096] = hashlib.sha256(page.to_bytes(4, "little")).digest() * 128
# Many small heap objects (pymalloc arenas, the main heap).
TABLE = {f"key-{i}": [i, str(i) * 3, (i, i * i)] for i in range(100_000)}


def digest():
    h = hashlib.sha256(BLOCK)
    for key in sorted(TABLE):
        h.update(key.encode())
        h.update(repr(TABLE[key]).encode())
    return h.hexdigest()


IMPORT_DIGEST = digest()


def handler(event, context):
    if "say" in event:
        print(event["say"], flush=True)
    now = digest()
    return {"import_digest": IMPORT_DIGEST, "digest": now, "intact": now == IMPORT_DIGEST}
