"""A workdir's orbax checkpoints: numbered iterations, each holding named items (pytrees of
arrays). A damaged checkpoint is skipped for the newest intact one (`restore_newest`). Only
this module imports orbax; what orbax prints about a failed read or write (its error logs, its
abandoned coroutines) is kept off stderr: the one exception raised here says it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from tnca_jax import distributed
from tnca_jax.errors import CheckpointError, WorkdirError, warn


class _OrbaxErrorLogs(logging.Filter):
    """Drops orbax's ERROR records (a failed write logs its traceback from every worker thread):
    the failure reaches the caller as one exception."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and _ORBAX_SOURCE in record.pathname)


_ORBAX_SOURCE = f"{os.sep}orbax{os.sep}"


def _orbax_debris(unraisable: Any, orbax: str = _ORBAX_SOURCE) -> bool:
    """Whether an exception Python could not raise is the debris of a failed orbax read or
    write: its abandoned coroutines, and its threads calling into an event loop it closed.
    (Works while the interpreter shuts down: no module globals.)"""
    code = getattr(unraisable.object, "cr_code", None)
    return ((code is not None and orbax in code.co_filename)
            or (isinstance(unraisable.exc_value, RuntimeError)
                and str(unraisable.exc_value) == "Event loop is closed"))


def _quiet_orbax() -> None:
    """Keep orbax's reports of a failed checkpoint read or write off stderr (once a process)."""
    absl_logger = logging.getLogger("absl")
    if any(isinstance(f, _OrbaxErrorLogs) for f in absl_logger.filters):
        return
    absl_logger.addFilter(_OrbaxErrorLogs())
    def hook(unraisable: Any, previous=sys.unraisablehook, debris=_orbax_debris) -> None:
        if not debris(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook


def _first_words(err: BaseException, limit: int = 100) -> str:
    """The first sentence of an error's message, on one line and cut to about `limit`
    characters (orbax's run to pages)."""
    text = " ".join(str(err).split()).split(". ")[0] or type(err).__name__
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


class Checkpoints:
    """The orbax checkpoints of a workdir: numbered steps, each a pytree of arrays."""

    def __init__(self, directory: Path, *, keep: int | None = None, every: int | None = None,
                 create: bool = True):
        import orbax.checkpoint as ocp

        _quiet_orbax()
        self._ocp = ocp
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every or 1, create=create,
            cleanup_tmp_directories=True)  # Saves cut short by a killed process.
        self.directory = directory
        self._manager = ocp.CheckpointManager(directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest(self) -> int | None:
        return self._manager.latest_step()

    def should_save(self, step: int) -> bool:
        return self._manager.should_save(step)

    def save(self, step: int, items: dict[str, Any]) -> None:
        """Save checkpoint `step`: named items, each a pytree of arrays."""
        args = self._ocp.args
        self._manager.save(step, args=args.Composite(**{
            name: args.StandardSave(tree) for name, tree in items.items()}), force=True)

    def restore(self, step: int, like: dict[str, Any]) -> dict[str, Any]:
        """The items of checkpoint `step` named in `like` (others are not read), each shaped
        (and sharded) like its entry there; CheckpointError when it cannot be read (damaged,
        or written by an incompatible version)."""
        args = self._ocp.args
        try:
            restored = self._manager.restore(step, args=args.Composite(**{
                name: args.StandardRestore(tree) for name, tree in like.items()}))
            return {name: restored[name] for name in like}
        except Exception as err:  # orbax raises bare Exception, ValueError, OSError, ...
            raise CheckpointError(step, self.directory, _first_words(err)) from err

    def restore_newest(self, like: dict[str, Any], *, set_aside: Path | None = None
                       ) -> tuple[int, dict[str, Any]] | None:
        """The newest checkpoint that can be read, as (step, its items shaped like `like`);
        None when there is none.

        A damaged checkpoint (truncated or missing files) is skipped with a notice on stderr;
        with `set_aside` it is also moved into that directory, out of the way of the steps
        training will write again. In a multi-process run a step counts as intact only if
        every process could read its shards; process 0 moves and tells. Raises WorkdirError,
        moving nothing, when no checkpoint can be read.
        """
        damaged: list[CheckpointError] = []
        main = distributed.is_main()
        for step in reversed(self.steps()):
            try:
                tree, failed = self.restore(step, like), None
            except CheckpointError as err:
                tree, failed = None, err
            # Processes read their own shards: a step is used only if every one could.
            if not distributed.all_agree(failed is None):
                damaged.append(failed or CheckpointError(step, self.directory,
                                                         "another process could not read it"))
                continue
            for err in damaged if main else ():  # process 0 moves and tells
                where = ("" if set_aside is None
                         else f"; moved to {self._set_aside(err.step, set_aside)}")
                warn(f"warning: {err}{where}; using checkpoint {step}, the newest intact one")
            if damaged and set_aside is not None:
                distributed.barrier("damaged checkpoints set aside")
                self._manager.reload()
            return step, tree
        if not damaged:
            return None
        raise WorkdirError(
            f"no checkpoint in {self.directory} can be read ("
            f"{'; '.join(f'step {err.step}: {err.why}' for err in damaged)}). If another "
            "version of tnca_jax wrote them, use that version; else train again in a new "
            "--workdir")

    def _set_aside(self, step: int, destination: Path) -> Path:
        """Move checkpoint `step` into `destination` (a fresh name there); returns its path."""
        destination.mkdir(parents=True, exist_ok=True)
        target, copy = destination / str(step), 1
        while target.exists():
            target, copy = destination / f"{step}-{copy}", copy + 1
        shutil.move(self.directory / str(step), target)
        return target

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def resume_point(self) -> str:
        """Where a rerun would start, in words."""
        return resume_point(self.latest())


def resume_point(latest: int | None) -> str:
    if latest is None:
        return "no checkpoint was written yet, a rerun starts afresh"
    return f"the last good checkpoint is at iteration {latest}, a rerun resumes from it"
