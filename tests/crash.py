"""Stand-ins for native code that crashes or hangs, importable by a spawned worker (this module
imports nothing heavy, so the worker starts fast)."""

import os
import signal
import time


def segfault(*args) -> None:
    """What librosa's pYIN did on a GPU machine: a segmentation fault in numba's gufunc."""
    os.kill(os.getpid(), signal.SIGSEGV)


def hang(*args) -> None:
    time.sleep(60)
