"""Command-line entry: reads the config once into the job's settings (`tnca_jax.jobs`), runs
`--mode`, and turns user errors into one line.

Each mode is a function `(settings, workdir) -> dict` whose result is printed as JSON. A user
error (`tnca_jax.errors.UserError`: bad file, bad config, contract mismatch, unwritable
workdir, ...) prints `error: <one line>` to stderr and exits with status 2; `--debug` shows
the traceback instead. Any other exception is a bug and keeps its traceback. Ctrl-C prints
`interrupted: <where a rerun resumes>` and exits with status 130 (`tnca_jax.interrupts`).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence

import ml_collections

from tnca_jax import distributed, interrupts
from tnca_jax.distributed import Cluster
from tnca_jax.errors import ConfigError, UserError
from tnca_jax.jobs import MODE_NAMES, job_of

__all__ = ["MODE_NAMES", "Cluster", "flag_error", "run"]


def run(mode: str, config: ml_collections.ConfigDict, workdir: str, *,
        debug: bool = False, cluster: Cluster | None = None) -> int:
    """Run `mode`, first joining the other processes of `cluster` (None: one process);
    returns the process exit status (0, or 2 after a one-line user error; Ctrl-C ends the
    process with 130)."""
    try:
        if not str(workdir).strip():
            raise ConfigError("--workdir is empty: name the run's directory, e.g. "
                              "--workdir=runs/violin")
        if cluster is not None:
            if cluster.wanted and mode != "train":
                raise ConfigError(f"--mode={mode} runs in one process; leave out "
                                  "--distributed/--coordinator_address (only training is "
                                  "split over processes)")
            distributed.initialize(cluster)
        with interrupts.exit_on_sigint(lambda: interrupted(mode, workdir)):
            job = job_of(config)
            settings = job.settings(config.to_dict())  # the config, read once
            summary = job.mode(mode)(settings, workdir)
    except UserError as err:
        if debug:
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)  # One line, always.
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def interrupted(mode: str, workdir: str) -> str:
    """What Ctrl-C leaves in `workdir` and what a rerun does, in words."""
    if mode == "train":
        from tnca_jax.workdir import Workdir

        return (f"training in {workdir} stopped; {Workdir(workdir).resume_point()} "
                "(run the same command)")
    return (f"--mode={mode} stopped; the files it wrote in {workdir} are complete, run the same "
            "command to do it again")


def flag_error(err: BaseException, argv: Sequence[str]) -> str:
    """One line for a command line absl or ml_collections could not parse: the flag, what is
    wrong with it, and ml_collections' "Did you mean" for a misspelled config key."""
    chain = [err]
    while chain[-1].__cause__ or chain[-1].__context__:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for cause in chain:
        text = str(cause.args[0]) if isinstance(cause, KeyError) and cause.args else ""
        if "Did you mean" in text:  # e.g. "'iteratons'\nDid you mean "iterations" instead ..."
            key, hint = (part.strip() for part in text.split("\n", 1))
            name = key.strip("'\"")
            flag = next((arg.split("=")[0] for arg in argv if arg.startswith("--config.")
                         and name in arg.split("=")[0].split(".")), "--config")
            return f"{flag}: no config key {key}. {hint}"
    if isinstance(err, OSError):  # a config file that is not there: the OS's last word
        return f"--config: {str(err).strip().splitlines()[-1].strip()}"
    text = " ".join(str(err).split())
    if "Traceback" in text:  # a config file that raised: its own message, not the traceback
        flag = re.match(r"flag (--\S+?): ", text)
        text = f"{flag[1] + ': ' if flag else ''}{' '.join(str(chain[-1]).split())}"
    return f"{text.removeprefix('flag ')} (python main.py --helpshort lists the flags)"
