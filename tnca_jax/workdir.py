"""A run's directory: the one place that reads and writes run.json, metrics.json, the training
log and the checkpoints.

Writes are safe: the directory is probed for writability before a run starts, every file is
replaced whole (written to a temporary sibling, then renamed), and every failed write (disk
full, read-only, permissions) becomes one `WorkdirWriteError` naming the file. A run holds the
workdir's lock file (`Workdir.lock`) so that a second run cannot write into it at the same time.
A damaged checkpoint is skipped for the newest intact one (`Checkpoints.restore_newest`). Only
this module imports orbax; what orbax prints about a failed read or write (its error logs, its
abandoned coroutines) is kept off stderr: the one exception raised here says it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from tnca_jax import interrupts
from tnca_jax.audio import write_wav
from tnca_jax.contract import SpectralContract
from tnca_jax.errors import MissingFileError, UserError, warn
from tnca_jax.files import reason, replacing

# What a run writes (tnca_jax.modes), named in one place.
RUN_FILE = "run.json"  # config, contract and grid length: what generate() restores
METRICS_FILE = "metrics.json"
TRAIN_LOG = "train_metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_CHECKPOINT_DIR = "damaged_checkpoints"  # where training moves checkpoints that fail
LOCK_FILE = "run.lock"  # the process (PID) writing into the workdir now
TARGET_WAV, GENERATED_WAV, CEILING_WAV = "target.wav", "generated.wav", "ceiling.wav"
COMPARISON_PNG, GROWTH_PNG = "comparison.png", "growth.png"
GROWTH_WAV, GROWTH_GIF = "growth.wav", "growth.gif"
REPORT_FILE = "report.html"
NOTES_DIR = "notes"  # a timbre run's rendered notes, morphs, glide and regrowth (WAV)
MORPH_PNG = "morph.png"


class WorkdirWriteError(UserError, OSError):
    """Writing into the workdir failed; what was there before stays intact."""


class WorkdirError(UserError, ValueError):
    """The workdir holds something that cannot be used (damaged run.json, another run)."""


class CheckpointError(WorkdirError):
    """A checkpoint that cannot be read: damaged, or written by an incompatible version."""

    def __init__(self, step: int, directory: Path, why: str):
        super().__init__(f"checkpoint {step} in {directory} cannot be read ({why})")
        self.step, self.why = step, why


class WorkdirInUseError(WorkdirError):
    """Another live process holds the workdir's lock."""


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What run.json says: the config a run was trained with, its contract and grid length;
    for a many-note run (`tnca_jax.timbre_train`) also its instruments and notes."""

    config: ml_collections.ConfigDict
    contract: SpectralContract
    n_frames: int
    timbre: dict | None = None  # {"instruments": [...], "notes": [Note.to_dict(), ...]}


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

    def save(self, step: int, tree: Any) -> None:
        self._manager.save(step, args=self._ocp.args.StandardSave(tree), force=True)

    def restore(self, step: int, like: Any) -> Any:
        """Checkpoint `step` as a pytree shaped (and sharded) like `like`; WorkdirError when it
        cannot be read (damaged, or written by an incompatible version)."""
        try:
            return self._manager.restore(step, args=self._ocp.args.StandardRestore(like))
        except Exception as err:  # orbax raises bare Exception, ValueError, OSError, ...
            raise CheckpointError(step, self.directory, _first_words(err)) from err

    def restore_newest(self, like: Any, *, set_aside: Path | None = None
                       ) -> tuple[int, Any] | None:
        """The newest checkpoint that can be read, as (step, pytree shaped like `like`); None
        when there is none.

        A damaged checkpoint (truncated or missing files) is skipped with a notice on stderr;
        with `set_aside` it is also moved into that directory, out of the way of the steps
        training will write again. Raises WorkdirError, moving nothing, when no checkpoint can
        be read.
        """
        damaged: list[CheckpointError] = []
        for step in reversed(self.steps()):
            try:
                tree = self.restore(step, like)
            except CheckpointError as err:
                damaged.append(err)
                continue
            for err in damaged:
                where = ""
                if set_aside is not None:
                    where = f"; moved to {self._set_aside(err.step, set_aside)}"
                warn(f"warning: {err}{where}; using step {step}, the newest intact checkpoint")
            if damaged and set_aside is not None:
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
        return _resume_point(self.latest())


def _resume_point(latest: int | None) -> str:
    if latest is None:
        return "no checkpoint was written yet, a rerun starts afresh"
    return f"the last good checkpoint is step {latest}, a rerun resumes from it"


class Workdir:
    """The directory of one run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def locate(cls, workdir_or_checkpoint: str | os.PathLike) -> tuple[Workdir, int | None]:
        """A workdir (None: its latest checkpoint) or one checkpoint step directory inside it
        (`workdir/checkpoints/<step>`: that step)."""
        path = Path(workdir_or_checkpoint)
        if (path / RUN_FILE).exists():
            return cls(path), None
        if (path.name.isdigit() and path.parent.name == CHECKPOINT_DIR
                and (path.parent.parent / RUN_FILE).exists()):
            return cls(path.parent.parent), int(path.name)
        raise MissingFileError(f"{path} is neither a tnca_jax workdir (with {RUN_FILE}) nor a "
                               "checkpoint step directory inside one")

    # ---------------------------------------------------------------- writing
    def prepare(self) -> None:
        """Create the directory and prove it writable with a probe file that is removed again."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path) as probe:
                probe.write(b"\0")
                probe.flush()
        except FileExistsError:
            raise WorkdirWriteError(f"workdir {self.path} is a file, not a directory; choose "
                                    "another --workdir") from None
        except OSError as err:
            raise WorkdirWriteError(f"cannot write to workdir {self.path} ({reason(err)}); "
                                    "choose a writable --workdir") from None

    @contextlib.contextmanager
    def writing(self, checkpoints: Checkpoints | None = None, name: str | None = None
                ) -> Iterator[None]:
        """Turn a failed write (disk full, read-only; orbax reports some as ValueError) into
        WorkdirWriteError naming the file `name` (a checkpoint: the step a rerun resumes
        from), what went wrong and the fix; what was there before stays."""
        try:
            yield
        except (OSError, ValueError) as err:
            if isinstance(err, UserError):
                raise
            what = (self.file(name) if name else
                    checkpoints.directory if checkpoints else self.path)
            resume = f"; {checkpoints.resume_point()}:" if checkpoints else ":"
            raise WorkdirWriteError(
                f"writing {what} failed ({reason(err)}){resume} free disk space or make "
                f"{self.path} writable, then rerun the same command") from err

    def write_bytes(self, name: str, data: bytes) -> Path:
        path = self.file(name)
        with self.writing(name=name):
            path.parent.mkdir(parents=True, exist_ok=True)  # a name may hold a folder
            with replacing(path) as tmp:
                tmp.write_bytes(data)
        return path

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, payload: dict) -> Path:
        return self.write_text(name, json.dumps(payload, indent=2))

    def read_json(self, name: str) -> dict:
        return json.loads(self.file(name).read_text())

    def write_wav(self, name: str, audio: np.ndarray, sample_rate: int) -> Path:
        with self.writing(name=name):
            self.file(name).parent.mkdir(parents=True, exist_ok=True)
            write_wav(self.file(name), audio, sample_rate)
        return self.file(name)

    # ---------------------------------------------------------------- run.json
    def has_run(self) -> bool:
        return self.file(RUN_FILE).exists()

    def write_run(self, config: ml_collections.ConfigDict, contract: SpectralContract,
                  n_frames: int, timbre: dict | None = None) -> None:
        run = {"config": json.loads(config.to_json()), "contract": contract.to_dict(),
               "n_frames": n_frames}
        if timbre is not None:
            run["timbre"] = timbre
        self.write_json(RUN_FILE, run)

    def read_run(self) -> RunRecord:
        path = self.file(RUN_FILE)
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError included
            run = str(err)
        if not (isinstance(run, dict) and {"config", "contract", "n_frames"} <= run.keys()):
            raise WorkdirError(f"{path} is damaged ("
                               f"{run if isinstance(run, str) else 'fields missing'}); train "
                               "again in a new --workdir")
        return RunRecord(config=ml_collections.ConfigDict(run["config"]),
                         contract=SpectralContract.from_dict(run["contract"]),
                         n_frames=run["n_frames"], timbre=run.get("timbre"))

    # ---------------------------------------------------------------- metrics.json
    def has_metrics(self) -> bool:
        return self.file(METRICS_FILE).exists()

    def write_metrics(self, payload: dict) -> None:
        self.write_json(METRICS_FILE, payload)

    def read_metrics(self) -> dict:
        if not self.has_metrics():
            raise MissingFileError(f"{self.path} has no {METRICS_FILE}: train there, or run "
                                   "--mode=evaluate, first")
        return self.read_json(METRICS_FILE)

    # ---------------------------------------------------------------- the training log
    def _log_records(self) -> list[dict]:
        """Every record of the training log; a line cut short by a killed run is skipped."""
        path = self.file(TRAIN_LOG)
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "step" in record:
                records.append(record)
        return records

    def read_log(self) -> list[dict]:
        """The metric records of the training log (loss, grid L1, ... at a step)."""
        return [record for record in self._log_records() if "retry" not in record]

    def read_retries(self) -> list[dict]:
        """The training log's records of rejected steps retried at a lower learning rate."""
        return [record for record in self._log_records() if "retry" in record]

    def trim_log(self, last_step: int) -> None:
        """Keep the log records up to `last_step` (later steps will be logged again)."""
        if not self.file(TRAIN_LOG).exists():
            return
        kept = [r for r in self._log_records() if r["step"] <= last_step]
        self.write_text(TRAIN_LOG, "".join(json.dumps(r) + "\n" for r in kept))

    @contextlib.contextmanager
    def log_appender(self, checkpoints: Checkpoints | None = None) -> Iterator[Any]:
        """A function that appends one record to the training log (flushed), open for the
        duration of the block; a failed write names the checkpoint a rerun resumes from."""
        with self.writing(checkpoints, TRAIN_LOG), self.file(TRAIN_LOG).open("a") as log:
            def append(record: dict) -> None:
                with self.writing(checkpoints, TRAIN_LOG):
                    log.write(json.dumps(record) + "\n")
                    log.flush()
            yield append

    # ---------------------------------------------------------------- checkpoints
    def checkpoints(self, *, keep: int | None = None, every: int | None = None,
                    create: bool = True) -> Checkpoints:
        """The workdir's checkpoints (keeping the `keep` newest, saving every `every` steps).
        With `create=False` the directory must exist already."""
        directory = self.path.absolute() / CHECKPOINT_DIR
        if not create and not directory.is_dir():
            raise MissingFileError(f"{self.path} has no checkpoint yet: train first")
        return Checkpoints(directory, keep=keep, every=every, create=create)

    def set_aside_damaged(self) -> Path:
        """Where training moves checkpoints that cannot be read (nothing is deleted)."""
        return self.path.absolute() / DAMAGED_CHECKPOINT_DIR

    def resume_point(self) -> str:
        """Where a rerun would start, read from disk (the checkpoints orbax has finished)."""
        directory = self.path / CHECKPOINT_DIR
        steps = [int(p.name) for p in directory.iterdir()
                 if p.name.isdigit() and p.is_dir()] if directory.is_dir() else []
        return _resume_point(max(steps, default=None))

    # ---------------------------------------------------------------- the lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the workdir's lock file (PID, host, start time) for the block: another live
        run holding it raises WorkdirInUseError; a lock left by a process that is gone is
        taken over, with a notice."""
        path = self.file(LOCK_FILE)
        mine = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        with self.writing(name=LOCK_FILE):
            while True:
                try:
                    descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    self._take_over(path, mine["host"])
                    continue
                with os.fdopen(descriptor, "w") as file:
                    json.dump(mine, file)
                break
        def release() -> None:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(path.read_text()) == mine:
                    path.unlink()

        try:
            with interrupts.on_interrupt(release):
                yield
        finally:
            release()

    def refuse_if_in_use(self) -> None:
        """WorkdirInUseError when another live run holds the lock (checked early, before the
        slow work; `lock` checks again as it takes the lock)."""
        path = self.file(LOCK_FILE)
        if path.exists():
            self._take_over(path, socket.gethostname(), remove=False)

    def _take_over(self, path: Path, host: str, *, remove: bool = True) -> None:
        """Remove a lock whose process is gone (with `remove`); raise WorkdirInUseError if it
        may be alive."""
        try:
            holder = json.loads(path.read_text())
            pid, holder_host, since = int(holder["pid"]), holder["host"], holder["since"]
        except FileNotFoundError:
            return  # released meanwhile: try again
        except (OSError, ValueError, KeyError, TypeError):
            if remove:
                warn(f"warning: {path} is unreadable (a run cut off while taking it?); taking "
                     "it over")
                path.unlink(missing_ok=True)
            return
        fix = (f"wait for it to finish or choose another --workdir (if that run is over, "
               f"delete {path})")
        if holder_host != host:
            raise WorkdirInUseError(f"{self.path} is in use by process {pid} on host "
                                    f"{holder_host} (since {since}); {fix}")
        if pid != os.getpid() and _alive(pid):  # our own PID: a process gone before us
            raise WorkdirInUseError(f"{self.path} is in use by another run (process {pid}, "
                                    f"since {since}); {fix}")
        if remove:
            warn(f"warning: taking over {path}: the run that held it (process {pid}, since "
                 f"{since}) is no longer running")
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
