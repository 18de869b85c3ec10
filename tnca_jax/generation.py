"""From a trained workdir to sound: restore the TNCA, grow a note, render it.

`generate()` is the Python entry point; the modes of the command line use `load_run`,
`RenderSettings` and `render` from here. The grower and the weight-free inverses are jitted
once per model and setting (module-level jits with static arguments), so calling `generate()`
again on the same workdir compiles nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import ml_collections
import numpy as np
from flax import nnx

from tnca_jax.audio import fit_full_scale
from tnca_jax.checks import check_growth, check_refinement
from tnca_jax.contract import SpectralContract, measuring_contract
from tnca_jax.inverse import Inverse, load_inverse
from tnca_jax.model import TNCA, grow_stages
from tnca_jax.refine import Refinement, Selection, postprocess, select
from tnca_jax.representations import (
    Representation,
    config_representation_name,
    get_representation,
)
from tnca_jax.target import Target, load_target
from tnca_jax.train import create_train_state, restore_for_use
from tnca_jax.workdir import Workdir, WorkdirError


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
class RenderSettings:
    """How a note is grown and rendered: growth steps, stages kept, growth seed, refinement.

    `from_config` reads a config's `generate` section and `seed`; `replace` overrides the
    fields given (None keeps the config's).
    """

    steps: int
    num_stages: int
    seed: int
    refinement: Refinement

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> RenderSettings:
        return cls(steps=config.generate.steps, num_stages=config.generate.num_stages,
                   seed=config.seed, refinement=Refinement.from_config(config.generate))

    def replace(self, **overrides) -> RenderSettings:
        return dataclasses.replace(self, **{key: value for key, value in overrides.items()
                                            if value is not None})

    def check(self, prefix: str = "--config.generate.") -> None:
        """ConfigError for settings that cannot render (see `tnca_jax.checks`)."""
        check_growth(self.steps, self.num_stages, prefix)
        check_refinement(self.refinement, prefix)

    @property
    def stage_steps(self) -> list[int]:
        """The growth step of each kept stage."""
        return [int(s) for s in np.linspace(0, self.steps, self.num_stages + 1).astype(int)[1:]]


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """What a workdir holds: its config, representation, grid length and the trained TNCA
    (at checkpoint `step`)."""

    workdir: Workdir
    config: ml_collections.ConfigDict
    representation: Representation
    n_frames: int
    model: TNCA
    step: int

    @property
    def contract(self) -> SpectralContract:
        return self.representation.contract

    def target(self) -> Target:
        """The recording this TNCA was trained on, checked to give the same grid."""
        target = load_target(self.config, self.representation)
        if target.n_frames != self.n_frames:
            raise WorkdirError(
                f"{self.workdir} was trained on a {self.n_frames}-frame target, but its "
                f"recording {self.config.audio_path} now gives {target.n_frames} frames; "
                "evaluate against the recording it was trained on")
        return target


def load_run(workdir_or_checkpoint: str | os.PathLike) -> TrainedRun:
    """Restore the trained TNCA of a workdir (its newest checkpoint that can be read: a
    damaged one is skipped, saying so on stderr) or of one checkpoint
    (`workdir/checkpoints/<step>`)."""
    workdir, step = Workdir.locate(workdir_or_checkpoint)
    run = workdir.read_run()
    representation = get_representation(config_representation_name(run.config), run.contract)
    graphdef, train_state, pool = create_train_state(run.config, representation.n_bins,
                                                     run.n_frames,
                                                     n_values=representation.n_values)
    step = restore_for_use(workdir, step, train_state, pool)
    model, _ = nnx.merge(graphdef, train_state)
    return TrainedRun(workdir=workdir, config=run.config, representation=representation,
                      n_frames=run.n_frames, model=model, step=step)


@functools.partial(jax.jit, static_argnames=("graphdef", "steps", "num_stages"))
def _grow_batch(params: nnx.State, seed: jax.Array, keys: jax.Array, *, graphdef: nnx.GraphDef,
                steps: int, num_stages: int) -> jax.Array:
    """One note grown per key: [N] keys -> [N, num_stages, 1, n_values, bins, frames]."""
    return jax.vmap(lambda key: grow_stages(graphdef, params, seed, key, steps, num_stages))(keys)


def grow_candidates(model: TNCA, representation: Representation, n_frames: int, *,
                    steps: int, num_stages: int, seeds: list[int]) -> np.ndarray:
    """Grow one note per growth seed, all in one jitted (vmapped) call.

    Returns [len(seeds), num_stages, n_values, bins, n_frames], the representation in native
    units at evenly spaced growth steps (see `grow_stages`); the last stage is the grown note.
    """
    graphdef, params = nnx.split(model)
    shown = _grow_batch(params, model.seed(n_frames), jax.vmap(jax.random.key)(np.array(seeds)),
                        graphdef=graphdef, steps=steps, num_stages=num_stages)
    return np.asarray(representation.from_unit(shown[:, :, 0]))


def render(model: TNCA, n_frames: int, inverse: Inverse, settings: RenderSettings, *,
           reference: np.ndarray | None = None, return_stages: bool = False
           ) -> GenerationResult:
    """Grow a note from the seed as `settings` say and render it with `inverse`.

    `settings.refinement.best_of` = N candidates grow with the growth seeds seed..seed+N-1 in
    one jitted call and are rendered as one batch; for N > 1 each is scored against
    `reference` (mono audio at the contract's rate) and the best is kept. The refinement's
    post-processing (mel only) applies to every stage before rendering. `return_stages` also
    renders every stage (`stage_audio`). Rendered audio never exceeds full scale: a note that
    would is scaled down to peak 1 (`tnca_jax.audio.fit_full_scale`).
    """
    refinement = settings.refinement
    count = refinement.best_of
    if count > 1 and reference is None:
        raise ValueError("best-of-N needs the reference recording to score candidates against")
    representation, contract = inverse.representation, inverse.contract
    seeds = list(range(settings.seed, settings.seed + count))
    candidates = grow_candidates(model, representation, n_frames, steps=settings.steps,
                                 num_stages=settings.num_stages,
                                 seeds=seeds)  # [N, S, V, bins, frames]
    candidates = postprocess(candidates, contract, refinement)  # mel only (check_config)
    audio = fit_full_scale(inverse(candidates[:, -1]))
    selection = (select(reference, audio, seeds, measuring_contract(contract),
                        refinement.best_of_metric) if count > 1 else None)
    chosen = selection.chosen if selection else 0
    stages = candidates[chosen]
    stage_audio = fit_full_scale(inverse(stages)) if return_stages else None
    return GenerationResult(spectrogram=stages[-1, 0], audio=audio[chosen],
                            sample_rate=contract.sample_rate, stages=stages[:, 0],
                            stage_steps=settings.stage_steps, contract=contract,
                            features=stages[-1], representation=representation,
                            stage_audio=stage_audio, selection=selection)


def render_run(run: TrainedRun, inverse: Inverse, settings: RenderSettings, *,
               return_stages: bool = False) -> GenerationResult:
    """A trained run's note grown and rendered as `settings` (checked by the caller) say;
    best-of-N scores candidates against the run's recording."""
    reference = run.target().audio if settings.refinement.best_of > 1 else None
    return render(run.model, run.n_frames, inverse, settings, reference=reference,
                  return_stages=return_stages)


def generate(workdir_or_checkpoint: str | os.PathLike, *, steps: int | None = None,
             seed: int | None = None, vocoder: str = "griffinlim",
             vocoder_path: str | None = None, num_stages: int | None = None,
             refinement: Refinement | None = None, return_stages: bool = False
             ) -> GenerationResult:
    """Grow a note from a trained workdir (or one of its checkpoints) and render it.

    Args:
      workdir_or_checkpoint: a training workdir, or `workdir/checkpoints/<step>`.
      steps: growth steps (default: the run config's `generate.steps`).
      seed: seed of the stochastic growth (default: the run config's `seed`). Griffin-Lim's
        starting phase stays fixed, so notes grown with different seeds differ by their
        growth alone.
      vocoder: vocoder name (see `tnca_jax.inverse.load_vocoder`); its contract must equal
        the run's. Used for `mel` runs; `stft` and `mag_if` runs render themselves.
      vocoder_path: weights for learned vocoders.
      num_stages: growth stages to keep (default: the run config's `generate.num_stages`).
      refinement: best-of-N and post-processing (default: the run config's `generate`); N > 1
        scores candidates against the run's recording.
      return_stages: also vocode every stage (`GenerationResult.stage_audio`), to hear growth.

    Raises a `tnca_jax.UserError` (ConfigError, MissingFileError, WorkdirError,
    ContractMismatchError, ...) before growing anything when an argument or the workdir
    cannot work.
    """
    run = load_run(workdir_or_checkpoint)
    settings = RenderSettings.from_config(run.config).replace(
        steps=steps, num_stages=num_stages, seed=seed, refinement=refinement)
    settings.check(prefix="")
    inverse = load_inverse(run.representation, vocoder, vocoder_path)
    return render_run(run, inverse, settings, return_stages=return_stages)
