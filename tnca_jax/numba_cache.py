"""librosa's numba code and numba's on-disk cache, which is not safe for two processes writing
the same function at once.

One in three pairs of fresh processes running pYIN side by side left a cache on which every
later pYIN died of a segmentation fault (measured here). librosa compiles part of its numba code
when its modules are first imported (`librosa.core.pitch`'s pYIN gufunc, `librosa.util.utils`'s
peak picking, ...: the gufuncs with declared signatures), the rest at a function's first call.
So every process of this project imports librosa through `load_librosa`, which holds
`numba_compile_lock` while it does, and the first call of a function that compiles (pYIN in the
metrics worker, `tnca_jax.optional_metrics`) holds the lock too: the first process compiles and
writes the cache, the others wait and then load it.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

COMPILE_LOCK = Path(tempfile.gettempdir()) / "tnca_jax-numba-compile.lock"
_THIS_PROCESS = threading.RLock()  # the threads of one process; the file lock is per process
_depth = 0  # how deeply this process holds the lock (held again inside, it is not retaken)


@contextlib.contextmanager
def numba_compile_lock() -> Iterator[None]:
    """Held, no other process of this machine holding it compiles into numba's cache (an
    exclusive `flock` on COMPILE_LOCK; where none can be taken, no lock). Re-entrant within a
    process."""
    global _depth
    with _THIS_PROCESS:
        if _depth:
            _depth += 1
            try:
                yield
            finally:
                _depth -= 1
            return
        try:
            import fcntl

            lock = COMPILE_LOCK.open("a")
        except (ImportError, OSError):
            yield
            return
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _depth = 1
            try:
                yield
            finally:
                _depth = 0


@functools.cache
def load_librosa() -> ModuleType:
    """librosa, with the modules that compile numba code when imported, imported under
    `numba_compile_lock` (once per process)."""
    with numba_compile_lock():
        # These compile on import: pYIN's gufunc (with librosa.core.audio's zero crossings)
        # and librosa.util.utils' peak picking and local extrema. Each binds `librosa`.
        import librosa.core.pitch
        import librosa.util.utils
    return librosa
