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

from tnca_jax.checks import check_growth
from tnca_jax.contract import SpectralContract
from tnca_jax.model import TNCA, grow_stages
from tnca_jax.refine import NO_REFINEMENT, Refinement, Selection, postprocess, select
from tnca_jax.representations import Inverse, Representation, config_kind
from tnca_jax.train import CHECKPOINT_DIR, init_train_state, load_target, restore
from tnca_jax.workdir import replacing

RUN_FILE = "run.json"


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """A grown note.

    Attributes:
      spectrogram: [bins, frames] the grown level after the last growth step: the contract's
        log-mel (representation `mel`) or the log STFT magnitude (`stft`, `mag_if`).
      audio: float32 mono waveform, frames * hop samples.
      sample_rate: Hz.
      stages: [num_stages, bins, frames] the level at `stage_steps` (last = spectrogram).
      stage_steps: growth step of each stage.
      contract: the spectral contract of every spectrogram here.
      features: [n_values, bins, frames] everything grown (native units; for `mag_if` the
        log magnitude and the instantaneous frequency).
      representation: what was grown (`features`' kind).
      stage_audio: [num_stages, samples] every stage vocoded (with `return_stages`), else None.
      selection: the best-of-N record (N > 1), else None.
    """

    spectrogram: np.ndarray
    audio: np.ndarray
    sample_rate: int
    stages: np.ndarray
    stage_steps: list[int]
    contract: SpectralContract
    features: np.ndarray
    representation: Representation
    stage_audio: np.ndarray | None = None
    selection: Selection | None = None


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What a workdir holds: its config, contract, representation, grid size and the trained
    TNCA."""

    config: ml_collections.ConfigDict
    contract: SpectralContract
    representation: Representation
    n_frames: int
    model: TNCA
    step: int


def write_run_file(workdir: Path, config: ml_collections.ConfigDict,
                   contract: SpectralContract, n_frames: int) -> None:
    payload = {"config": json.loads(config.to_json()), "contract": contract.to_dict(),
               "n_bands": contract.n_mels, "n_frames": n_frames}
    with replacing(workdir / RUN_FILE) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))


def read_run_file(workdir: Path) -> dict:
    path = workdir / RUN_FILE
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError included
        run = str(err)
    if not (isinstance(run, dict) and {"config", "contract", "n_frames"} <= run.keys()):
        raise ValueError(f"{path} is damaged ({run if isinstance(run, str) else 'fields missing'})"
                         "; train again in a new --workdir")
    return run


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
    representation = Representation(config_kind(config), contract)
    graphdef, train_state, pool = init_train_state(config, representation.n_bins,
                                                   run["n_frames"],
                                                   n_values=representation.n_values)
    manager = ocp.CheckpointManager(workdir.absolute() / CHECKPOINT_DIR,
                                    options=ocp.CheckpointManagerOptions(create=False))
    steps = manager.all_steps()
    if not steps:
        raise FileNotFoundError(f"{workdir} has no checkpoint yet: train first")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"{workdir} has no checkpoint {step}; it has "
                                f"{', '.join(map(str, sorted(steps)))}")
    step = max(steps) if step is None else step
    restore(manager, step, train_state, pool)
    manager.close()
    model, _ = nnx.merge(graphdef, train_state)
    return TrainedRun(config=config, contract=contract, representation=representation,
                      n_frames=run["n_frames"], model=model, step=step)


def grow_candidates(model: TNCA, representation: Representation, n_frames: int, *,
                    steps: int, num_stages: int, seeds: list[int]) -> np.ndarray:
    """Grow one note per growth seed, all in one jitted (vmapped) call.

    Returns [len(seeds), num_stages, n_values, bins, n_frames], the representation in native
    units at evenly spaced growth steps (see `grow_stages`); the last stage is the grown note.
    """
    graphdef, params = nnx.split(model)
    grower = jax.jit(jax.vmap(functools.partial(grow_stages, graphdef, steps=steps,
                                                num_stages=num_stages), in_axes=(None, None, 0)))
    shown = grower(params, model.seed(n_frames), jax.vmap(jax.random.key)(np.array(seeds)))
    return np.asarray(representation.from_unit(shown[:, :, 0]))


def render(model: TNCA, n_frames: int, inverse: Inverse, *, steps: int, num_stages: int = 8,
           seed: int = 0, refinement: Refinement = NO_REFINEMENT,
           reference: np.ndarray | None = None, return_stages: bool = False
           ) -> GenerationResult:
    """Grow a note from the seed for `steps` steps and render it with `inverse`.

    `refinement.best_of` = N candidates grow with the growth seeds seed..seed+N-1 in one jitted
    call and are rendered as one batch; for N > 1 each is scored against `reference` (mono
    audio at the contract's rate) and the best is kept. The refinement's post-processing (mel
    only) applies to every stage before rendering. `return_stages` also renders every stage
    (`stage_audio`).
    """
    count = refinement.best_of
    if count > 1 and reference is None:
        raise ValueError("best-of-N needs the reference recording to score candidates against")
    representation, contract = inverse.representation, inverse.contract
    seeds = list(range(seed, seed + count))
    candidates = grow_candidates(model, representation, n_frames, steps=steps,
                                 num_stages=num_stages, seeds=seeds)  # [N, S, V, bins, frames]
    candidates = postprocess(candidates, contract, refinement)  # mel only (check_config)
    audio = np.asarray(inverse(candidates[:, -1]), np.float32)
    selection = (select(reference, audio, seeds, contract, refinement.best_of_metric)
                 if count > 1 else None)
    chosen = selection.chosen if selection else 0
    stages = candidates[chosen]
    stage_steps = [int(s) for s in np.linspace(0, steps, num_stages + 1).astype(int)[1:]]
    stage_audio = np.asarray(inverse(stages), np.float32) if return_stages else None
    return GenerationResult(spectrogram=stages[-1, 0], audio=audio[chosen],
                            sample_rate=contract.sample_rate, stages=stages[:, 0],
                            stage_steps=stage_steps, contract=contract, features=stages[-1],
                            representation=representation, stage_audio=stage_audio,
                            selection=selection)


def load_inverse(representation: Representation, vocoder: str, vocoder_path: str | None
                 ) -> Inverse:
    """The way back to audio of `representation`: the named vocoder for `mel` (its contract
    must equal the representation's), the representation's own inverse otherwise (then
    `vocoder` must be the default, griffinlim, with no path)."""
    import vocoders

    if representation.kind != "mel":
        if vocoder != "griffinlim" or vocoder_path:
            raise ValueError(f"representation {representation.kind!r} renders itself; vocoder "
                             f"{vocoder!r} applies to mel only")
        return Inverse(representation)
    return Inverse(representation,
                   vocoders.load(vocoder, vocoder_path, contract=representation.contract))


def generate(workdir_or_checkpoint: str | os.PathLike, *, steps: int | None = None,
             seed: int = 0, vocoder: str = "griffinlim", vocoder_path: str | None = None,
             num_stages: int | None = None, refinement: Refinement | None = None,
             return_stages: bool = False) -> GenerationResult:
    """Grow a note from a trained workdir (or one of its checkpoints) and render it.

    Args:
      workdir_or_checkpoint: a training workdir, or `workdir/checkpoints/<step>`.
      steps: growth steps (default: the config's `generate.steps`).
      seed: seed of the stochastic growth (Griffin-Lim's starting phase stays fixed, so notes
        grown with different seeds differ by their growth alone).
      vocoder: vocoder name (see `vocoders.load`); its contract must equal the run's. Used
        for `mel` runs; `stft` and `mag_if` runs render with their own inverse.
      vocoder_path: weights for learned vocoders.
      num_stages: growth stages to keep (default: the config's `generate.num_stages`).
      refinement: best-of-N and post-processing (default: the run config's `generate`); N > 1
        scores candidates against the run's recording.
      return_stages: also vocode every stage (`GenerationResult.stage_audio`), to hear growth.
    """
    run = load_run(workdir_or_checkpoint)
    steps = run.config.generate.steps if steps is None else steps
    num_stages = run.config.generate.num_stages if num_stages is None else num_stages
    check_growth(steps, num_stages, prefix="")
    inverse = load_inverse(run.representation, vocoder, vocoder_path)
    refinement = refinement or Refinement.from_config(run.config.generate)
    reference = load_target(run.config, run.contract).audio if refinement.best_of > 1 else None
    return render(run.model, run.n_frames, inverse, steps=steps, num_stages=num_stages,
                  seed=seed, refinement=refinement, reference=reference,
                  return_stages=return_stages)
