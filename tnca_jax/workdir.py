"""A run's directory: the one place that reads and writes run.json, metrics.json, the training
log and the checkpoints.

Writes are safe: the directory is probed for writability before a run starts, every file is
replaced whole (written to a temporary sibling, then renamed), and every failed write (disk
full, read-only, permissions) becomes one `WorkdirWriteError` naming the file. A run holds the
workdir's lock file (`Workdir.lock`) so that a second run cannot write into it at the same time.
A damaged checkpoint is skipped for the newest intact one (`tnca_jax.checkpoints`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tnca_jax import interrupts
from tnca_jax.audio import write_wav
from tnca_jax.checkpoints import Checkpoints, resume_point
from tnca_jax.errors import (
    MissingFileError,
    UserError,
    WorkdirError,
    WorkdirInUseError,
    WorkdirWriteError,
    warn,
)
from tnca_jax.files import reason, replacing

# What a run writes (tnca_jax.modes), named in one place.
RUN_FILE = "run.json"  # settings, contract, data: what generate() restores (tnca_jax.runs)
RUN_FORMAT = "tnca_jax.run/2"
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

    def write_run(self, run: dict) -> None:
        """Write run.json: what the checkpoints hold (`tnca_jax.runs` says what is in it)."""
        self.write_json(RUN_FILE, {"format": RUN_FORMAT, **run})

    def read_run(self) -> dict:
        """run.json as written; WorkdirError (one line) when it is damaged, or written by a
        tnca_jax whose runs this one cannot read."""
        path = self.file(RUN_FILE)
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError included
            raise WorkdirError(f"{path} is damaged ({' '.join(str(err).split())}); train again "
                               "in a new --workdir") from None
        if not isinstance(run, dict):
            raise WorkdirError(f"{path} is damaged (not a JSON object); train again in a new "
                               "--workdir")
        if run.get("format") != RUN_FORMAT:
            raise WorkdirError(f"{path} was written by a tnca_jax whose runs this one cannot "
                               "read (format {!r}, this one reads {!r}); train again in a new "
                               "--workdir".format(run.get("format"), RUN_FORMAT))
        return run

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
            if isinstance(record, dict) and "iteration" in record:
                records.append(record)
        return records

    def read_log(self) -> list[dict]:
        """The metric records of the training log (loss, ... at an iteration)."""
        return [record for record in self._log_records() if "retry" not in record]

    def read_retries(self) -> list[dict]:
        """The training log's records of rejected iterations retried at a lower learning
        rate."""
        return [record for record in self._log_records() if "retry" in record]

    def trim_log(self, last: int) -> None:
        """Keep the log records up to iteration `last` (later ones will be logged again)."""
        if not self.file(TRAIN_LOG).exists():
            return
        kept = [r for r in self._log_records() if r["iteration"] <= last]
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
        return resume_point(max(steps, default=None))

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
