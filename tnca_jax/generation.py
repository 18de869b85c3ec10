"""From a trained run to sound: grow a note, render it (`render`), and `generate()`, the
package's entry point (`tnca_jax.generate`).

A `note` run grows its one note (best-of-N: N growth seeds, the best against its recording
kept). An `instruments` run grows any note of its instruments: any pitch and length, blends
and glides between instruments (`pure_notes`: the model grows notes of single instruments, a
blend mixes what they grow, frame by frame), and regrowth after part of a note is erased
(`Erase`). One jitted grower serves both (`_grow`, `_regrow`: module-level jits with static
arguments, so a second `generate()` on the same run compiles nothing); each note draws its
own randomness whatever else is grown beside it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnca_jax.audio import fit_full_scale
from tnca_jax.conditioning import (
    InstrumentSpec,
    NoteSpec,
    instrument_vector,
    instrument_weights,
    note_condition,
    pitch_to_midi,
)
from tnca_jax.contract import SpectralContract, measuring_contract
from tnca_jax.errors import ConfigError
from tnca_jax.inverse import Inverse, load_inverse
from tnca_jax.model import NoteCondition, grow, grow_stages
from tnca_jax.refine import Refinement, Selection, postprocess, select
from tnca_jax.representations import Representation
from tnca_jax.runs import Run, load_run, recording_of
from tnca_jax.settings import MAX_NOTE_SECONDS, GenerateSettings


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """A grown note.

    Attributes:
      spectrogram: [bins, frames] the grown level after the last growth step: the contract's
        log-mel (representation `mel`) or the log STFT magnitude (`stft`, `mag_if`).
      audio: float32 mono waveform, frames * hop samples, at most full scale.
      sample_rate: Hz.
      stages: [num_stages, bins, frames] the level at `stage_steps` (last = spectrogram); with
        `Erase`, (undamaged, erased, regrown).
      stage_steps: growth step of each stage.
      contract: the spectral contract of every spectrogram here.
      features: [n_values, bins, frames] everything grown (native units; for `mag_if` the
        log magnitude and the instantaneous frequency).
      representation: what was grown (`features`' kind).
      stage_audio: [num_stages, samples] every stage rendered (with `return_stages`), else None.
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
class Erase:
    """Damage a growing note: after `at_step` growth steps, erase `fraction` of its frames (the
    middle), then grow on; `GenerationResult.stages` then holds (undamaged, erased, regrown)."""

    fraction: float = 0.25
    at_step: int = 32

    def check(self) -> None:
        if not (isinstance(self.fraction, int | float) and 0 < self.fraction < 1
                and isinstance(self.at_step, int) and self.at_step >= 1):
            raise ConfigError(f"{self}: fraction must be in (0, 1) and at_step at least 1")


def stage_steps(growth_steps: int, num_stages: int) -> list[int]:
    """The growth step of each of `num_stages` evenly spaced stages."""
    return [int(s) for s in np.linspace(0, growth_steps, num_stages + 1).astype(int)[1:]]


# ------------------------------------------------------------------------ requests
def parse_instrument(spec: InstrumentSpec | None) -> InstrumentSpec | None:
    """A blend written on the command line, "violin:0.7,flute:0.3", as {name: weight}; a name
    or a mapping as it is."""
    if not isinstance(spec, str) or ":" not in spec:
        return spec
    blend = {}
    for part in spec.split(","):
        name, _, weight = part.partition(":")
        try:
            blend[name.strip()] = float(weight)
        except ValueError:
            raise ConfigError(f"instrument blend {spec!r}: write it as name:weight,... "
                              "(e.g. violin:0.7,flute:0.3)") from None
    return blend


def instrument_loudness(run: Run, instrument: str) -> float:
    """The dynamic level (dBFS) a note of `instrument` gets by default: the mean of its
    training notes'."""
    return float(np.mean([n["loudness_db"] for n in run.notes
                          if n["instrument"] == instrument and not n["held_out"]]))


def note_spec(run: Run, instrument: InstrumentSpec, pitch: str | float, frames: int,
              glide_to: InstrumentSpec | None = None, loudness: float | None = None
              ) -> NoteSpec:
    """A note to grow, checked against the run's instruments before anything is allocated (a
    blend written "violin:0.7,flute:0.3" is read as one); loudness None: each instrument's own
    (`instrument_loudness`)."""
    instrument, glide_to = parse_instrument(instrument), parse_instrument(glide_to)
    for spec in (instrument, glide_to):
        if spec is not None:
            if isinstance(spec, Mapping) and not all(
                    isinstance(w, int | float) and math.isfinite(w) for w in spec.values()):
                raise ConfigError(f"instrument weights {dict(spec)} must be finite numbers")
            instrument_vector(spec, run.instruments)
    if loudness is not None and not (isinstance(loudness, int | float)
                                     and -120 <= loudness <= 20):
        raise ConfigError(f"loudness_db={loudness!r} must be a level in dBFS between -120 "
                          "and 20")
    return NoteSpec(instrument, pitch_to_midi(pitch),
                    None if loudness is None else float(loudness), int(frames), glide_to)


def check_seconds(seconds: float) -> None:
    """ConfigError unless `seconds` is a note length the grower can allocate."""
    if not (isinstance(seconds, int | float) and not isinstance(seconds, bool)
            and math.isfinite(seconds) and 0 < seconds <= MAX_NOTE_SECONDS):
        raise ConfigError(f"seconds={seconds!r} must be a positive number, at most "
                          f"{MAX_NOTE_SECONDS:g}")


Blend = list[tuple[int, np.ndarray]]  # (index of a pure note grown, its weight per frame)


def pure_notes(run: Run, requests: Sequence[NoteSpec]) -> tuple[list[NoteSpec], list[Blend]]:
    """The notes of single instruments that `requests` are made of: a note of one instrument
    is itself; a blend or a glide is its instruments' notes (same pitch, length and seed),
    mixed frame by frame with their weights (`blend`). Each part takes the request's loudness,
    or its own instrument's (`instrument_loudness`) when none is given."""
    pure, blends = [], []
    for request in requests:
        weights = instrument_weights(request.instrument, run.instruments, request.frames,
                                     request.frames, request.glide_to)  # [frames, I]
        parts = []
        for i in np.flatnonzero(weights.max(axis=0) > 0):
            name = run.instruments[i]
            loudness = (instrument_loudness(run, name) if request.loudness_db is None
                        else request.loudness_db)
            pure.append(NoteSpec(name, request.midi, loudness, request.frames))
            parts.append((len(pure) - 1, weights[:, i]))
        blends.append(parts)
    return pure, blends


def blend(features: np.ndarray, parts: Blend, contract: SpectralContract) -> np.ndarray:
    """Native grids [N, ..., T] (the contract's log scale) of pure notes -> their mix
    [..., frames]: each frame the weighted sum of the parts' linear spectra (power or
    magnitude, as the contract's), logged again. A crossfade of what each instrument grows:
    its brightness and harmonic-to-noise ratio lie between the parts' and move monotonically
    with the weight, which a mix of log values does not guarantee. A single part is itself."""
    frames = len(parts[0][1])
    if len(parts) == 1 and np.all(parts[0][1] == 1.0):
        return features[parts[0][0]][..., :frames]
    linear = sum(np.asarray(contract.from_log(jnp.asarray(features[index][..., :frames])))
                 * weights for index, weights in parts)
    return np.asarray(contract.to_log(jnp.asarray(linear)))


# ------------------------------------------------------------------------ growing
def _one_note(condition: NoteCondition | None) -> NoteCondition | None:
    """A condition row as a batch of one (inside vmap)."""
    return None if condition is None else jax.tree.map(lambda x: x[None], condition)


@functools.partial(jax.jit, static_argnames=("graphdef", "frames", "steps", "num_stages"))
def _grow(params: nnx.State, condition: NoteCondition | None, keys: jax.Array, *,
          graphdef: nnx.GraphDef, frames: int, steps: int, num_stages: int) -> jax.Array:
    """One note per key (and condition row): [N] keys -> [N, num_stages, V, F, frames], the
    shown grids (normalised) at evenly spaced growth steps."""
    model = nnx.merge(graphdef, params)

    def one(note: NoteCondition | None, key: jax.Array) -> jax.Array:
        note = _one_note(note)
        seed = model.seed(frames, condition=note)
        return grow_stages(graphdef, params, seed, key, steps, num_stages, condition=note)[:, 0]

    return jax.vmap(one)(condition, keys)


@functools.partial(jax.jit, static_argnames=("graphdef", "frames", "erase_at", "steps"))
def _regrow(params: nnx.State, condition: NoteCondition | None, keys: jax.Array,
            hole: jax.Array, *, graphdef: nnx.GraphDef, frames: int, erase_at: int,
            steps: int) -> jax.Array:
    """[N, 3, V, F, frames] (undamaged, just erased, regrown) shown grids: grown `erase_at`
    steps, `hole` [N, frames] erased, then `steps` more (the undamaged grid grows as many)."""
    model = nnx.merge(graphdef, params)

    def one(note: NoteCondition | None, key: jax.Array, note_hole: jax.Array) -> jax.Array:
        note = _one_note(note)
        state = grow(graphdef, params, model.seed(frames, condition=note), key, erase_at,
                     condition=note)
        damaged = jnp.where(note_hole[None, None, :, None] > 0, 0.0, state)
        kept, regrown = (grow(graphdef, params, start, key, steps, first_step=erase_at,
                              condition=note) for start in (state, damaged))
        return jnp.stack([model.spectrogram(g, note)[0] for g in (kept, damaged, regrown)])

    return jax.vmap(one)(condition, keys, hole)


def centred_hole(frames: int, grid_frames: int, fraction: float) -> np.ndarray:
    """[grid_frames] 1 on the middle `fraction` of a note's frames."""
    length = max(1, round(fraction * frames))
    start = (frames - length) // 2
    hole = np.zeros(grid_frames, np.float32)
    hole[start:start + length] = 1.0
    return hole


def grow_features(run: Run, requests: Sequence[NoteSpec] | None, *, seeds: Sequence[int],
                  growth_steps: int, num_stages: int, erase: Erase | None = None
                  ) -> list[np.ndarray]:
    """Grown notes in native units, [num_stages (or 3 with `erase`), V, F, frames] each.

    A `note` run (`requests` None) grows its note once per growth seed; a conditioned run
    grows each request (its pure notes in one batch, blended; growth seed `seeds[0]`)."""
    graphdef, params = nnx.split(run.model)
    if requests is None:
        condition, blends, frames = None, None, run.grid_frames
        keys = jax.vmap(jax.random.key)(np.asarray(seeds))
    else:
        pure, blends = pure_notes(run, requests)
        frames = max(p.frames for p in pure)
        condition = note_condition(run.contract, run.instruments, pure, frames, run.prior)
        keys = jax.vmap(jax.random.key)(np.full(len(pure), seeds[0]))
    if erase is None:
        shown = _grow(params, condition, keys, graphdef=graphdef, frames=frames,
                      steps=growth_steps, num_stages=num_stages)
    else:
        lengths = [frames] * len(keys) if requests is None else [p.frames for p in pure]
        hole = jnp.asarray(np.stack([centred_hole(n, frames, erase.fraction) for n in lengths]))
        shown = _regrow(params, condition, keys, hole, graphdef=graphdef, frames=frames,
                        erase_at=erase.at_step, steps=growth_steps)
    features = np.asarray(run.representation.from_unit(shown))
    if blends is None:
        return list(features)
    return [np.stack([blend(features[:, s], parts, run.contract)
                      for s in range(features.shape[1])]) for parts in blends]


def render_features(inverse: Inverse, features: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each grown note [n_values, bins, frames] back to audio (at most full scale)."""
    return [fit_full_scale(np.asarray(inverse(f[None]))[0]) for f in features]


def render(run: Run, inverse: Inverse, settings: GenerateSettings, seed: int, *,
           request: NoteSpec | None = None, erase: Erase | None = None,
           reference: np.ndarray | None = None, return_stages: bool = False
           ) -> GenerationResult:
    """Grow one note of `run` as `settings` say and render it with `inverse`: the `note`
    run's note, or `request` (a conditioned run). With `erase`, the stages are (undamaged,
    erased, regrown) and the result is the regrown note. Best-of-N (`note` runs): N
    candidates grow with the growth seeds seed..seed+N-1, each is scored against
    `reference` and the best is kept. The refinement's post-processing (mel only) applies to
    every stage; `return_stages` also renders every stage."""
    refinement: Refinement = settings.refinement
    count = refinement.best_of
    if count > 1 and (reference is None or request is not None):
        raise ConfigError("best-of-N picks among candidates of a note run by its recording; "
                          "set best_of=1 here")
    seeds = list(range(seed, seed + count))
    candidates = np.stack(grow_features(
        run, None if request is None else [request], seeds=seeds,
        growth_steps=settings.growth_steps, num_stages=settings.num_stages, erase=erase))
    candidates = postprocess(candidates, run.contract, refinement)  # mel only (settings)
    audio = render_features(inverse, list(candidates[:, -1]))
    selection = (select(reference, np.stack(audio), seeds, measuring_contract(run.contract),
                        refinement.best_of_metric) if count > 1 else None)
    stages = candidates[selection.chosen if selection else 0]
    steps = (stage_steps(settings.growth_steps, settings.num_stages) if erase is None else
             [erase.at_step + settings.growth_steps, erase.at_step,
              erase.at_step + settings.growth_steps])
    return GenerationResult(
        spectrogram=stages[-1, 0], audio=audio[selection.chosen if selection else 0],
        sample_rate=run.contract.sample_rate, stages=stages[:, 0], stage_steps=steps,
        contract=run.contract, features=stages[-1], representation=run.representation,
        stage_audio=np.stack(render_features(inverse, list(stages))) if return_stages else None,
        selection=selection)


# ------------------------------------------------------------------------ generate()
def generate(model: str | os.PathLike | None = None, *,
             instrument: InstrumentSpec | None = None, pitch: str | float | None = None,
             seconds: float | None = None, glide_to: InstrumentSpec | None = None,
             loudness_db: float | None = None, erase: Erase | None = None,
             growth_steps: int | None = None, num_stages: int | None = None,
             seed: int | None = None, refinement: Refinement | None = None,
             return_stages: bool = False, vocoder: str = "griffinlim",
             vocoder_path: str | None = None) -> GenerationResult:
    """Grow a note and render it: from the shipped instruments model (`model` None: no
    training needed), a trained workdir, one of its checkpoints, or a weights file
    (`--mode=export`).

    On an instruments model: `instrument` (a name, or a blend such as {"violin": 0.7,
    "flute": 0.3}), `pitch` (a note name "A4" or a MIDI number, any pitch), `seconds` (any
    length up to a minute), `glide_to` (an instrument or blend reached by the last frame),
    `loudness_db` (the dynamic level, dBFS of the loudest frame; default: the instrument's
    mean); defaults from the run's `generate` section. On a `note` workdir those do not apply;
    `refinement` (best-of-N against the recording, post-processing) does. Both: `erase`
    (damage and regrowth), `growth_steps`, `num_stages`, `seed` (defaults: the run's),
    `return_stages` (render every stage, `GenerationResult.stage_audio`), and the vocoder
    (see `tnca_jax.inverse.load_vocoder`; its contract must equal the run's).

    Every argument is checked before anything grows: a `tnca_jax.UserError` names the one
    that cannot work.
    """
    for name, value in (("growth_steps", growth_steps), ("num_stages", num_stages),
                        ("seed", seed)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{name}={value!r} must be a whole number")
    run = load_run(model)
    defaults = run.settings.generate
    settings = dataclasses.replace(
        defaults, **{key: value for key, value in (("growth_steps", growth_steps),
                                                  ("num_stages", num_stages)) if value is not None},
        **(dataclasses.asdict(refinement) if refinement is not None else {}))
    seed = run.settings.seed if seed is None else seed
    if erase is not None:
        erase.check()
    reference, request = None, None
    if run.conditioned:
        seconds = defaults.seconds if seconds is None else seconds
        check_seconds(seconds)
        request = note_spec(run, defaults.instrument if instrument is None else instrument,
                            defaults.pitch if pitch is None else pitch, run.frames(seconds),
                            glide_to, loudness_db)
    else:
        given = [name for name, value in (("instrument", instrument), ("pitch", pitch),
                                          ("seconds", seconds), ("glide_to", glide_to),
                                          ("loudness_db", loudness_db)) if value is not None]
        if given:
            raise ConfigError(f"{model} holds a note run: {', '.join(given)} apply to "
                              "instruments runs only")
        if settings.best_of > 1:
            reference = recording_of(run).audio
    inverse = load_inverse(run.representation, vocoder, vocoder_path)
    return render(run, inverse, settings, seed, request=request, erase=erase,
                  reference=reference, return_stages=return_stages)
