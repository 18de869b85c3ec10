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
    SpectrumPrior,
    instrument_vector,
    instrument_weights,
    midi_to_hz,
    note_condition,
    pitch_to_midi,
)
from tnca_jax.contract import SpectralContract, measuring_contract
from tnca_jax.errors import ConfigError
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
from tnca_jax.train import restore_for_use
from tnca_jax.workdir import Workdir, WorkdirError

NOTE_METRICS = ("mel_l1_db", "mrstft", "rms_ratio", "f0_error_cents")
MORPH_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclasses.dataclass(frozen=True)
class TimbreRun:
    """What a many-note workdir holds: its config, representation, instruments (in the model's
    embedding order), the labels of the notes it saw and held out, the prior drawn from the
    training notes' spectra, its grid length and the trained TNCA (at checkpoint `step`)."""

    workdir: Workdir
    config: ml_collections.ConfigDict
    representation: Representation
    instruments: tuple[str, ...]
    notes: tuple[dict, ...]
    prior: SpectrumPrior
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
    if "prior" not in run.timbre:
        raise WorkdirError(f"{workdir} was trained by a tnca_jax without the spectrum prior; "
                           "train it again (or in a new workdir)")
    representation = get_representation(config_representation_name(run.config), run.contract)
    instruments = tuple(run.timbre["instruments"])
    notes = tuple(run.timbre["notes"])
    prior = SpectrumPrior.from_dict(run.contract, [n for n in notes if not n["held_out"]],
                                    run.timbre["prior"])
    graphdef, train_state, pool = restorable_state(run.config, representation,
                                                   len(instruments), run.n_frames)
    step = restore_for_use(workdir, step, train_state, pool)
    model, _ = nnx.merge(graphdef, train_state)
    return TimbreRun(workdir=workdir, config=run.config, representation=representation,
                     instruments=instruments, notes=notes, prior=prior,
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


def instrument_loudness(run: TimbreRun, instrument: str) -> float:
    """The dynamic level (dBFS) a note of `instrument` gets by default: the mean of its
    training notes'."""
    return float(np.mean([n["loudness_db"] for n in run.notes
                          if n["instrument"] == instrument and not n["held_out"]]))


def note_spec(run: TimbreRun, instrument: InstrumentSpec, pitch: str | float, frames: int,
              glide_to: InstrumentSpec | None = None, loudness: float | None = None
              ) -> NoteSpec:
    """A note to grow (a blend written "violin:0.7,flute:0.3" is read as one), checked
    against the run's instruments; loudness None: each instrument's own
    (`instrument_loudness`)."""
    instrument, glide_to = parse_instrument(instrument), parse_instrument(glide_to)
    for spec in (instrument, glide_to):
        if spec is not None:
            instrument_vector(spec, run.instruments)
    return NoteSpec(instrument, pitch_to_midi(pitch),
                    None if loudness is None else float(loudness), int(frames), glide_to)


def request_condition(run: TimbreRun, requests: Sequence[NoteSpec], grid_frames: int
                      ) -> NoteCondition:
    return note_condition(run.contract, run.instruments, requests, grid_frames, run.prior)


def _each_note(function, condition: NoteCondition, *arrays: jax.Array) -> jax.Array:
    """`function(condition, *arrays)` of one note at a time (batch axis 1), vmapped over the
    notes (output axis 1): every note draws the same randomness whatever else is grown."""
    return jax.vmap(lambda c, *a: function(c, *a)[:, 0], out_axes=1)(
        jax.tree.map(lambda x: x[:, None], condition), *(a[:, None] for a in arrays))


@functools.partial(jax.jit, static_argnames=("graphdef", "steps", "num_stages"))
def _grow_notes(params: nnx.State, condition: NoteCondition, key: jax.Array, *,
                graphdef: nnx.GraphDef, steps: int, num_stages: int) -> jax.Array:
    """[num_stages, B, n_values, F, T] the shown grids of the condition's notes."""
    model = nnx.merge(graphdef, params)

    def one(note: NoteCondition) -> jax.Array:
        seed = model.seed(note.mask.shape[-1], condition=note)
        return grow_stages(graphdef, params, seed, key, steps, num_stages, condition=note)

    return _each_note(one, condition)


@functools.partial(jax.jit, static_argnames=("graphdef", "erase_at", "steps"))
def _regrow(params: nnx.State, condition: NoteCondition, key: jax.Array, hole: jax.Array, *,
            graphdef: nnx.GraphDef, erase_at: int, steps: int) -> jax.Array:
    """[3, B, V, F, T] (undamaged, just erased, regrown) shown grids: grown `erase_at` steps,
    `hole` [B, T] erased, then `steps` more steps (the undamaged grid grows the same steps)."""
    model = nnx.merge(graphdef, params)

    def one(note: NoteCondition, note_hole: jax.Array) -> jax.Array:
        state = grow(graphdef, params, model.seed(note_hole.shape[-1], condition=note), key,
                     erase_at, condition=note)
        damaged = jnp.where(note_hole[:, None, :, None] > 0, 0.0, state)
        kept, regrown = (grow(graphdef, params, start, key, steps, first_step=erase_at,
                              condition=note) for start in (state, damaged))
        return jnp.stack([model.spectrogram(g, note) for g in (kept, damaged, regrown)])

    return _each_note(one, condition, hole)


Blend = list[tuple[int, np.ndarray]]  # (index of a pure note grown, its weight per frame)


def pure_notes(run: TimbreRun, requests: Sequence[NoteSpec]
               ) -> tuple[list[NoteSpec], list[Blend]]:
    """The notes of single instruments that `requests` are made of: a note of one instrument
    is itself; a blend or a glide is its instruments' notes (same pitch, length and seed),
    mixed frame by frame with their weights. The model only ever grows notes of the
    instruments it was trained on; a morph crossfades what they grow (`blend`). Each part takes
    the request's loudness, or its own instrument's (`instrument_loudness`) when none is
    given."""
    pure, blends = [], []
    for request in requests:
        weights = instrument_weights(request.instrument, run.instruments, request.frames,
                                     request.frames, request.glide_to)  # [frames, I]
        blend = []
        for i in np.flatnonzero(weights.max(axis=0) > 0):
            name = run.instruments[i]
            loudness = (instrument_loudness(run, name) if request.loudness_db is None
                        else request.loudness_db)
            pure.append(NoteSpec(name, request.midi, loudness, request.frames))
            blend.append((len(pure) - 1, weights[:, i]))
        blends.append(blend)
    return pure, blends


def blend(features: np.ndarray, parts: Blend, contract: SpectralContract) -> np.ndarray:
    """Native grids [N, ..., T] (the contract's log scale) of pure notes -> their mix
    [..., frames]: each frame the weighted sum of the parts' linear spectra (power or
    magnitude, as the contract's), logged again. A crossfade of what each instrument grows:
    its brightness (spectral centroid) and its harmonic-to-noise ratio lie between the
    parts' and move monotonically with the weight, which a mix of log values does not
    guarantee (their geometric mean can be darker than either part). A single part is
    itself."""
    frames = len(parts[0][1])
    if len(parts) == 1 and np.all(parts[0][1] == 1.0):
        return features[parts[0][0]][..., :frames]
    linear = sum(np.asarray(contract.from_log(jnp.asarray(features[index][..., :frames])))
                 * weights for index, weights in parts)
    return np.asarray(contract.to_log(jnp.asarray(linear)))


def grow_notes(run: TimbreRun, requests: Sequence[NoteSpec], *, steps: int,
               num_stages: int, seed: int) -> list[np.ndarray]:
    """Each requested note grown (its pure notes in one batch, `pure_notes`):
    [num_stages, n_values, bins, frames] native units, cut to its own frames."""
    pure, blends = pure_notes(run, requests)
    condition = request_condition(run, pure, max(p.frames for p in pure))
    graphdef, params = nnx.split(run.model)
    shown = np.asarray(jnp.moveaxis(_grow_notes(params, condition, jax.random.key(seed),
                                                graphdef=graphdef, steps=steps,
                                                num_stages=num_stages), 1, 0))
    features = np.asarray(run.representation.from_unit(jnp.asarray(shown)))
    return [blend(features, parts, run.contract) for parts in blends]


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
    pure, blends = pure_notes(run, requests)
    grid = max(p.frames for p in pure)
    condition = request_condition(run, pure, grid)
    hole = jnp.asarray(np.stack([centred_hole(p.frames, grid, erase_fraction) for p in pure]))
    graphdef, params = nnx.split(run.model)
    grids = np.asarray(_regrow(params, condition, jax.random.key(seed), hole,
                               graphdef=graphdef, erase_at=erase_at, steps=steps))
    features = np.asarray(run.representation.from_unit(jnp.asarray(grids)))
    return [tuple(blend(stage, parts, run.contract) for stage in features) for parts in blends]


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
