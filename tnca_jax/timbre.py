"""A trained many-note TNCA (the timbre job) in use: any note of its instruments at any pitch
and length, blends and glides between instruments, regrowth after damage, and its measurement
against the recordings (seen and held-out notes).

`generate()` here is the package's entry point (`tnca_jax.generate`): on a many-note workdir
it grows the note asked for (`instrument`, `pitch`, `seconds`, `glide_to`, `erase`); on a
single-note workdir it is `tnca_jax.generation.generate`. The grower is jitted once per model
and grid (module-level jit with static arguments).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from tnca_jax import dsp, generation, metrics
from tnca_jax.audio import fit_full_scale
from tnca_jax.checks import check_growth
from tnca_jax.conditioning import (
    InstrumentSpec,
    NoteSpec,
    midi_to_hz,
    note_condition,
    pitch_to_midi,
)
from tnca_jax.contract import SpectralContract, measuring_contract
from tnca_jax.errors import ConfigError, MissingFileError
from tnca_jax.inverse import Inverse, load_inverse
from tnca_jax.model import TNCA, NoteCondition, grow, grow_stages
from tnca_jax.note_set import Note, NoteSet
from tnca_jax.refine import Refinement
from tnca_jax.representations import (
    Representation,
    config_representation_name,
    get_representation,
)
from tnca_jax.timbre_train import restorable_state
from tnca_jax.train import restore, restore_newest
from tnca_jax.workdir import Workdir, WorkdirError

NOTE_METRICS = ("mel_l1_db", "mrstft", "rms_ratio", "f0_error_cents")
MORPH_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclasses.dataclass(frozen=True)
class TimbreRun:
    """What a many-note workdir holds: its config, representation, instruments (in the model's
    embedding order), the labels of the notes it saw and held out, its grid length and the
    trained TNCA (at checkpoint `step`)."""

    workdir: Workdir
    config: ml_collections.ConfigDict
    representation: Representation
    instruments: tuple[str, ...]
    notes: tuple[dict, ...]
    grid_frames: int
    model: TNCA
    step: int

    @property
    def contract(self) -> SpectralContract:
        return self.representation.contract

    def frames(self, seconds: float) -> int:
        """Grid frames of a note `seconds` long."""
        return max(2, self.contract.num_frames(round(seconds * self.contract.sample_rate)))


def is_timbre_run(workdir_or_checkpoint: str | os.PathLike) -> bool:
    """Whether a workdir (or one of its checkpoints) holds a many-note run."""
    workdir, _ = Workdir.locate(workdir_or_checkpoint)
    return workdir.has_run() and workdir.read_run().timbre is not None


def load_timbre_run(workdir_or_checkpoint: str | os.PathLike) -> TimbreRun:
    """Restore a many-note workdir's TNCA (its newest readable checkpoint, or the one named by
    `workdir/checkpoints/<step>`)."""
    workdir, step = Workdir.locate(workdir_or_checkpoint)
    run = workdir.read_run()
    if run.timbre is None:
        raise WorkdirError(f"{workdir} holds a single-note run, not a many-note (timbre) one; "
                           "generate from it without instrument or pitch")
    representation = get_representation(config_representation_name(run.config), run.contract)
    instruments = tuple(run.timbre["instruments"])
    graphdef, train_state, pool = restorable_state(run.config, representation,
                                                   len(instruments), run.n_frames)
    checkpoints = workdir.checkpoints(create=False)
    try:
        steps = checkpoints.steps()
        if not steps:
            raise MissingFileError(f"{workdir} has no checkpoint yet: train first")
        if step is None:
            step, _ = restore_newest(checkpoints, train_state, pool)
        elif step in steps:
            restore(checkpoints, step, train_state, pool)
        else:
            raise MissingFileError(f"{workdir} has no checkpoint {step}; it has "
                                   f"{', '.join(map(str, steps))}")
    finally:
        checkpoints.close()
    model, _ = nnx.merge(graphdef, train_state)
    return TimbreRun(workdir=workdir, config=run.config, representation=representation,
                     instruments=instruments, notes=tuple(run.timbre["notes"]),
                     grid_frames=run.n_frames, model=model, step=step)


# ------------------------------------------------------------------------ growing notes
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


def instrument_loudness(run: TimbreRun, spec: InstrumentSpec) -> float:
    """The dynamic level (dBFS) a note of `spec` gets by default: the mean of its instrument's
    training notes (a blend's weighted mean)."""
    weights = {spec: 1.0} if isinstance(spec, str) else dict(spec)
    levels = {}
    for name in weights:
        mine = [n["loudness_db"] for n in run.notes
                if n["instrument"] == name and not n["held_out"]]
        if not mine:
            raise ConfigError(f"instrument {name!r} is not one this model was trained on "
                              f"({', '.join(run.instruments)})")
        levels[name] = float(np.mean(mine))
    total = sum(weights.values())
    return sum(levels[name] * w / total for name, w in weights.items())


def note_spec(run: TimbreRun, instrument: InstrumentSpec, pitch: str | float, frames: int,
              glide_to: InstrumentSpec | None = None, loudness: float | None = None
              ) -> NoteSpec:
    """A note to grow (a blend written "violin:0.7,flute:0.3" is read as one); the loudness
    defaults to the instrument's (`instrument_loudness`)."""
    instrument, glide_to = parse_instrument(instrument), parse_instrument(glide_to)
    if loudness is None:
        loudness = instrument_loudness(run, instrument)
    return NoteSpec(instrument, pitch_to_midi(pitch), float(loudness), int(frames), glide_to)


def request_condition(run: TimbreRun, requests: Sequence[NoteSpec], grid_frames: int
                      ) -> NoteCondition:
    return note_condition(run.contract, run.instruments, requests, grid_frames)


@functools.partial(jax.jit, static_argnames=("graphdef", "steps", "num_stages"))
def _grow_notes(params: nnx.State, condition: NoteCondition, key: jax.Array, *,
                graphdef: nnx.GraphDef, steps: int, num_stages: int) -> jax.Array:
    """[num_stages, B, n_values, F, T] the shown grids of the condition's notes."""
    model = nnx.merge(graphdef, params)
    seed = model.seed(condition.mask.shape[-1], condition=condition)
    return grow_stages(graphdef, params, seed, key, steps, num_stages, condition=condition)


def grow_notes(run: TimbreRun, requests: Sequence[NoteSpec], *, steps: int,
               num_stages: int, seed: int) -> list[np.ndarray]:
    """Each requested note grown (one batch): [num_stages, n_values, bins, frames] native
    units, cut to its own frames."""
    grid = max(r.frames for r in requests)
    condition = request_condition(run, requests, grid)
    graphdef, params = nnx.split(run.model)
    shown = _grow_notes(params, condition, jax.random.key(seed), graphdef=graphdef,
                        steps=steps, num_stages=num_stages)
    native = np.asarray(run.representation.from_unit(jnp.moveaxis(shown, 1, 0)))
    return [native[i, ..., :r.frames] for i, r in enumerate(requests)]


@functools.partial(jax.jit, static_argnames=("graphdef", "erase_at", "steps"))
def _regrow(params: nnx.State, condition: NoteCondition, key: jax.Array, hole: jax.Array, *,
            graphdef: nnx.GraphDef, erase_at: int, steps: int) -> tuple[jax.Array, ...]:
    """(undamaged, just erased, regrown) shown grids [B, V, F, T]: grown `erase_at` steps,
    `hole` [B, T] erased, then `steps` more steps (the undamaged grid grows the same steps)."""
    model = nnx.merge(graphdef, params)
    state = grow(graphdef, params, model.seed(hole.shape[-1], condition=condition), key,
                 erase_at, condition=condition)
    damaged = jnp.where(hole[:, None, :, None] > 0, 0.0, state)
    kept = grow(graphdef, params, state, key, steps, first_step=erase_at, condition=condition)
    regrown = grow(graphdef, params, damaged, key, steps, first_step=erase_at,
                   condition=condition)
    return (model.spectrogram(kept, condition), model.spectrogram(damaged, condition),
            model.spectrogram(regrown, condition))


def centred_hole(frames: int, grid_frames: int, fraction: float) -> np.ndarray:
    """[grid_frames] 1 on the middle `fraction` of a note's frames."""
    length = max(1, round(fraction * frames))
    start = (frames - length) // 2
    hole = np.zeros(grid_frames, np.float32)
    hole[start:start + length] = 1.0
    return hole


def regrow_notes(run: TimbreRun, requests: Sequence[NoteSpec], *, erase_fraction: float,
                 erase_at: int, steps: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """Per note (undamaged, erased, regrown) [n_values, bins, frames] native units: grown
    `erase_at` steps, the middle `erase_fraction` of its frames erased (all bands), regrown
    for `steps` steps beside the undamaged note grown as long."""
    grid = max(r.frames for r in requests)
    condition = request_condition(run, requests, grid)
    hole = jnp.asarray(np.stack([centred_hole(r.frames, grid, erase_fraction)
                                 for r in requests]))
    graphdef, params = nnx.split(run.model)
    grids = _regrow(params, condition, jax.random.key(seed), hole, graphdef=graphdef,
                    erase_at=erase_at, steps=steps)
    native = [np.asarray(run.representation.from_unit(g)) for g in grids]
    return [tuple(g[i, ..., :r.frames] for g in native) for i, r in enumerate(requests)]


def render_features(inverse: Inverse, features: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each grown note [n_values, bins, frames] back to audio (at most full scale)."""
    return [fit_full_scale(np.asarray(inverse(f[None]))[0]) for f in features]


# ------------------------------------------------------------------------ measuring
def harmonic_to_noise_db(audio: np.ndarray, contract: SpectralContract, f0_hz: float) -> float:
    """Energy within a quarter of f0 of the harmonics k f0 over the energy elsewhere, in dB
    (STFT power of the measuring contract, summed over the whole note)."""
    measuring = measuring_contract(contract)
    power = np.sum(np.asarray(dsp.stft_magnitude(jnp.asarray(audio), measuring)) ** 2, axis=1)
    hz = np.linspace(0.0, measuring.sample_rate / 2, len(power))
    distance = np.abs(hz / f0_hz - np.round(hz / f0_hz)) * f0_hz
    harmonic = (distance <= f0_hz / 4) & (hz >= f0_hz * 0.75)
    return float(10 * np.log10(power[harmonic].sum() / max(power[~harmonic].sum(), 1e-30)))


def morph_curve(run: TimbreRun, inverse: Inverse, start: str, end: str, pitch: float,
                frames: int, *, steps: int, seed: int) -> dict:
    """Blends start -> end at `MORPH_WEIGHTS` (weight of `end`): per weight the spectral
    centroid (Hz) and harmonic-to-noise ratio (dB) of the rendered note, and the audio."""
    requests = [note_spec(run, {start: 1 - w, end: w} if 0 < w < 1 else (end if w else start),
                          pitch, frames) for w in MORPH_WEIGHTS]
    grown = grow_notes(run, requests, steps=steps, num_stages=1, seed=seed)
    audio = render_features(inverse, [g[-1] for g in grown])
    contract = measuring_contract(run.contract)
    return {"start": start, "end": end, "midi": pitch, "weights": list(MORPH_WEIGHTS),
            "centroid_hz": [metrics.spectral_centroid_hz(a, contract) for a in audio],
            "hnr_db": [harmonic_to_noise_db(a, run.contract, midi_to_hz(pitch))
                       for a in audio],
            "audio": audio}


def static_features(note: Note) -> np.ndarray:
    """The recording's per-band time average, held still (the static baseline)."""
    return np.broadcast_to(note.features.mean(axis=-1, keepdims=True), note.features.shape)


def measure_notes(run: TimbreRun, inverse: Inverse, notes: Sequence[Note], *, steps: int,
                  seed: int, f0: bool = True) -> list[dict]:
    """Every note grown from its own label and length, rendered, and measured against its
    recording beside the static baseline: per note its labels, NOTE_METRICS, the baseline's
    mel L1 and the temporal gain."""
    requests = [n.spec for n in notes]
    grown = grow_notes(run, requests, steps=steps, num_stages=1, seed=seed)
    audio = render_features(inverse, [g[-1] for g in grown])
    static = render_features(inverse, [static_features(n) for n in notes])
    contract = measuring_contract(run.contract)
    names = NOTE_METRICS if f0 else NOTE_METRICS[:-1]
    rows = []
    for note, generated, baseline in zip(notes, audio, static, strict=True):
        ours = metrics.compare(note.audio, generated, contract, only=names).to_dict()
        still = metrics.mel_l1_db(note.audio, baseline, contract)
        rows.append({**note.to_dict(), **{name: ours[name] for name in names},
                     "static_mel_l1_db": still,
                     "temporal_gain": still / max(ours["mel_l1_db"], 1e-9)})
    return rows


def summarise(rows: Sequence[dict]) -> dict:
    """Means (and worst) of the per-note measures, for held-out and for seen notes."""
    summary = {}
    for split, held in (("held_out", True), ("seen", False)):
        chosen = [r for r in rows if r["held_out"] == held]
        if not chosen:
            continue
        part = {"notes": len(chosen)}
        for name in (*NOTE_METRICS, "temporal_gain", "static_mel_l1_db"):
            values = [r[name] for r in chosen if r.get(name) is not None]
            if values:
                worst = min(values) if name == "temporal_gain" else max(values)
                part[name] = {"mean": float(np.mean(values)), "worst": float(worst)}
        part["beat_static"] = sum(r["temporal_gain"] > 1 for r in chosen)
        summary[split] = part
    return summary


def evaluation_notes(note_set: NoteSet, max_notes: int) -> list[Note]:
    """The notes measured: every held-out note, then seen ones, at most `max_notes` (0: all),
    seen notes spread evenly over the corpus."""
    held, seen = list(note_set.held_out), list(note_set.training)
    if not max_notes or len(held) + len(seen) <= max_notes:
        return held + seen
    held = held[: max(1, max_notes // 2)] if len(held) > max_notes // 2 else held
    room = max_notes - len(held)
    picks = np.linspace(0, len(seen) - 1, room).round().astype(int) if room else []
    return held + [seen[i] for i in sorted(set(picks))]


# ------------------------------------------------------------------------ generate()
@dataclasses.dataclass(frozen=True)
class Erase:
    """Damage a growing note: after `at_step` growth steps, erase `fraction` of its frames (the
    middle), then grow on; `GenerationResult.stages` then holds (undamaged, erased, regrown)."""

    fraction: float = 0.25
    at_step: int = 32


def generate(workdir_or_checkpoint: str | os.PathLike, *, instrument: InstrumentSpec | None = None,
             pitch: str | float | None = None, seconds: float | None = None,
             glide_to: InstrumentSpec | None = None, loudness_db: float | None = None,
             erase: Erase | None = None,
             steps: int | None = None, seed: int | None = None, vocoder: str = "griffinlim",
             vocoder_path: str | None = None, **single_note) -> generation.GenerationResult:
    """Grow a note from a trained workdir (or one of its checkpoints) and render it.

    On a many-note (timbre) workdir: `instrument` (a name, or a blend such as {"violin": 0.7,
    "flute": 0.3}), `pitch` (a note name "A4" or a MIDI number, any pitch), `seconds` (any
    length), `glide_to` (an instrument or blend reached by the last frame), `loudness_db` (the
    dynamic level, dBFS of the loudest frame; default: the instrument's mean), `erase` (damage
    and regrowth: see `Erase`); defaults from the run config's `generate` section. On a
    single-note workdir: `tnca_jax.generation.generate` (its keyword arguments in
    `single_note`; instrument, pitch, seconds, glide_to and erase do not apply).

    Raises a `tnca_jax.UserError` before growing anything when an argument or the workdir
    cannot work.
    """
    timbre_args = {"instrument": instrument, "pitch": pitch, "seconds": seconds,
                   "glide_to": glide_to, "loudness_db": loudness_db, "erase": erase}
    if not is_timbre_run(workdir_or_checkpoint):
        given = [name for name, value in timbre_args.items() if value is not None]
        if given:
            raise ConfigError(f"{workdir_or_checkpoint} holds a single-note run: "
                              f"{', '.join(given)} apply to many-note (timbre) runs only")
        return generation.generate(workdir_or_checkpoint, steps=steps, seed=seed,
                                   vocoder=vocoder, vocoder_path=vocoder_path, **single_note)
    if single_note:
        raise ConfigError(f"{', '.join(sorted(single_note))}: not for a many-note run")
    run = load_timbre_run(workdir_or_checkpoint)
    defaults = run.config.generate
    steps = defaults.steps if steps is None else steps
    check_growth(steps, 1, prefix="")
    seconds = defaults.seconds if seconds is None else seconds
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"seconds={seconds!r} must be a positive number")
    request = note_spec(run, defaults.instrument if instrument is None else instrument,
                        defaults.pitch if pitch is None else pitch, run.frames(seconds),
                        glide_to, loudness_db)
    inverse = load_inverse(run.representation, vocoder, vocoder_path)
    seed = run.config.seed if seed is None else seed
    return render_request(run, inverse, request, steps=steps, seed=seed, erase=erase)


def render_request(run: TimbreRun, inverse: Inverse, request: NoteSpec, *, steps: int,
                   seed: int, erase: Erase | None = None, num_stages: int | None = None,
                   return_stages: bool = False) -> generation.GenerationResult:
    """One requested note grown and rendered; with `erase`, its (undamaged, erased, regrown)
    grids are the stages and the regrown note is the result. `return_stages` also renders
    every stage (`stage_audio`, for growth.wav)."""
    if erase is not None:
        if not 0 < erase.fraction < 1 or erase.at_step < 1:
            raise ConfigError(f"{erase}: fraction must be in (0, 1) and at_step at least 1")
        [stages] = regrow_notes(run, [request], erase_fraction=erase.fraction,
                                erase_at=erase.at_step, steps=steps, seed=seed)
        stages, stage_steps = np.stack(stages), [erase.at_step + steps, erase.at_step,
                                                 erase.at_step + steps]
    else:
        num_stages = num_stages or run.config.generate.num_stages
        [stages] = grow_notes(run, [request], steps=steps, num_stages=num_stages, seed=seed)
        stage_steps = generation.RenderSettings(steps, num_stages, seed,
                                                Refinement()).stage_steps
    [audio] = render_features(inverse, [stages[-1]])
    stage_audio = np.stack(render_features(inverse, list(stages))) if return_stages else None
    return generation.GenerationResult(
        spectrogram=stages[-1, 0], audio=audio, sample_rate=run.contract.sample_rate,
        stages=stages[:, 0], stage_steps=stage_steps, contract=run.contract,
        features=stages[-1], representation=run.representation, stage_audio=stage_audio)
