"""A run's directory: the one place that reads and writes run.json, metrics.json, the training
log and the checkpoints.

Writes are safe: the directory is probed for writability before a run starts, every file is
replaced whole (written to a temporary sibling, then renamed), and every failed write (disk
full, read-only, permissions) becomes one `WorkdirWriteError`. Only this module imports orbax.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from tnca_jax.audio import write_wav
from tnca_jax.contract import SpectralContract
from tnca_jax.errors import MissingFileError, UserError
from tnca_jax.files import reason, replacing

# What a run writes (tnca_jax.modes), named in one place.
RUN_FILE = "run.json"  # config, contract and grid length: what generate() restores
METRICS_FILE = "metrics.json"
TRAIN_LOG = "train_metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
TARGET_WAV, GENERATED_WAV, CEILING_WAV = "target.wav", "generated.wav", "ceiling.wav"
COMPARISON_PNG, GROWTH_PNG = "comparison.png", "growth.png"
GROWTH_WAV, GROWTH_GIF = "growth.wav", "growth.gif"
REPORT_FILE = "report.html"


class WorkdirWriteError(UserError, OSError):
    """Writing into the workdir failed; what was there before stays intact."""


class WorkdirError(UserError, ValueError):
    """The workdir holds something that cannot be used (damaged run.json, another run)."""


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What run.json says: the config a run was trained with, its contract and grid length."""

    config: ml_collections.ConfigDict
    contract: SpectralContract
    n_frames: int


class Checkpoints:
    """The orbax checkpoints of a workdir: numbered steps, each a pytree of arrays."""

    def __init__(self, directory: Path, *, keep: int | None = None, every: int | None = None,
                 create: bool = True):
        import orbax.checkpoint as ocp

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
        """Checkpoint `step` as a pytree shaped (and sharded) like `like`."""
        return self._manager.restore(step, args=self._ocp.args.StandardRestore(like))

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def resume_point(self) -> str:
        """Where a rerun would start, in words."""
        latest = self.latest()
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
    def writing(self, checkpoints: Checkpoints | None = None) -> Iterator[None]:
        """Turn a failed write (disk full, read-only; orbax reports some as ValueError) into
        WorkdirWriteError, naming the checkpoint a rerun resumes from."""
        try:
            yield
        except (OSError, ValueError) as err:
            if isinstance(err, UserError):
                raise
            resume = f"; {checkpoints.resume_point()}:" if checkpoints else ":"
            raise WorkdirWriteError(
                f"writing to {self.path} failed ({reason(err)}){resume} free disk space or fix "
                "permissions, then rerun the same command") from err

    def write_bytes(self, name: str, data: bytes) -> Path:
        path = self.file(name)
        with self.writing(), replacing(path) as tmp:
            tmp.write_bytes(data)
        return path

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, payload: dict) -> Path:
        return self.write_text(name, json.dumps(payload, indent=2))

    def read_json(self, name: str) -> dict:
        return json.loads(self.file(name).read_text())

    def write_wav(self, name: str, audio: np.ndarray, sample_rate: int) -> Path:
        with self.writing():
            write_wav(self.file(name), audio, sample_rate)
        return self.file(name)

    # ---------------------------------------------------------------- run.json
    def has_run(self) -> bool:
        return self.file(RUN_FILE).exists()

    def write_run(self, config: ml_collections.ConfigDict, contract: SpectralContract,
                  n_frames: int) -> None:
        self.write_json(RUN_FILE, {"config": json.loads(config.to_json()),
                                   "contract": contract.to_dict(), "n_frames": n_frames})

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
                         n_frames=run["n_frames"])

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
    def read_log(self) -> list[dict]:
        """The records of the training log; a line cut short by a killed run is skipped."""
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

    def trim_log(self, last_step: int) -> None:
        """Keep the log records up to `last_step` (later steps will be logged again)."""
        if not self.file(TRAIN_LOG).exists():
            return
        kept = [r for r in self.read_log() if r["step"] <= last_step]
        self.write_text(TRAIN_LOG, "".join(json.dumps(r) + "\n" for r in kept))

    @contextlib.contextmanager
    def log_appender(self, checkpoints: Checkpoints | None = None) -> Iterator[Any]:
        """A function that appends one record to the training log (flushed), open for the
        duration of the block; a failed write names the checkpoint a rerun resumes from."""
        with self.writing(checkpoints), self.file(TRAIN_LOG).open("a") as log:
            def append(record: dict) -> None:
                with self.writing(checkpoints):
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
