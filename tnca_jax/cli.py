"""Command-line entry: dispatches `--mode` (`tnca_jax.modes`) and turns user errors into one
line.

Each mode is a function `(config, workdir) -> dict` whose result is printed as JSON. A user
error (`tnca_jax.errors.UserError`: bad file, bad config, contract mismatch, unwritable
workdir, ...) prints `error: <one line>` to stderr and exits with status 2; `--debug` shows
the traceback instead. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import sys

import ml_collections

from tnca_jax.errors import UserError

# The modes of tnca_jax.modes.MODES, named here so that main.py's flags need not import them
# (main.py's docstring says what each does).
MODE_NAMES = ("train", "evaluate", "growth", "ceiling", "generate")


def run(mode: str, config: ml_collections.ConfigDict, workdir: str, *,
        debug: bool = False) -> int:
    """Run `mode`; returns the process exit status (0, or 2 after a one-line user error)."""
    try:
        from tnca_jax.modes import MODES

        summary = MODES[mode](config, workdir)
    except UserError as err:
        if debug:
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)  # One line, always.
        return 2
    print(json.dumps(summary, indent=2))
    return 0
