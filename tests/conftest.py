"""Shared fixtures: a tiny configuration on the shipped violin, and one trained tiny workdir."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
# One persistent compilation cache for the tests and the main.py runs they start (keyed by the
# jax version and the program, so it is safe to share): each program compiles once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(tempfile.gettempdir()) / "tnca_jax_test_jit_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

from configs.violin import get_config  # noqa: E402
from tnca_jax.numba_cache import load_librosa  # noqa: E402

load_librosa()  # the modules that compile numba code on import, under the machine-wide lock

VIOLIN = ROOT / "data" / "violin" / "Violin.arco.ff.sulE.A5.stereo.wav"


def tiny_config(iterations: int = 3):
    """The quick config shrunk to seconds: 0.6 s of the violin, hidden 16, 4-6 growth steps."""
    config = get_config("quick")
    config.data.max_seconds = 0.6
    config.model.hidden = 16
    config.train.iterations = iterations
    config.train.batch_size = 2
    config.train.pool_size = 4
    config.train.min_growth_steps = 4
    config.train.max_growth_steps = 6
    config.train.log_every = 1
    config.train.checkpoint_every = 2
    config.generate.growth_steps = 8
    config.generate.num_stages = 4
    return config


def train_note(config, workdir, *, stop_at: int | None = None):
    """The note job's training alone (no rendering) of `config` in `workdir`; returns the
    trained model."""
    from tnca_jax.modes import load_notes, new_inverse
    from tnca_jax.runs import describe
    from tnca_jax.settings import read_tnca
    from tnca_jax.tnca_training import plan_training
    from tnca_jax.training import merge_state, train
    from tnca_jax.workdir import Workdir

    settings = read_tnca(config)
    notes = load_notes(settings, new_inverse(settings))
    program = plan_training(settings, notes, lambda w: w.write_run(describe(settings, notes)))
    graphdefs, state = train(program, Workdir(workdir), settings.train, progress=False,
                             stop_at=stop_at)
    return merge_state(graphdefs, state)[0]


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory) -> Path:
    from tnca_jax.modes import train_and_evaluate
    from tnca_jax.settings import read_tnca

    workdir = tmp_path_factory.mktemp("violin_run")
    train_and_evaluate(read_tnca(tiny_config()), workdir, progress=False)
    return workdir


def tiny_instruments_config():
    """The quick config shrunk to seconds: 3 violin and 2 flute notes of octave 5 (violin A5
    held out), 1 s each, hidden 16, 6-8 growth steps, 40 iterations."""
    from configs.instruments import get_config as instruments_config

    config = instruments_config("quick")
    config.data.paths = tuple(str(ROOT / "data" / p) for p in (
        "iowa_mis/violin/*sulA.[ABC]5.stereo.flac", "iowa_mis/violin/*sulA.D5.stereo.flac",
        "vsco2/flute/[CE]5.flac"))
    config.data.max_seconds = 1.0
    config.model.hidden = 16
    config.train.iterations = 40
    config.train.batch_size = 2
    config.train.pool_size = 12
    config.train.min_growth_steps = 6
    config.train.max_growth_steps = 8
    config.train.log_every = 10
    config.train.checkpoint_every = 20
    config.generate.growth_steps = 16
    config.generate.num_stages = 4
    config.generate.seconds = 0.8
    config.generate.erase_at = 8
    config.eval.f0 = False
    config.eval.max_notes = 3
    return config


@pytest.fixture(scope="session")
def instruments_workdir(tmp_path_factory) -> Path:
    """A tiny instruments model, trained, measured and reported."""
    from tnca_jax.modes import train_and_evaluate
    from tnca_jax.settings import read_tnca

    workdir = tmp_path_factory.mktemp("instruments_run")
    train_and_evaluate(read_tnca(tiny_instruments_config()), workdir, progress=False)
    return workdir
