"""Growing a spectrogram from a trained TNCA and turning it into sound."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from tnca_jax.contract import SpectralContract
from tnca_jax.model import TNCA, grow_stages
from tnca_jax.train import CHECKPOINT_DIR, from_unit, init_train_state, restore

RUN_FILE = "run.json"


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """A grown note.

    Attributes:
      spectrogram: [n_mels, frames] the contract's log-mel after the last growth step.
      audio: float32 mono waveform, frames * hop samples.
      sample_rate: Hz.
      stages: [num_stages, n_mels, frames] log-mel at `stage_steps` (last = spectrogram).
      stage_steps: growth step of each stage.
      contract: the spectral contract of every spectrogram here.
    """

    spectrogram: np.ndarray
    audio: np.ndarray
    sample_rate: int
    stages: np.ndarray
    stage_steps: list[int]
    contract: SpectralContract


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What a workdir holds: its config, contract, grid size and the trained TNCA."""

    config: ml_collections.ConfigDict
    contract: SpectralContract
    n_frames: int
    model: TNCA
    step: int


def write_run_file(workdir: Path, config: ml_collections.ConfigDict,
                   contract: SpectralContract, n_frames: int) -> None:
    payload = {"config": json.loads(config.to_json()), "contract": contract.to_dict(),
               "n_bands": contract.n_mels, "n_frames": n_frames}
    tmp = workdir / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, workdir / RUN_FILE)


def read_run_file(workdir: Path) -> dict:
    return json.loads((workdir / RUN_FILE).read_text())


def _locate(workdir_or_checkpoint: str | os.PathLike) -> tuple[Path, int | None]:
    """A workdir (latest checkpoint) or one checkpoint step directory inside it."""
    path = Path(workdir_or_checkpoint)
    if (path / RUN_FILE).exists():
        return path, None
    if path.name.isdigit() and (path.parent.parent / RUN_FILE).exists():
        return path.parent.parent, int(path.name)
    raise FileNotFoundError(f"{path} is neither a tnca_jax workdir (with {RUN_FILE}) nor a "
                            f"checkpoint step directory inside one")


def load_run(workdir_or_checkpoint: str | os.PathLike) -> TrainedRun:
    """Restore the trained TNCA of a workdir (latest checkpoint) or of one checkpoint."""
    workdir, step = _locate(workdir_or_checkpoint)
    run = read_run_file(workdir)
    config = ml_collections.ConfigDict(run["config"])
    contract = SpectralContract.from_dict(run["contract"])
    graphdef, train_state, pool = init_train_state(config, contract.n_mels, run["n_frames"])
    manager = ocp.CheckpointManager(workdir.absolute() / CHECKPOINT_DIR)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir} has no checkpoint yet: train first")
    restore(manager, step, train_state, pool)
    manager.close()
    model, _ = nnx.merge(graphdef, train_state)
    return TrainedRun(config=config, contract=contract, n_frames=run["n_frames"], model=model,
                      step=step)


def render(model: TNCA, contract: SpectralContract, n_frames: int, vocoder, *, steps: int,
           num_stages: int = 8, seed: int = 0) -> GenerationResult:
    """Grow one note from the seed for `steps` steps and vocode it."""
    graphdef, params = nnx.split(model)
    seed_grid = model.seed(n_frames)
    grower = jax.jit(functools.partial(grow_stages, graphdef, steps=steps,
                                       num_stages=num_stages))
    shown = grower(params, seed_grid, jax.random.key(seed))[:, 0]
    stages = np.asarray(from_unit(shown, contract))
    audio = np.asarray(vocoder(stages[-1][None], contract=contract)[0], np.float32)
    stage_steps = [int(s) for s in np.linspace(0, steps, num_stages + 1).astype(int)[1:]]
    return GenerationResult(spectrogram=stages[-1], audio=audio,
                            sample_rate=contract.sample_rate, stages=stages,
                            stage_steps=stage_steps, contract=contract)


def generate(workdir_or_checkpoint: str | os.PathLike, *, steps: int | None = None,
             seed: int = 0, vocoder: str = "griffinlim", vocoder_path: str | None = None,
             num_stages: int | None = None) -> GenerationResult:
    """Grow a note from a trained workdir (or one of its checkpoints) and render it.

    Args:
      workdir_or_checkpoint: a training workdir, or `workdir/checkpoints/<step>`.
      steps: growth steps (default: the config's `generate.steps`).
      seed: seed of the stochastic growth and of the vocoder's random phase.
      vocoder: vocoder name (see `vocoders.load`); its contract must equal the run's.
      vocoder_path: weights for learned vocoders.
      num_stages: growth stages to keep (default: the config's `generate.num_stages`).
    """
    import vocoders

    run = load_run(workdir_or_checkpoint)
    voc = vocoders.load(vocoder, vocoder_path, contract=run.contract)
    voc.contract.require_same(run.contract, what="the trained TNCA's spectrogram")
    return render(run.model, run.contract, run.n_frames, voc,
                  steps=steps or run.config.generate.steps,
                  num_stages=num_stages or run.config.generate.num_stages, seed=seed)
