"""What a conditioned TNCA (one model for many notes) is told of a note: its instrument(s), its
pitch and its length, as the arrays of a `tnca_jax.model.NoteCondition`.

- Pitch: each frequency row (mel band or STFT bin) gets `PITCH_FEATURES` numbers describing
  where it sits relative to the note's fundamental f0: how much of its filter the harmonics
  k * f0 fall into (the harmonic comb seen through the filterbank: a cell knows whether it
  sits on a harmonic, between two, or in a band wide enough to hold several), its distance
  from f0 in octaves (radial basis functions, so a spectral envelope that follows the pitch can
  be learned), and the pitch height. Pitches never trained on get their own comb: nothing is
  looked up per note.
- Time: each frame gets `NOTE_TIME_FEATURES` numbers: cosines of its place in the note (as the
  single-note model's `time_features`) and decaying exponentials of the seconds since the
  onset and until the end, so that attack and release keep their length when a note is
  generated longer or shorter than any recording.
- Loudness: the note's dynamic level (its loudest frame's RMS, dBFS), one more number per row
  beside the pitch: a recording's gain is not its timbre, so the model is told it, as DDSP is
  told loudness; generated notes default to their instrument's mean.
- Instrument: weights per frame over the model's instruments. The model grows notes of one
  instrument each (one-hot weights); `tnca_jax.timbre` makes a blend ({"violin": 0.7,
  "flute": 0.3}) or a glide from what they grow.
- Prior: per instrument, the spectrum a note of that pitch and loudness is expected to have,
  drawn from the training notes (`tnca_jax.priors.SpectrumPrior`): the cells' resting level
  starts there, and each row is told how far (in pitch) the nearest training note is.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import jax.numpy as jnp
import numpy as np

from tnca_jax import dsp
from tnca_jax.contract import MelContract, SpectralContract
from tnca_jax.corpus import note_to_midi
from tnca_jax.errors import ConfigError
from tnca_jax.model import NoteCondition, note_time_features

OCTAVE_CENTRES = np.arange(-1.0, 7.0)  # RBF centres of log2(row frequency / f0)
OCTAVE_WIDTH = 0.6
PITCH_FEATURES = 1 + len(OCTAVE_CENTRES) + 3  # comb, octaves, height, loudness, prior distance
LOUDNESS_REFERENCE_DB = -20.0  # the loudness feature is (level - this) / LOUDNESS_SCALE_DB
LOUDNESS_SCALE_DB = 20.0
COMB_FLOOR = 0.05  # the comb's log is taken of comb + this (a row between two harmonics)
PRIOR_DISTANCE_SCALE = 12.0  # the prior-distance feature is semitones / this (octaves)

InstrumentSpec = str | Mapping[str, float]


class Prior(Protocol):
    """Where a note's expected spectrum comes from (`tnca_jax.priors.SpectrumPrior`)."""

    def spectrum(self, instrument: str, midi: float, loudness: float,
                 exclude: int | None = None) -> tuple[np.ndarray, float]: ...


@dataclasses.dataclass(frozen=True)
class NoteSpec:
    """A note a conditioned TNCA grows: an instrument (a name or a blend {name: weight}),
    optionally gliding to another by its last frame, a pitch (MIDI number), a dynamic level
    (dBFS, see `loudness_db`; None: the instrument's own, see `tnca_jax.timbre`) and a length
    in frames."""

    instrument: InstrumentSpec
    midi: float
    loudness_db: float | None
    frames: int
    glide_to: InstrumentSpec | None = None


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def pitch_to_midi(pitch: str | float) -> float:
    """A note name ("A4", "Bb3", "C#5") or a MIDI number (69, 69.5) -> MIDI number."""
    if isinstance(pitch, str):
        try:
            return float(note_to_midi(pitch))
        except ValueError as err:
            raise ConfigError(f"pitch {pitch!r}: {err}") from None
    midi = float(pitch)
    if not 0 < midi < 128:
        raise ConfigError(f"pitch {pitch!r} is not a MIDI number in (0, 128)")
    return midi


def row_filters(contract: SpectralContract) -> np.ndarray:
    """[rows, bins] each grid row's weights over the STFT bins: the mel filters of a mel
    contract, the identity of a linear one."""
    if isinstance(contract, MelContract):
        return np.asarray(contract.mel_basis, np.float64)
    return np.eye(contract.n_bins)


