"""Ctrl-C on the command line: stop at once, say where a rerun resumes, exit 130.

Python raises KeyboardInterrupt only where the main thread next runs Python code: not while
XLA compiles or computes, and inside orbax's threads and coroutines it can be swallowed or end
in pages of traceback. Here the signal is taken off Python's hands instead: a watcher thread
wakes on SIGINT the moment it arrives (`signal.set_wakeup_fd`), runs the registered cleanups
(`on_interrupt`: the workdir lock), prints one line and ends the process with status 130 without
unwinding. That is as safe as `kill -9`, which the workdir already survives: every file is
replaced whole, and a checkpoint cut off mid-commit is never taken for a complete one.

Only the command line installs this (`exit_on_sigint`); `generate()` in a notebook keeps
Python's own KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

EXIT_STATUS = 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C
_STOP = b"\0"  # written to the wakeup pipe to end the watcher when the block ends

_cleanups: list[Callable[[], None]] = []


@contextlib.contextmanager
def on_interrupt(cleanup: Callable[[], None]) -> Iterator[None]:
    """Run `cleanup` if Ctrl-C ends the process inside the block."""
    register(cleanup)
    try:
        yield
    finally:
        unregister(cleanup)


def register(cleanup: Callable[[], None]) -> None:
    """Run `cleanup` if Ctrl-C ends the process, until `unregister`ed (e.g. stop a worker
    process that would otherwise finish its task after the process is gone)."""
    _cleanups.append(cleanup)


def unregister(cleanup: Callable[[], None]) -> None:
    with contextlib.suppress(ValueError):
        _cleanups.remove(cleanup)


@contextlib.contextmanager
def exit_on_sigint(message: Callable[[], str]) -> Iterator[None]:
    """For the block, Ctrl-C ends the process at once with `interrupted: <message()>` on
    stderr (the message says where a rerun resumes) and status 130. Outside the main thread
    nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    # The Python-level handler does nothing: the watcher has acted by the time it would run.
    previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: None)
    watcher = threading.Thread(target=_watch, args=(read_end, message), daemon=True,
                               name="sigint-watcher")
    watcher.start()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        signal.set_wakeup_fd(previous_fd)
        os.write(write_end, _STOP)
        watcher.join()
        os.close(read_end)
        os.close(write_end)


def _watch(read_end: int, message: Callable[[], str]) -> None:
    """Wait for SIGINT on the wakeup pipe; then clean up, say so and exit 130."""
    while True:
        received = os.read(read_end, 64)
        if _STOP in received:
            return
        if signal.SIGINT in received:
            break
    for cleanup in list(_cleanups):
        with contextlib.suppress(Exception):
            cleanup()
    try:
        line = " ".join(message().split())
    except Exception as err:  # Never let the message keep the process alive.
        line = f"stopped ({err})"
    # The ^C the terminal echoed (or a progress bar) may hold the current line: start a new one.
    os.write(2, f"\ninterrupted: {line}\n".encode())
    os._exit(EXIT_STATUS)
