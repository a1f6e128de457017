"""Test fixture: import-time code that forks a helper meant to outlive the
import (and with it the zygote's single-process check), then returns."""

import os
import time

if os.fork() == 0:
    # The helper: a second fork so that it is nobody's child but init's.
    if os.fork() == 0:
        time.sleep(3600)
    os._exit(0)
os.wait()


def handler(event, context):
    return {"helper": "should never get here"}
