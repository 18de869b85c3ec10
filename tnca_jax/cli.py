"""Command-line entry: dispatches `--mode` and turns known failures into one-line errors.

Each mode is a function `(config, workdir) -> dict` whose result is printed as JSON. A user
error (bad file, bad config, contract mismatch, ...) prints `error: <one line>` to stderr and
exits with status 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import ml_collections

from tnca_jax.audio import AudioError
from tnca_jax.contract import ContractError, ContractMismatchError
from tnca_jax.run import evaluate_workdir, growth_workdir
from tnca_jax.train import NonFiniteError
from tnca_jax.vocode import ceiling, generate_workdir

USER_ERRORS = (AudioError, ContractError, ContractMismatchError, NonFiniteError,
               FileNotFoundError, ValueError, OSError, ImportError)  # ImportError: an extra


def _train(config: ml_collections.ConfigDict, workdir: str) -> dict:
    from tnca_jax.run import train_and_evaluate

    report = train_and_evaluate(config, workdir)
    return {"workdir": workdir, "generated": report["generated"],
            "ceiling_mel_l1_db": report["ceiling"]["mel_l1_db"],
            "static_mel_l1_db": report["static_baseline"]["mel_l1_db"],
            "temporal_gain": report["temporal_gain"]}


MODES: dict[str, Callable[[ml_collections.ConfigDict, str], dict]] = {
    "train": _train,
    "evaluate": evaluate_workdir,  # grow, measure, draw again; writes report.html
    "growth": growth_workdir,  # growth.wav and growth.gif
    "ceiling": ceiling,  # the recording's own log-mel through the vocoder, before training
    "generate": generate_workdir,  # a trained workdir rendered with the config's vocoder
}


def run(mode: str, config: ml_collections.ConfigDict, workdir: str, *,
        debug: bool = False) -> int:
    try:
        summary = MODES[mode](config, workdir)
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)  # One line, always.
        return 2
    print(json.dumps(summary, indent=2))
    return 0