def row_frequencies_hz(contract: SpectralContract) -> np.ndarray:
    """[rows] the centre frequency of each grid row (its filter's weighted mean frequency)."""
    filters = row_filters(contract)
    bins_hz = np.linspace(0.0, contract.sample_rate / 2, contract.n_fft // 2 + 1)
    return (filters @ bins_hz) / np.maximum(filters.sum(axis=1), 1e-12)


def loudness_db(audio: np.ndarray, contract: SpectralContract) -> float:
    """A note's dynamic level: the RMS of its loudest frame (the contract's framing), dBFS."""
    frames = np.asarray(dsp.frame(jnp.asarray(audio, jnp.float32), contract))
    return float(10 * np.log10(max(float(np.max(np.mean(frames**2, axis=-1))), 1e-12)))


def log_comb(contract: SpectralContract, f0_hz: float) -> np.ndarray:
    """[rows] log(COMB_FLOOR + the harmonics k * f0's sum through each row's filter, each
    filter scaled to peak 1): the harmonic comb of a note seen through the filterbank (a row
    on a harmonic ~0, between two ~log(COMB_FLOOR), holding several > 0)."""
    filters = row_filters(contract)
    filters = filters / np.maximum(filters.max(axis=1, keepdims=True), 1e-12)
    bins_hz = np.linspace(0.0, contract.sample_rate / 2, contract.n_fft // 2 + 1)
    harmonics = f0_hz * np.arange(1, max(1, math.floor(bins_hz[-1] / f0_hz)) + 1)
    comb = np.array([np.interp(harmonics, bins_hz, row).sum() for row in filters])
    return np.log(COMB_FLOOR + comb)


def band_pitch_features(contract: SpectralContract, f0_hz: float, loudness: float,
                        prior_distance: float = 0.0) -> np.ndarray:
    """[rows, PITCH_FEATURES] float32: each row's place relative to a note of f0 `f0_hz` at
    level `loudness` (dBFS, `loudness_db`), whose prior came from a training note
    `prior_distance` semitones away (`SpectrumPrior.spectrum`).

    0: log(COMB_FLOOR + the harmonics' sum through the row's filter, each filter scaled to
       peak 1), / 3;
    1..8: exp(-(log2(row centre / f0) - c)^2 / (2 w^2)) for octave centres c = -1..6;
    9: log2(f0 / 440 Hz), the pitch height;
    10: (loudness - LOUDNESS_REFERENCE_DB) / LOUDNESS_SCALE_DB;
    11: prior_distance / PRIOR_DISTANCE_SCALE.
    """
    comb = log_comb(contract, f0_hz)
    octaves = np.log2(np.maximum(row_frequencies_hz(contract), 1.0) / f0_hz)
    rbf = np.exp(-((octaves[:, None] - OCTAVE_CENTRES) ** 2) / (2 * OCTAVE_WIDTH**2))
    height = np.full((len(comb), 1), math.log2(f0_hz / 440.0))
    level = np.full((len(comb), 1), (loudness - LOUDNESS_REFERENCE_DB) / LOUDNESS_SCALE_DB)
    distance = np.full((len(comb), 1), prior_distance / PRIOR_DISTANCE_SCALE)
    return np.concatenate([comb[:, None] / 3, rbf, height, level, distance],
                          axis=1).astype(np.float32)


def instrument_vector(spec: InstrumentSpec, instruments: Sequence[str]) -> np.ndarray:
    """[I] weights of an instrument ("violin") or blend ({"violin": 0.7, "flute": 0.3},
    normalised to sum 1) over the model's `instruments`."""
    weights = {spec: 1.0} if isinstance(spec, str) else dict(spec)
    unknown = sorted(set(weights) - set(instruments))
    if unknown:
        raise ConfigError(f"instrument {unknown[0]!r} is not one this model was trained on "
                          f"({', '.join(instruments)})")
    total = sum(weights.values())
    if not weights or any(w < 0 for w in weights.values()) or total <= 0:
        raise ConfigError(f"instrument weights {weights} must be non-negative with a positive "
                          "sum")
    vector = np.zeros(len(instruments), np.float32)
    for name, weight in weights.items():
        vector[list(instruments).index(name)] = weight / total
    return vector


def instrument_weights(spec: InstrumentSpec, instruments: Sequence[str], note_frames: int,
                       grid_frames: int, glide_to: InstrumentSpec | None = None) -> np.ndarray:
    """[grid_frames, I]: `spec` on every frame, or gliding linearly from `spec` at the onset to
    `glide_to` at the note's last frame."""
    start = instrument_vector(spec, instruments)
    out = np.zeros((grid_frames, len(instruments)), np.float32)
    if glide_to is None:
        out[:note_frames] = start
        return out
    end = instrument_vector(glide_to, instruments)
    mix = np.linspace(0.0, 1.0, note_frames, dtype=np.float32)[:, None]
    out[:note_frames] = (1 - mix) * start + mix * end
    return out


def note_condition(contract: SpectralContract, instruments: Sequence[str],
                   notes: Sequence[NoteSpec], grid_frames: int, prior: Prior,
                   exclude: Sequence[int | None] | None = None) -> NoteCondition:
    """The condition of a batch of notes on a grid of `grid_frames` frames, their expected
    spectra drawn from `prior` (`exclude[b]`: leave training note k out of note b's; see
    `SpectrumPrior.spectrum`). The prior-distance feature is that of the note's starting
    instrument(s), weighted."""
    frame_seconds = contract.hop_length / contract.sample_rate
    for note in notes:
        if not 1 <= note.frames <= grid_frames or note.loudness_db is None:
            raise ValueError(f"{note}: a note needs a loudness and to fit the "
                             f"{grid_frames}-frame grid")
    exclude = [None] * len(notes) if exclude is None else list(exclude)
    spectra, pitch = [], []
    for note, left_out in zip(notes, exclude, strict=True):
        drawn = [prior.spectrum(name, note.midi, note.loudness_db, left_out)
                 for name in instruments]
        spectra.append(np.stack([s for s, _ in drawn]))
        distance = float(instrument_vector(note.instrument, instruments)
                         @ np.array([d for _, d in drawn]))
        pitch.append(band_pitch_features(contract, midi_to_hz(note.midi), note.loudness_db,
                                         distance))
    return NoteCondition(
        instrument=jnp.asarray(np.stack([instrument_weights(n.instrument, instruments,
                                                            n.frames, grid_frames, n.glide_to)
                                         for n in notes])),
        pitch=jnp.asarray(np.stack(pitch)),
        time=jnp.asarray(np.stack([note_time_features(n.frames, grid_frames, frame_seconds)
                                   for n in notes])),
        mask=jnp.asarray(np.stack([(np.arange(grid_frames) < n.frames).astype(np.float32)
                                   for n in notes])),
        prior=jnp.asarray(np.stack(spectra)))
