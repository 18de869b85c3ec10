"""The jobs, registered in one place: a config's `job` names one, which reads the config into
its settings and runs its modes (`--mode`).

- `note`: a TNCA on one recording (configs/violin.py; `tnca_jax.modes`).
- `instruments`: one conditioned TNCA on many notes of several instruments
  (configs/instruments.py; `tnca_jax.modes`).
- `vocoder`: the music vocoder on a corpus (configs/vocoder.py; `vocoders.music_train`).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from tnca_jax.errors import ConfigError

Mode = Callable[[Any, str], dict]  # (settings, workdir) -> summary


@dataclasses.dataclass(frozen=True)
class Job:
    """A job: where its settings reader and its modes live (imported when used)."""

    module: str  # defines MODES: {mode name: Mode}
    read: str  # "module:function" reading a config into the job's settings
    about: str

    def settings(self, config: Any) -> Any:
        module, function = self.read.split(":")
        return getattr(importlib.import_module(module), function)(config)

    def mode(self, name: str) -> Mode:
        modes = importlib.import_module(self.module).MODES
        if name not in modes:
            raise ConfigError(f"the {self.about} has no --mode={name}; choose one of "
                              f"{', '.join(modes)}")
        return modes[name]


JOBS = {
    "note": Job("tnca_jax.modes", "tnca_jax.settings:read_tnca", "note job (one recording)"),
    "instruments": Job("tnca_jax.modes", "tnca_jax.settings:read_tnca",
                       "instruments job (many notes)"),
    "vocoder": Job("vocoders.music_train", "vocoders.music_train:read_vocoder",
                   "vocoder job (configs/vocoder.py)"),
}
MODE_NAMES = ("train", "evaluate", "growth", "ceiling", "generate", "play", "export")


def job_of(config: Any) -> Job:
    """The job a config names (ConfigError for one that does not exist)."""
    name = config.get("job") if hasattr(config, "get") else None
    if name not in JOBS:
        raise ConfigError(f"--config.job={name!r} is not a job; choose one of "
                          f"{', '.join(JOBS)}")
    return JOBS[name]
