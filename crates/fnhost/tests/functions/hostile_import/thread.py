"""Test fixture: import-time code that leaves a thread running (a zygote
must be single-threaded when it forks)."""

import threading
import time

threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()


def handler(event, context):
    return {"thread": "should never get here"}
